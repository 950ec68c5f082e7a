"""Shared machinery of score-distillation guidance (guidance_spec.md section 0): prompt state with
view-dependent prompts, timestep windows and annealing, w(t), gradient injection, and the Guidance base.

CFG convention everywhere: diffusers', eps_u + s (eps_c - eps_u); s = 1 is conditional only. threestudio's
"guidance_scale 100" is s = 101 here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..cameras import Cameras
from ..config import check_schedules, scheduled
from ..errors import ConfigError
from ..priors.base import Prior
from ..toyworld.prompts import view_prompts

WEIGHTINGS = ("sds", "uniform", "fantasia3d")


@dataclass
class GuidanceConfig:
    guidance_scale: Any = 7.5  # diffusers CFG convention (1 = conditional only); number or schedule [k0, v0, v1, k1]
    min_step_percent: Any = 0.02  # number or schedule [k0, v0, v1, k1]
    max_step_percent: Any = 0.98
    weighting: str = "sds"  # w(t): sds = sigma_t^2, uniform = 1, fantasia3d = alpha_t sigma_t^2
    grad_clip: Any = None  # element-wise clamp of G (number or schedule), None = off
    view_dependent_prompting: bool = True
    negative_prompt: str = ""
    perp_neg: bool = False  # Perp-Neg view-aware CFG (4 teacher evals per view instead of 2), see perp_neg.py
    sqrt_anneal: bool = False  # HiFA: deterministic t from sqrt(step / trainer_max_steps)
    trainer_max_steps: int = 1000

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        check_schedules(self, "guidance", ("guidance_scale", "min_step_percent", "max_step_percent")
                        + (("grad_clip",) if self.grad_clip is not None else ()))


class PromptState:
    """A prompt prepared for a prior: conditional embeddings per camera (view suffixes when asked) and the
    unconditional / negative embedding. Embeddings come from the prior's cache, so this is cheap."""

    def __init__(self, prior: Prior, prompt: str, negative_prompt: str = "", view_dependent: bool = True):
        if not prompt.strip():
            raise ConfigError("the prompt is empty; give a text prompt such as 'a red duck'")
        self.prior, self.prompt, self.negative_prompt, self.view_dependent = prior, prompt, negative_prompt, view_dependent

    def texts(self, cameras: Cameras) -> list[str]:
        if self.view_dependent:
            return view_prompts(self.prompt, cameras.azimuth, cameras.elevation)
        return [self.prompt] * len(cameras)

    def conditional(self, cameras: Cameras) -> torch.Tensor:
        return self.prior.encode_prompt(self.texts(cameras))

    def unconditional(self, batch: int) -> torch.Tensor:
        return self.prior.encode_prompt([self.negative_prompt] * batch)


def inject_gradient(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """L = 1/(2B) sum_b ||x_b - sg(x_b - G_b)||^2, so dL/dx = G / B (guidance_spec 0.3, option 1)."""
    target = (x - grad).detach()
    return 0.5 * (x - target).pow(2).sum() / x.shape[0]


class Guidance(torch.nn.Module):
    """Base class: turns renders into a gradient through a frozen prior. Subclasses implement `forward`
    returning named losses ("loss_<name>") and scalar diagnostics."""

    config_class = GuidanceConfig

    def __init__(self, prior: Prior, cfg: Optional[GuidanceConfig] = None):
        super().__init__()
        self.prior = prior
        self.cfg = cfg or self.config_class()

    def prompt_state(self, prompt: str) -> PromptState:
        return PromptState(self.prior, prompt, self.cfg.negative_prompt, self.cfg.view_dependent_prompting)

    def timestep_window(self, step: int) -> tuple[int, int]:
        """Inclusive integer window [floor(T p_min), floor(T p_max)] at this step."""
        n = self.prior.num_train_timesteps
        lo = scheduled(self.cfg.min_step_percent, step)
        hi = scheduled(self.cfg.max_step_percent, step)
        if self.cfg.sqrt_anneal:
            q = math.sqrt(min(step, self.cfg.trainer_max_steps) / self.cfg.trainer_max_steps)
            lo = hi = lo + (hi - lo) * (1 - q)
        return int(n * lo), int(n * hi)

    def sample_timesteps(self, batch: int, step: int, generator: torch.Generator | None = None) -> torch.Tensor:
        lo, hi = self.timestep_window(step)
        return torch.randint(lo, hi + 1, (batch,), generator=generator)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.prior.alpha_sigma(t)
        if self.cfg.weighting == "sds":
            return sigma ** 2
        if self.cfg.weighting == "fantasia3d":
            return alpha * sigma ** 2
        return torch.ones_like(alpha)

    @torch.no_grad()
    def guided_eps(self, x_t: torch.Tensor, t: torch.Tensor, cameras: Cameras, prompt: PromptState,
                   step: int) -> torch.Tensor:
        """The teacher's guided epsilon at noisy renders: plain CFG with the (view-suffixed) prompt, or
        Perp-Neg when configured."""
        scale = scheduled(self.cfg.guidance_scale, step)
        uncond = prompt.unconditional(x_t.shape[0])
        if self.cfg.perp_neg:
            from .perp_neg import perp_neg_embeddings, perp_neg_eps

            pos, negs, weights = perp_neg_embeddings(self.prior, prompt.prompt, cameras)
            return perp_neg_eps(self.prior, x_t, t, pos, negs, weights, uncond, scale)
        return self.prior.predict_noise_cfg(x_t, t, prompt.conditional(cameras), uncond, scale)[0]

    def finish_gradient(self, grad: torch.Tensor, step: int) -> torch.Tensor:
        """Optional element-wise clamp (debiased SDS) and NaN removal before injection."""
        if self.cfg.grad_clip is not None:
            clip = scheduled(self.cfg.grad_clip, step)
            grad = grad.clamp(-clip, clip)
        return torch.nan_to_num(grad)
