"""SDS, Score Distillation Sampling (DreamFusion; guidance_spec.md section 1).

G = w(t) (eps_cfg(x_t; y) - eps), x_t = alpha_t x + sigma_t eps with fresh t and eps every call; G is
injected into x (dL/dx = G/B). Cost: 2 teacher evaluations per view (cond + uncond, batched), 4 with
Perp-Neg (guidance.perp_neg=true).
"""

from __future__ import annotations

import torch

from ..cameras import Cameras
from .base import Guidance, PromptState


class SDSGuidance(Guidance):
    name = "sds"

    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """G_SDS = w(t) (eps_guided(x_t) - eps) at renders x in diffusion space, for given t and noise."""
        x_t = self.prior.add_noise(x.detach(), noise, t)
        return self.weight(t) * (self.guided_eps(x_t, t, cameras, prompt, step) - noise)
