"""CDS, Consistency Distillation Sampling (Consistent3D; guidance_spec.md section 11).

One noise eps* is drawn at the first step and reused for every view and step (it plays the sampling seed;
kept in checkpoints). In the variance-exploding view z_t = x + varsigma_t eps* (teacher input alpha_t z_t),
with t' = clamp(tau(k), lo, hi - gap) on a square-root schedule tau0 -> tau1 and t = clamp(t' + u, lo, hi),
u ~ U{gap, ..., gap + perturb - 1}: one Euler ODE step z_t' = z_t + (varsigma_t' - varsigma_t) eps_cfg(z_t)
and G = w(t) (eps_cfg(z_t; t) - eps_cfg(z_t'; t')). The official guidance scale 100 -> 50 is threestudio's
convention (101 -> 51 here); the toy-prior defaults keep SDS's 20 -> 10. 4 sequential teacher evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..cameras import Cameras
from .base import Guidance, GuidanceConfig, PromptState


@dataclass
class CDSConfig(GuidanceConfig):
    weighting: str = "uniform"
    min_step_percent: float = 0.1
    max_step_percent: float = 0.98
    tau_start: int = 700  # t' anneals tau_start -> tau_end with a square-root law over anneal_steps
    tau_end: int = 100
    anneal_steps: int = 300
    end_gap: int = 100  # t - t' is at least end_gap ...
    perturb: int = 200  # ... and below end_gap + perturb


class CDSGuidance(Guidance):
    config_class = CDSConfig
    name = "cds"

    @property
    def teacher_evals(self) -> int:
        return 2 * self.guided_evals

    def __init__(self, prior, cfg: Optional[CDSConfig] = None):
        super().__init__(prior, cfg)
        self.register_buffer("fixed_noise", torch.empty(0))

    def sample_noise(self, x: torch.Tensor, step: int, generator: torch.Generator | None) -> torch.Tensor:
        if self.fixed_noise.numel() == 0:  # drawn once per run from the run's generator, then checkpointed
            self.fixed_noise = torch.randn(x.shape[1:], generator=generator, dtype=x.dtype)
        return self.fixed_noise.to(x.device, x.dtype).expand(x.shape)

    def sample_timesteps(self, batch: int, step: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The noisier timesteps t (B,); t' follows from the schedule (`earlier_timestep`)."""
        lo, hi = self.timestep_window(step)
        t_early = self.earlier_timestep(step)
        u = torch.randint(self.cfg.end_gap, self.cfg.end_gap + self.cfg.perturb, (batch,), generator=generator)
        return (t_early + u).clamp(lo, hi)

    def earlier_timestep(self, step: int) -> int:
        """t' = clamp(tau(k), lo, hi - gap), tau(k) = tau0 + (tau1 - tau0) sqrt(k / K)."""
        lo, hi = self.timestep_window(step)
        q = math.sqrt(min(step, self.cfg.anneal_steps) / max(self.cfg.anneal_steps, 1))
        tau = self.cfg.tau_start + (self.cfg.tau_end - self.cfg.tau_start) * q
        return int(min(max(round(tau), lo), hi - self.cfg.end_gap))

    def gradient(
        self,
        x: torch.Tensor,
        cameras: Cameras,
        prompt: PromptState,
        step: int,
        t: torch.Tensor,
        noise: torch.Tensor,
        t_early: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        t_early = torch.full_like(t, self.earlier_timestep(step)) if t_early is None else t_early
        alpha, sigma = self.prior.alpha_sigma(t)
        alpha_e, sigma_e = self.prior.alpha_sigma(t_early)
        z_t = x.detach() + sigma / alpha * noise
        eps_t = self.guided_eps(alpha * z_t, t, cameras, prompt, step)
        z_early = z_t + (sigma_e / alpha_e - sigma / alpha) * eps_t
        eps_early = self.guided_eps(alpha_e * z_early, t_early, cameras, prompt, step)
        return self.weight(t) * (eps_t - eps_early)
