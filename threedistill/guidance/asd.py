"""ASD, Asynchronous Score Distillation (ScaleDreamer; guidance_spec.md section 4).

SDS's noise target is replaced by the teacher's own conditional prediction at a slightly later timestep t+,
noised with the same eps:  G = w(t) [eps_cfg(x_t; t, y) - eps(x_{t+}; t+, y)],
t+ = clamp(t + floor(u * min(r (t - t_min), T - 1 - t)), 1, T - 1), u ~ U(0,1) when `plus_random`, r the
`plus_ratio`. With r = 0 it is the pure classifier score w (s - 1)(eps_y - eps_u). 3 teacher evaluations per
view (5 with Perp-Neg); no auxiliary network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..cameras import Cameras
from ..config import schedule_field
from ..errors import ConfigError
from .base import Guidance, GuidanceConfig, PromptState


@dataclass
class ASDConfig(GuidanceConfig):
    # The window slides over the whole run (300 steps): t_min 0.5 -> 0.02, t_max 0.98 -> 0.5.
    min_step_percent: Any = schedule_field(0, 0.5, 0.02, 300)
    max_step_percent: Any = schedule_field(0, 0.98, 0.5, 300)
    plus_ratio: float = 0.1  # r: t+ - t = r (t - t_min), capped at T - 1 - t
    plus_random: bool = True  # scale the shift by u ~ U(0, 1)

    def __post_init__(self):
        super().__post_init__()
        if self.plus_ratio < 0:
            raise ConfigError(f"guidance.plus_ratio must be >= 0, got {self.plus_ratio}")


class ASDGuidance(Guidance):
    config_class = ASDConfig
    name = "asd"

    @property
    def teacher_evals(self) -> int:
        return self.guided_evals + 1

    def shifted_timesteps(self, t: torch.Tensor, step: int, u: Optional[torch.Tensor] = None) -> torch.Tensor:
        """t+ for timesteps t: the window's lower end sets the shift (spec 4.2); `u` scales it when given."""
        last = self.prior.num_train_timesteps - 1
        t_min = self.timestep_window(step)[0]
        delta = torch.minimum(self.cfg.plus_ratio * (t - t_min).clamp_min(0).float(), (last - t).float())
        if u is not None:
            delta = delta * u.to(delta.device)
        return (t + delta.floor().long()).clamp(1, last)

    def gradient(
        self,
        x: torch.Tensor,
        cameras: Cameras,
        prompt: PromptState,
        step: int,
        t: torch.Tensor,
        noise: torch.Tensor,
        u: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        t_plus = self.shifted_timesteps(t, step, u)
        x = x.detach()
        x_t, x_plus = self.prior.add_noise(x, noise, t), self.prior.add_noise(x, noise, t_plus)
        eps_cfg = self.guided_eps(x_t, t, cameras, prompt, step)
        (eps_plus,) = self.teacher((x_plus, t_plus, prompt.conditional(cameras)))
        return self.weight(t) * (eps_cfg - eps_plus)

    def sample_extras(self, batch: int, step: int, generator: torch.Generator | None) -> dict:
        return {"u": torch.rand(batch, generator=generator)} if self.cfg.plus_random else {}
