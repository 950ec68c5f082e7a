"""CSM, Classifier Score Matching (TV-3DG; guidance_spec.md section 5.2).

The paper has no public code; this is the spec's stated reading, marked uncertain there: keep only the
classifier term of SDS, on a deterministically noised input, G = w(t) s (eps(x~_t; y) - eps(x~_t; empty)),
where x~_t is the DDIM inversion of the render to t with the empty-prompt teacher (ISM's path, steps of
delta_S, at most n_S). `inversion=noise` uses ordinary forward noising instead, which is pure CSD times s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cameras import Cameras
from ..config import scheduled
from .base import Guidance, PromptState
from .inversion import invert
from .ism import InversionConfig


@dataclass
class CSMConfig(InversionConfig):
    """The inversion settings of ISM (delta_s, n_s, inversion)."""


class CSMGuidance(Guidance):
    config_class = CSMConfig
    name = "csm"
    perp_neg_path = False

    @property
    def teacher_evals(self) -> int:
        return 2 + (self.cfg.n_s if self.cfg.inversion == "ddim" else 0)

    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        x = x.detach()
        empty = prompt.empty(x.shape[0])
        if self.cfg.inversion == "noise":
            x_t = self.prior.add_noise(x, noise, t)
        else:
            x_t = invert(self, x, noise, t, empty, self.cfg.delta_s, self.cfg.n_s)
        eps_y, eps_e = self.teacher((x_t, t, prompt.conditional(cameras)), (x_t, t, empty))
        return self.weight(t) * scheduled(self.cfg.guidance_scale, step) * (eps_y - eps_e)
