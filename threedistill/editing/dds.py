"""DDS, Delta Denoising Score, in 3D (ED-NeRF's loss; guidance_spec.md section 12.1).

The edited render x_tgt and the unedited scene's render x_src of the same camera are noised with ONE t and ONE
eps; G = w(t) [eps_cfg(x_tgt_t; y_tgt) - eps_cfg(x_src_t; y_src)], applied to x_tgt only. The noise bias that
SDS shares between both branches cancels, leaving the text-driven delta. 4 teacher evaluations per view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..cameras import Cameras
from ..errors import ConfigError
from ..guidance.base import Guidance, GuidanceConfig, PromptState


@dataclass
class DDSConfig(GuidanceConfig):
    source_prompt: str = ""  # y_src: what the unedited scene shows
    weighting: str = "uniform"  # w(t) = 1 in the reference
    min_step_percent: Any = 0.05  # t ~ U{50, ..., 948}
    max_step_percent: Any = 0.948
    view_dependent_prompting: bool = False  # edit cameras orbit the edit region, whose front is unknown


class DDSGuidance(Guidance):
    config_class = DDSConfig
    name = "dds"
    targets = ("source",)  # the unedited render of each camera

    @property
    def teacher_evals(self) -> int:
        return 2 * self.guided_evals

    def prompt_state(self, prompt: str) -> PromptState:
        if not self.cfg.source_prompt.strip():
            raise ConfigError(
                "DDS needs the source prompt (what the scene shows now), e.g. --source-prompt 'a red cube'"
            )
        self.source = PromptState(
            self.prior, self.cfg.source_prompt, self.cfg.negative_prompt, self.cfg.view_dependent_prompting
        )
        return super().prompt_state(prompt)

    def gradient(
        self,
        x: torch.Tensor,
        cameras: Cameras,
        prompt: PromptState,
        step: int,
        t: torch.Tensor,
        noise: torch.Tensor,
        source: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if source is None:
            raise ConfigError("DDS needs the unedited render of each camera (views with a `source` target)")
        x_src = self.prior.to_diffusion_space(source.detach())
        eps_tgt = self.guided_eps(self.prior.add_noise(x.detach(), noise, t), t, cameras, prompt, step)
        eps_src = self.guided_eps(self.prior.add_noise(x_src, noise, t), t, cameras, self.source, step)
        return self.weight(t) * (eps_tgt - eps_src)
