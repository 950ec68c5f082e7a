"""SDEdit targets: multi-step denoised renders as L2 targets (DreamGaussian's mesh refinement, after SDEdit).

Each render x is noised to t (x_t = alpha_t x + sigma_t eps), denoised back to a clean image x0 in `denoise_steps`
deterministic DDIM steps of the guided teacher (CFG, or Perp-Neg when configured), and pulled toward it:
G = w(t) (x - x0), the gradient of 0.5 w ||x - sg(x0)||^2. Where SDS compares one noisy prediction with the
noise, the target here is a whole sample of the prior that keeps the render's layout (t below the point where
the prior invents a new object), so the gradient is low in variance: suited to a refinement stage. The staged
configs refine the mesh's texture with it, vertices frozen; moving vertices too, the toy prior's crisper targets
shrink the shapes (docs/benchmarks/stages.md). Cost: `denoise_steps` guided evaluations (2
each, 4 with Perp-Neg) per view and step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..cameras import Cameras
from ..errors import ConfigError
from .base import Guidance, GuidanceConfig, PromptState
from .inversion import ddim_move


@dataclass
class SDEditConfig(GuidanceConfig):
    weighting: str = "uniform"  # w(t) = 1: an L2 loss to the denoised image, as in DreamGaussian
    # low noise, as DreamGaussian's refinement (t 0.2 -> 0.05): the target keeps the render's shape, fixes its colours
    min_step_percent: Any = 0.05
    max_step_percent: Any = 0.3
    denoise_steps: int = 5  # DDIM steps from t back to a clean image

    def __post_init__(self):
        super().__post_init__()
        if self.denoise_steps < 1:
            raise ConfigError(f"guidance.denoise_steps must be >= 1, got {self.denoise_steps}")


class SDEditGuidance(Guidance):
    config_class = SDEditConfig
    name = "sdedit"

    @property
    def teacher_evals(self) -> int:
        return self.cfg.denoise_steps * self.guided_evals

    @torch.no_grad()
    def denoise(
        self, x_t: torch.Tensor, t: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int
    ) -> torch.Tensor:
        """The clean image reached from x_t at timesteps t (B,) by `denoise_steps` equal DDIM steps to 0; the
        last step is the teacher's clean estimate."""
        n = self.cfg.denoise_steps
        z = x_t
        for k in range(n):
            i, j = t * (n - k) // n, t * (n - k - 1) // n
            eps = self.guided_eps(z, i, cameras, prompt, step)
            z = self.prior.predict_x0(z, eps, i) if k == n - 1 else ddim_move(self.prior, z, eps, i, j)
        return z

    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """G = w(t) (x - x0), x0 the guided multi-step denoising of the noised render."""
        x = x.detach()
        return self.weight(t) * (x - self.denoise(self.prior.add_noise(x, noise, t), t, cameras, prompt, step))
