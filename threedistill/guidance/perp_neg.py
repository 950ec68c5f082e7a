"""Perp-Neg (Armandpour et al. 2023; guidance_spec.md section 1.4): view-aware classifier-free guidance.

The positive embedding interpolates the view prompts by azimuth (front <-> side <-> back); the other views
act as negatives, and only the part of each negative direction perpendicular to the positive one is pushed
away from:  eps = eps_u + s [ (eps_pos - eps_u) + sum_i w_i perp(eps_neg_i - eps_u ; eps_pos - eps_u) ],
with negative weights w_i from shifted exponential decays of the interpolation ratio (threestudio's
defaults). It makes side views look like sides instead of the average view SDS otherwise converges to.
4 teacher evaluations per view instead of 2.
"""

from __future__ import annotations

import math

import torch

from ..cameras import Cameras
from ..prompting import OVERHEAD_ELEVATION

# (a, b, c) of a exp(-b r) + c for: front<->side negatives, side<->back negatives (threestudio defaults).
F_SIDE_BACK = (1.0, 0.5, -0.606)
F_FRONT_SIDE_BACK = (1.0, 0.5, 0.967)
F_FRONT_SIDE = (4.0, 0.5, -2.426)
F_SIDE_FRONT = (4.0, 0.5, -2.426)


def _decay(abc: tuple[float, float, float], r: float) -> float:
    a, b, c = abc
    return a * math.exp(-b * r) + c


def perp_neg_embeddings(prior, prompt: str, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per camera: the positive embedding (B,...), the two negative embeddings (B,2,...) and their weights (B,2).
    Overhead views (elevation above the DreamFusion threshold) use the overhead prompt with no negatives."""
    front, side, back, overhead = prior.encode_prompt(
        [f"{prompt}, {v} view" for v in ("front", "side", "back", "overhead")]
    )
    pos, negs, weights = [], [], []
    for az, el in zip(cameras.azimuth.tolist(), cameras.elevation.tolist()):
        az = (az + 180.0) % 360.0 - 180.0
        if el > OVERHEAD_ELEVATION:
            pos.append(overhead)
            negs.append(torch.stack([front, side]))
            weights.append([0.0, 0.0])
        elif abs(az) < 90.0:
            r = 1.0 - abs(az) / 90.0  # 1 at the front, 0 at the side
            pos.append(r * front + (1 - r) * side)
            negs.append(torch.stack([front, side]))
            weights.append([-_decay(F_FRONT_SIDE, r), -_decay(F_SIDE_FRONT, 1 - r)])
        else:
            r = 1.0 - (abs(az) - 90.0) / 90.0  # 1 at the side, 0 at the back
            pos.append(r * side + (1 - r) * back)
            negs.append(torch.stack([side, front]))
            weights.append([-_decay(F_SIDE_BACK, r), -_decay(F_FRONT_SIDE_BACK, r)])
    return torch.stack(pos), torch.stack(negs), torch.tensor(weights, dtype=torch.float32)


def perpendicular(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The component of a orthogonal to b, per sample (leading dimension)."""
    dot = (a * b).flatten(1).sum(1)
    norm2 = b.pow(2).flatten(1).sum(1).clamp_min(1e-12)
    return a - (dot / norm2).view(-1, *[1] * (a.ndim - 1)) * b


@torch.no_grad()
def perp_neg_terms(
    prior,
    x_t: torch.Tensor,
    t: torch.Tensor,
    pos: torch.Tensor,
    negs: torch.Tensor,
    weights: torch.Tensor,
    uncond: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(eps_pos, eps_u, sum_i w_i perp(eps_neg_i - eps_u; eps_pos - eps_u)) for noisy inputs x_t (B,...), from
    one batched teacher call over 4B inputs."""
    b = x_t.shape[0]
    emb = torch.cat([pos, negs[:, 0], negs[:, 1], uncond])
    eps = prior.predict_noise(x_t.repeat(4, *[1] * (x_t.ndim - 1)), t.repeat(4), emb)
    e_pos, e_n1, e_n2, e_u = eps.split(b)
    d_pos = e_pos - e_u
    w = weights.to(x_t.device, x_t.dtype).view(b, 2, *[1] * (x_t.ndim - 1))
    accum = w[:, 0] * perpendicular(e_n1 - e_u, d_pos) + w[:, 1] * perpendicular(e_n2 - e_u, d_pos)
    return e_pos, e_u, accum


def perp_neg_eps(
    prior,
    x_t: torch.Tensor,
    t: torch.Tensor,
    pos: torch.Tensor,
    negs: torch.Tensor,
    weights: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """Perp-Neg guided epsilon eps_u + s [(eps_pos - eps_u) + perpendicular negatives]."""
    e_pos, e_u, accum = perp_neg_terms(prior, x_t, t, pos, negs, weights, uncond)
    return e_u + guidance_scale * (e_pos - e_u + accum)
