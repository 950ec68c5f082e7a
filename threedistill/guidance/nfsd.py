"""NFSD, Noise-Free Score Distillation, = HumanGaussian's Annealed Negative Prompt Guidance in epsilon space
(guidance_spec.md section 13.2).

Three predictions on one x_t: eps_y, eps_n (the negative prompt), eps_e (empty). G = w(t) (d_C + d_D) with the
condition term d_C = s (eps_y - eps_e) and the domain term d_D = eps_e for t < t_switch (small noise: the
prior's own denoising), else eps_e - eps_n (push away from the negative prompt). No "- eps" term: the random
noise never enters G. 3 teacher evaluations per view (2 without a negative prompt).

With guidance.perp_neg=true (the Gaussians' default) the condition term is Perp-Neg's view-aware one, as SDS's:
d_C = s (eps_y - eps_e + sum_i w_i perp(eps_neg_i - eps_e; eps_y - eps_e)), eps_y the view-interpolated prompt's
prediction, the other views' directions the negatives (guidance_spec section 1.4); 2 more teacher evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..cameras import Cameras
from ..config import schedule_field, scheduled
from .base import Guidance, GuidanceConfig, PromptState


@dataclass
class NFSDConfig(GuidanceConfig):
    t_switch: int = 200  # below this timestep the domain term is eps_empty, above it eps_empty - eps_negative
    # HumanGaussian's annealing (section 13.1): t in [0.02, 0.98] until step 1500 of 3600, then [0.02, 0.55];
    # scaled to the default 300 steps, the window shrinks at step 125
    max_step_percent: Any = schedule_field(125, 0.98, 0.55, 126)


class NFSDGuidance(Guidance):
    config_class = NFSDConfig
    name = "nfsd"

    @property
    def teacher_evals(self) -> int:
        return self.classifier_evals

    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        x_t = self.prior.add_noise(x.detach(), noise, t)
        eps_y, eps_n, eps_e, perp = self.classifier_terms(x_t, t, cameras, prompt)
        d_c = scheduled(self.cfg.guidance_scale, step) * (eps_y - eps_e + perp)
        small = (t < self.cfg.t_switch).view(-1, *[1] * (x.ndim - 1))
        d_d = torch.where(small, eps_e, eps_e - eps_n)
        return self.weight(t) * (d_c + d_d)
