"""Deterministic DDIM noising shared by ISM, TSM and CSM (guidance_spec.md sections 6.1, 7.1, 5.2).

`ddim_move` is the eta = 0 DDIM update between any two timesteps (an inversion when the target is later):
z_j = alpha_j (z_i - sigma_i eps) / alpha_i + sigma_j eps. `invert` walks a render from (almost) clean up to
timestep s in steps of at most `stride`, with the teacher's unconditional prediction at each point.
"""

from __future__ import annotations

import torch


def ddim_move(prior, z: torch.Tensor, eps: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM step from timestep i to j (per sample) along the prediction eps."""
    a_i, s_i = prior.alpha_sigma(i)
    a_j, s_j = prior.alpha_sigma(j)
    return a_j * (z - s_i * eps) / a_i + s_j * eps


@torch.no_grad()
def invert(
    guidance,
    x: torch.Tensor,
    noise: torch.Tensor,
    target: torch.Tensor,
    empty: torch.Tensor,
    stride: int,
    max_steps: int,
) -> torch.Tensor:
    """DDIM inversion of renders x to timesteps `target` (B,) with the empty-prompt teacher (ISM steps 2-3
    start): from i0 = max(target - stride * max_steps, 0), z = alpha_i0 x + sigma_i0 noise, then steps of
    `stride` until `target`. Samples already at their target stay exactly where they are."""
    i = (target - stride * max_steps).clamp_min(0)
    z = guidance.prior.add_noise(x, noise, i)
    for _ in range(max_steps):
        active = i < target
        if not bool(active.any()):
            break
        (step_eps,) = guidance.teacher((z, i, empty))
        j = torch.minimum(i + stride, target)
        mask = active.view(-1, *[1] * (z.ndim - 1))
        z = torch.where(mask, ddim_move(guidance.prior, z, step_eps, i, j), z)
        i = torch.where(active, j, i)
    return z
