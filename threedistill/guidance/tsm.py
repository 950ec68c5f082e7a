"""TSM, Trajectory Score Matching (Dreamer XL; guidance_spec.md section 7).

As ISM up to x_s; the target comes from a point mu = round(s + (t - s) sqrt(1 - gamma^2)) on the same
trajectory: x_mu = one DDIM inversion step s -> mu, target eps_mu = eps(x_mu; mu, empty). gamma = 1 gives
mu = s, i.e. ISM exactly; gamma = 0 puts the target at t itself. Pair it with Dreamer XL's pixel-wise
gradient clipping (guidance.pixel_grad_clip=0.05). Up to n_S + 1 + 1 + 2 teacher evaluations per view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..cameras import Cameras
from ..errors import ConfigError
from .base import PromptState
from .inversion import ddim_move
from .ism import ISMConfig, ISMGuidance


@dataclass
class TSMConfig(ISMConfig):
    gamma: float = 0.3  # larger gamma moves the target point mu toward s (gamma = 1: ISM)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"guidance.gamma must be in [0, 1], got {self.gamma}")


class TSMGuidance(ISMGuidance):
    config_class = TSMConfig
    name = "tsm"

    @property
    def teacher_evals(self) -> int:
        return self.cfg.n_s + 2 + self.guided_evals

    def target_timesteps(self, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """mu = round(s + (t - s) sqrt(1 - gamma^2))."""
        return torch.round(s + (t - s).double() * math.sqrt(1.0 - self.cfg.gamma**2)).long()

    def targets(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.inversion == "noise":
            return super().targets(x, cameras, prompt, step, t, noise)
        s = self.interval_start(t, step)
        x_s, eps_s, x_t = self.trajectory(x, prompt, t, s, noise)
        mu = self.target_timesteps(t, s)
        if bool((mu == s).all()):  # gamma = 1: the target is eps_s itself (ISM), no extra evaluation
            return x_t, eps_s
        x_mu = ddim_move(self.prior, x_s, eps_s, s, mu)
        (eps_mu,) = self.teacher((x_mu, mu, prompt.empty(x.shape[0])))
        return x_t, torch.where((mu == s).view(-1, *[1] * (x.ndim - 1)), eps_s, eps_mu)
