"""SDS, Score Distillation Sampling (DreamFusion; guidance_spec.md section 1).

G = w(t) (eps_cfg(x_t; y) - eps), x_t = alpha_t x + sigma_t eps with fresh t and eps every call; G is
injected into x (dL/dx = G/B). Cost: 2 teacher evaluations per view (cond + uncond, batched).
"""
from __future__ import annotations

import torch

from ..cameras import Cameras
from ..config import scheduled
from .base import Guidance, PromptState, inject_gradient


def sds_gradient(prior, x_t: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                 uncond: torch.Tensor, guidance_scale: float, weight: torch.Tensor) -> torch.Tensor:
    """G_SDS = w(t) (eps_cfg(x_t) - eps) for noisy inputs x_t built with `noise` (no gradient)."""
    with torch.no_grad():
        eps, _, _ = prior.predict_noise_cfg(x_t, t, cond, uncond, guidance_scale)
        return weight * (eps - noise)


class SDSGuidance(Guidance):
    def forward(self, rgb: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = self.prior.to_diffusion_space(rgb)
        b = x.shape[0]
        t = self.sample_timesteps(b, step, generator)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x_t = self.prior.add_noise(x.detach(), noise, t)
        grad = sds_gradient(self.prior, x_t, noise, t, prompt.conditional(cameras), prompt.unconditional(b),
                            scheduled(self.cfg.guidance_scale, step), self.weight(t))
        grad = self.finish_gradient(grad, step)
        return {"loss_sds": inject_gradient(x, grad), "grad_norm": grad.flatten(1).norm(dim=1).mean(),
                "timestep": t.float().mean()}
