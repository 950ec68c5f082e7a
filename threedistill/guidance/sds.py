"""SDS, Score Distillation Sampling (DreamFusion; guidance_spec.md section 1).

G = w(t) (eps_cfg(x_t; y) - eps), x_t = alpha_t x + sigma_t eps with fresh t and eps every call; G is
injected into x (dL/dx = G/B). Cost: 2 teacher evaluations per view (cond + uncond, batched), 4 with
Perp-Neg (guidance.perp_neg=true).

With a multi-view prior, MVDream's form (guidance_spec 10.3) is `weighting=sigma_over_alpha cfg_rescale=0.5`:
G = w(t) (eps_cfg - eps) with w = sigma/alpha is exactly x - x0_hat (the x0-reconstruction loss
1/2 ||x - sg(x0_hat)||^2), and `cfg_rescale` r blends the guided estimate toward the conditional one's spread,
x0_hat <- r x0_hat std(x0_cond) / std(x0_hat) + (1 - r) x0_hat, the stds taken over each set of views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cameras import Cameras
from ..config import scheduled
from ..errors import ConfigError
from .base import Guidance, GuidanceConfig, PromptState


@dataclass
class SDSConfig(GuidanceConfig):
    # MVDream's CFG rescale (0 = off, their 0.5): the guided x0 estimate's spread pulled toward the conditional
    # one's, per set of views (a multi-view prior's set; each view alone with a 2D prior)
    cfg_rescale: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.cfg_rescale <= 1.0:
            raise ConfigError(f"guidance.cfg_rescale must be in [0, 1] (0 = off), got {self.cfg_rescale}")
        if self.cfg_rescale and self.perp_neg:
            raise ConfigError("guidance.cfg_rescale works on plain CFG; set guidance.perp_neg=false to use it")


def rescale_x0(x0: torch.Tensor, x0_cond: torch.Tensor, rescale: float, views: int) -> torch.Tensor:
    """MVDream's CFG rescale of a guided x0 estimate (B,C,H,W), stds over each group of `views` images."""
    group = lambda t: t.reshape(t.shape[0] // views, -1)  # noqa: E731
    ratio = group(x0_cond).std(dim=1) / group(x0).std(dim=1).clamp_min(1e-8)
    ratio = ratio.repeat_interleave(views).view(-1, 1, 1, 1)
    return rescale * x0 * ratio + (1 - rescale) * x0


class SDSGuidance(Guidance):
    name = "sds"
    config_class = SDSConfig

    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """G_SDS = w(t) (eps_guided(x_t) - eps) at renders x in diffusion space, for given t and noise."""
        x_t = self.prior.add_noise(x.detach(), noise, t)
        rescale = getattr(self.cfg, "cfg_rescale", 0.0)  # a plain GuidanceConfig (the Python API) has none
        if not rescale:
            return self.weight(t) * (self.guided_eps(x_t, t, cameras, prompt, step) - noise)
        scale = scheduled(self.cfg.guidance_scale, step)
        eps, eps_c, _ = self.prior.predict_noise_cfg(
            x_t, t, prompt.conditional(cameras), prompt.unconditional(x_t.shape[0]), scale
        )
        x0 = rescale_x0(
            self.prior.predict_x0(x_t, eps, t),
            self.prior.predict_x0(x_t, eps_c, t),
            self.cfg.cfg_rescale,
            self.views_per_set,
        )
        alpha, sigma = self.prior.alpha_sigma(t)
        return self.weight(t) * ((x_t - alpha * x0) / sigma - noise)
