"""CSD, Classifier Score Distillation (guidance_spec.md section 5.1).

All predictions on one x_t: G = w(t) [a_y eps(y) + a_n eps(y-) + a_u eps(empty) + a_e eps (+ a_pn PerpNeg)],
y- the negative prompt. Pure CSD is (1, 0, -1, 0): the implicit classifier score eps_y - eps_empty with no
denoising term; (s, 1 - s, 0, -1) is SDS. Defaults follow the official DeepFloyd-IF (pixel prior) NeRF stage
scaled to 300 steps: a_n 0 -> -1 and a_u -1 -> 0 over the first half, w = 1, G normalised to unit L2 norm
over the whole batch. 2 teacher evaluations (3 with a negative prompt; +2 with Perp-Neg).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..cameras import Cameras
from ..config import check_schedules, schedule_field, scheduled
from .base import Guidance, GuidanceConfig, PromptState

COEFFICIENTS = ("coef_cond", "coef_negative", "coef_uncond", "coef_noise")


@dataclass
class CSDConfig(GuidanceConfig):
    unused_fields: ClassVar[dict[str, str]] = {
        "guidance_scale": "CSD's coefficients set the guidance: coef_cond (a_y), coef_uncond (a_u), coef_negative"
    }
    weighting: str = "uniform"
    max_step_percent: Any = schedule_field(150, 0.98, 0.5, 151)  # a step change half-way
    coef_cond: Any = 1.0  # a_y (numbers or schedules [k0, v0, v1, k1])
    coef_negative: Any = schedule_field(0, 0.0, -1.0, 150)  # a_n, on the negative prompt's prediction
    coef_uncond: Any = schedule_field(0, -1.0, 0.0, 150)  # a_u, on the empty prompt's prediction
    coef_noise: Any = 0.0  # a_e, on the injected noise (-1 with (s, 1 - s, 0) gives SDS)
    coef_perp_neg: float = 3.0  # a_pn, weight of Perp-Neg's perpendicular negatives (guidance.perp_neg=true)
    grad_normalize: bool = True  # G / ||G|| over the whole batch (the official IF guidance)

    def __post_init__(self):
        super().__post_init__()
        check_schedules(self, "guidance", COEFFICIENTS)


class CSDGuidance(Guidance):
    config_class = CSDConfig
    name = "csd"

    @property
    def teacher_evals(self) -> int:
        return self.classifier_evals

    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        x_t = self.prior.add_noise(x.detach(), noise, t)
        eps_y, eps_n, eps_e, perp = self.classifier_terms(x_t, t, cameras, prompt)
        a_y, a_n, a_u, a_e = (scheduled(getattr(self.cfg, name), step) for name in COEFFICIENTS)
        grad = a_y * eps_y + a_n * eps_n + a_u * eps_e + a_e * noise + self.cfg.coef_perp_neg * perp
        grad = self.weight(t) * grad
        if self.cfg.grad_normalize:
            grad = grad / grad.norm().clamp_min(1e-12)
        return grad
