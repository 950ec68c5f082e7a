"""ISM, Interval Score Matching (LucidDreamer; guidance_spec.md section 6).

From the render x, DDIM-invert with the empty prompt to s = t - delta_T (steps of delta_S, at most n_S), take
eps_s = eps(x_s; s, empty) and one more inversion step to x_t; then G = w(t) (eps_cfg(x_t; t, y) - eps_s), w =
sigma_t / alpha_t. The target is the teacher's own prediction on the same deterministic trajectory instead of
the random noise, which removes SDS's noise variance. One t per step for every view; the start noise has a
per-channel offset (0.1 N(0,1) per channel, shared by the views) as in the reference code. Up to n_S + 1 + 2
teacher evaluations per view. `inversion=noise` replaces the deterministic path by forward noising (an
ablation: it reduces ISM to SDS with w = sigma/alpha).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..cameras import Cameras
from ..config import check_schedules, schedule_field, scheduled
from ..errors import ConfigError
from .base import Guidance, GuidanceConfig, PromptState
from .inversion import ddim_move, invert

INVERSIONS = ("ddim", "noise")


@dataclass
class InversionConfig(GuidanceConfig):
    """Settings of the deterministic DDIM noising shared by ISM, TSM and CSM."""

    delta_s: int = 200  # stride of the inversion from 0 to its target timestep
    n_s: int = 5  # at most this many inversion steps
    inversion: str = "ddim"  # ddim (the method) or noise (ablation: forward noising, target = the noise)

    def __post_init__(self):
        super().__post_init__()
        if self.inversion not in INVERSIONS:
            raise ConfigError(f"guidance.inversion must be one of {', '.join(INVERSIONS)}, got {self.inversion!r}")
        if self.delta_s < 1 or self.n_s < 1:
            raise ConfigError(f"guidance.delta_s and guidance.n_s must be >= 1, got {self.delta_s}, {self.n_s}")


@dataclass
class ISMConfig(InversionConfig):
    weighting: str = "sigma_over_alpha"
    # The reference's warm-up (1500 of 5000 steps) scaled to 300 steps: t_max 0.98 -> 0.5 and delta_T 100 -> 80.
    max_step_percent: Any = schedule_field(0, 0.98, 0.5, 90)
    delta_t: Any = schedule_field(0, 100, 80, 90)  # interval t - s: number or schedule
    offset_noise: float = 0.1  # per-channel offset added to the start noise (reference code)

    def __post_init__(self):
        super().__post_init__()
        check_schedules(self, "guidance", ("delta_t",))


class ISMGuidance(Guidance):
    config_class = ISMConfig
    name = "ism"
    shared_timestep = True

    @property
    def teacher_evals(self) -> int:
        return self.cfg.n_s + 1 + self.guided_evals

    def sample_noise(self, x: torch.Tensor, step: int, generator: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        offset = torch.randn((1, x.shape[1]) + (1,) * (x.ndim - 2), generator=generator, dtype=x.dtype)
        return (noise + self.cfg.offset_noise * offset).to(x.device)

    def interval_start(self, t: torch.Tensor, step: int) -> torch.Tensor:
        """s = max(t - delta_T, 0) at this step."""
        return (t - int(scheduled(self.cfg.delta_t, step))).clamp_min(0)

    @torch.no_grad()
    def trajectory(
        self, x: torch.Tensor, prompt: PromptState, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_s, eps_s, x_t): the deterministic path of the render to s, the empty-prompt prediction there,
        and one inversion step on to t."""
        empty = prompt.empty(x.shape[0])
        x_s = invert(self, x, noise, s, empty, self.cfg.delta_s, self.cfg.n_s)
        (eps_s,) = self.teacher((x_s, s, empty))
        return x_s, eps_s, ddim_move(self.prior, x_s, eps_s, s, t)

    def targets(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, target eps) for the teacher comparison."""
        if self.cfg.inversion == "noise":
            return self.prior.add_noise(x, noise, t), noise
        _, eps_s, x_t = self.trajectory(x, prompt, t, self.interval_start(t, step), noise)
        return x_t, eps_s

    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        x_t, target = self.targets(x.detach(), cameras, prompt, step, t, noise)
        return self.weight(t) * (self.guided_eps(x_t, t, cameras, prompt, step) - target)
