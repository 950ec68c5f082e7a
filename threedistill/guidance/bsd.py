"""BSD, Balanced Score Distillation (PlacidDreamer; guidance_spec.md section 8).

Two objectives, a classifier term g_c and a smoothing term g_d, combined by their min-norm convex combination
(two-task MGDA): a* = clip(<g_d - g_c, g_d> / ||g_d - g_c||^2, 0, 1) per sample, g = a* g_c + (1 - a*) g_d.
Variant `default`: g_c = ratio (eps_y - eps_u), g_d = eps_u, G = alpha_t g (the reference code hard-codes
ratio 15; its README says 18). Variant `auto`: g_c = eps_y - eps_u, g_d = 1.25 (eps_u - eps),
G = (||eps_u - eps|| sigma_t / 50) g with the norm over the whole batch. eps_u is the negative-prompt slot.
One t per step for every view (as ISM). 2 teacher evaluations per view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..cameras import Cameras
from ..config import schedule_field
from ..errors import ConfigError
from .base import Guidance, GuidanceConfig, PromptState

VARIANTS = ("default", "auto")


@dataclass
class BSDConfig(GuidanceConfig):
    unused_fields: ClassVar[dict[str, str]] = {
        "guidance_scale": "BSD balances its two terms itself; guidance.ratio weights the classifier term",
        "weighting": "BSD's variant sets its weighting (default: alpha_t; auto: the noise residual's norm)",
    }
    max_step_percent: Any = schedule_field(0, 0.98, 0.5, 90)  # ISM's window (section 6.2), scaled to 300 steps
    variant: str = "default"
    ratio: float = 15.0  # classifier : smoothing ratio of the default variant

    def __post_init__(self):
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ConfigError(f"guidance.variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")


def min_norm_weight(g_c: torch.Tensor, g_d: torch.Tensor) -> torch.Tensor:
    """Per sample, the a in [0, 1] minimising ||a g_c + (1 - a) g_d|| (guarded against g_c = g_d), shaped (B,1,...)."""
    diff = (g_d - g_c).flatten(1)
    a = (diff * g_d.flatten(1)).sum(1) / diff.pow(2).sum(1).clamp_min(1e-20)
    return a.clamp(0.0, 1.0).view(-1, *[1] * (g_c.ndim - 1))


class BSDGuidance(Guidance):
    config_class = BSDConfig
    name = "bsd"
    perp_neg_path = False
    shared_timestep = True

    @property
    def teacher_evals(self) -> int:
        return 2  # no Perp-Neg path

    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        x_t = self.prior.add_noise(x.detach(), noise, t)
        eps_y, eps_u = self.teacher((x_t, t, prompt.conditional(cameras)), (x_t, t, prompt.unconditional(x.shape[0])))
        alpha, sigma = self.prior.alpha_sigma(t)
        if self.cfg.variant == "default":
            g_c, g_d = self.cfg.ratio * (eps_y - eps_u), eps_u
            scale = alpha
        else:
            g_c, g_d = eps_y - eps_u, 1.25 * (eps_u - noise)
            scale = (eps_u - noise).norm() * sigma / 50.0
        a = min_norm_weight(g_c, g_d)
        return scale * (a * g_c + (1 - a) * g_d)
