"""3D Gaussian Splatting as Markov Chain Monte Carlo (Kheradmand et al. 2024; gsplat's `MCMCStrategy` is the
reference for its numbers) as a strategy of `Gaussians`, for fitting photographs.

There is no gradient threshold and no opacity reset. The Gaussians are samples that move:
- Every step, after the optimiser, each mean gets noise shaped by its own covariance, scaled by the current
  position learning rate x `noise_lr`, and gated by opacity (a sigmoid that is ~1 below 0.5% opacity and ~0 above
  a few %), so transparent Gaussians wander and opaque ones stay (stochastic gradient Langevin dynamics).
- Every `refine_every` steps in [refine_start, refine_stop): the dead (opacity <= `min_opacity`) are moved onto
  live ones drawn in proportion to opacity; then `grow_rate` x the count are added the same way, up to
  `cap_max`. A Gaussian copied into N Gaussians (itself included) gets opacity 1 - (1 - o)^(1/N) and its scale
  multiplied by o / sum_{i=1..N} sum_{k=0..i-1} C(i-1, k) (-1)^k o_N^(k+1) / sqrt(k+1), so the rendered image
  stays what it was (the paper's eq. 9). Adam moments of every Gaussian involved are zeroed.
- Losses: `opacity_l1` (mean opacity) and `scale_l1` (mean scale, in units of the scene extent), both 0.01 by
  default, pull unneeded Gaussians toward death so they get relocated where the image needs them.
- Spherical harmonics: as the capture strategy (one band more every `sh_degree_every` steps; higher bands at
  `sh_rest_lr_factor` x the colour rate)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ...errors import ConfigError
from ...renderers.gaussian_raster import covariances
from .capture import SphericalHarmonicsRamp

N_MAX = 51  # copies per Gaussian beyond which the relocation formula is clamped (gsplat's n_max)


@dataclass
class McmcStrategyConfig:
    """Settings of `McmcStrategy` (the `gaussians.mcmc` section). Steps count within the run."""

    cap_max: int = 100000  # the most Gaussians (growth stops here)
    grow_rate: float = 0.05  # Gaussians added per refinement, as a share of the count
    min_opacity: float = 0.005  # at or below this a Gaussian is dead and relocated
    noise_lr: float = 5e5  # position noise = this x the current position learning rate x the covariance
    refine_start: int = 500
    refine_stop: int = 25000
    refine_every: int = 100
    opacity_reg: float = 0.01  # weight of loss_opacity_l1 (mean opacity)
    scale_reg: float = 0.01  # weight of loss_scale_l1 (mean scale / scene extent)
    sh_degree_every: int = 1000  # steps per added SH band
    sh_rest_lr_factor: float = 0.05  # learning-rate factor of SH bands above 0

    def __post_init__(self):
        for name in ("refine_every", "sh_degree_every", "cap_max"):
            if getattr(self, name) < 1:
                raise ConfigError(f"gaussians.mcmc.{name} must be >= 1, got {getattr(self, name)}")
        if self.refine_start < 0 or self.refine_stop < 0:
            raise ConfigError("gaussians.mcmc: refine_start and refine_stop must be >= 0")
        if not 0 <= self.grow_rate <= 1:
            raise ConfigError(f"gaussians.mcmc.grow_rate must be in [0, 1], got {self.grow_rate}")
        if not 0 < self.min_opacity < 0.5:
            raise ConfigError(f"gaussians.mcmc.min_opacity must be in (0, 0.5), got {self.min_opacity}")
        for name in ("noise_lr", "opacity_reg", "scale_reg"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"gaussians.mcmc.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.sh_rest_lr_factor <= 1:
            raise ConfigError(f"gaussians.mcmc.sh_rest_lr_factor must be in (0, 1], got {self.sh_rest_lr_factor}")


def _relocation_table(n_max: int = N_MAX) -> torch.Tensor:
    """A[i-1, k] = C(i-1, k) (-1)^k / sqrt(k+1) for k < i (zero above), float64, (n_max, n_max)."""
    table = torch.zeros(n_max, n_max, dtype=torch.float64)
    for i in range(1, n_max + 1):
        for k in range(i):
            table[i - 1, k] = math.comb(i - 1, k) * (-1) ** k / math.sqrt(k + 1)
    return table


_TABLE: torch.Tensor | None = None


def relocation(opacity: torch.Tensor, scale: torch.Tensor, copies: torch.Tensor, min_opacity: float = 0.005):
    """Opacity (G,) and scales (G,3) for a Gaussian shared by `copies` (G,) Gaussians so that their sum renders as
    the one did (eq. 9 of 3DGS-MCMC); `copies` is clamped to [1, N_MAX], the opacity to [min_opacity, 1 - 1e-6]."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _relocation_table()
    n = copies.clamp(1, N_MAX).long()
    o = opacity.double().clamp(1e-12, 1 - 1e-12)
    new_o = 1 - (1 - o) ** (1.0 / n.double())
    powers = new_o[:, None] ** torch.arange(1, N_MAX + 1, dtype=torch.float64, device=o.device)  # (G, N_MAX)
    inner = powers @ _TABLE.to(o.device).T  # inner[g, i-1] = sum_k A[i-1, k] o_N^(k+1)
    denom = inner.cumsum(1).gather(1, (n - 1)[:, None])[:, 0]
    new_scale = scale * (o / denom).to(scale.dtype)[:, None]
    return new_o.clamp(min_opacity, 1 - 1e-6).to(opacity.dtype), new_scale


def _op_gate(opacity: torch.Tensor, k: float = 100.0, x0: float = 0.995) -> torch.Tensor:
    """~1 for (nearly) transparent Gaussians, ~0 for opaque ones: sigmoid(k ((1 - opacity) - x0))."""
    return torch.sigmoid(k * ((1 - opacity) - x0))


class McmcStrategy(SphericalHarmonicsRamp):
    """Reads `gaussians.mcmc` (`McmcStrategyConfig`) and `gaussians.scene_scale`."""

    def __init__(self, cfg):
        self.cfg, self.c = cfg, cfg.mcmc
        self.sh_degree = torch.zeros((), dtype=torch.int64)
        self._sh_rest: torch.Tensor | None = None

    def reset(self, model) -> None:
        model.sh_degree_active = int(self.sh_degree)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sh_degree": self.sh_degree}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "sh_degree" in state:
            self.sh_degree = state["sh_degree"]

    def loss_weights(self) -> dict[str, float]:
        return {"opacity_l1": self.c.opacity_reg, "scale_l1": self.c.scale_reg}

    def training_losses(self, model, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        losses = {}
        if weights.get("opacity_l1"):
            losses["loss_opacity_l1"] = model.opacities.mean()
        if weights.get("scale_l1"):
            losses["loss_scale_l1"] = model.scales.mean() / self.cfg.scene_scale
        return losses

    def step_post_backward(
        self,
        model,
        optimizer: torch.optim.Optimizer,
        step: int,
        generator: torch.Generator,
        event: Callable[[str, dict], None],
    ) -> dict[str, float]:
        c = self.c
        self.scale_sh_rest(model)
        model.render_info = []  # no screen-space statistics are needed
        if c.refine_start < step < c.refine_stop and step % c.refine_every == 0:
            record = {"relocated": self.relocate(model, optimizer, generator)}
            record["added"] = self.add(model, optimizer, generator)
            record["count"] = len(model)
            event("mcmc", record)
        lr = next(g["lr"] for g in optimizer.param_groups if g["params"][0] is model.means)
        self.inject_noise(model, lr * c.noise_lr, generator)
        self.advance_sh_degree(model, step, event)
        return {"num_points": len(model)}

    # ------------------------------------------------------------ moves
    @torch.no_grad()
    def inject_noise(self, model, scale: float, generator: torch.Generator) -> None:
        """Add covariance-shaped noise, gated to the transparent Gaussians, to every mean."""
        if scale <= 0 or len(model) == 0:
            return
        draw = torch.randn(len(model), 3, generator=generator).to(model.device)
        gate = _op_gate(model.opacities)[:, None]
        cov = covariances(model.scales, model.quats)
        model.means.add_((cov @ (draw * gate * scale)[..., None])[..., 0])

    def _sample(self, weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` indices drawn with replacement in proportion to `weights` (on the CPU generator)."""
        return torch.multinomial(weights.detach().cpu().double(), count, replacement=True, generator=generator)

    @torch.no_grad()
    def _share(self, model, optimizer, sampled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Give every sampled source the opacity and scale of one of its copies (eq. 9) and zero its Adam moments;
        returns those opacity logits and log-scales of the `sampled` rows (one per draw)."""
        device = model.device
        sources, inverse, counts = sampled.unique(return_inverse=True, return_counts=True)
        sources, counts = sources.to(device), counts.to(device)
        opacity, scale = relocation(model.opacities[sources], model.scales[sources], counts + 1, self.c.min_opacity)
        model.opacity_logits[sources] = torch.logit(opacity)
        model.log_scales[sources] = scale.log()
        _zero_moments(model, optimizer, sources)
        inverse = inverse.to(device)
        return model.opacity_logits[sources][inverse], model.log_scales[sources][inverse]

    @torch.no_grad()
    def relocate(self, model, optimizer, generator: torch.Generator) -> int:
        """Move the dead Gaussians onto live ones drawn by opacity. Returns how many moved."""
        opacity = model.opacities
        dead = (opacity <= self.c.min_opacity) | ~torch.isfinite(opacity)
        n_dead, alive = int(dead.sum()), (~dead).nonzero().squeeze(-1)
        if n_dead == 0 or len(alive) == 0:
            return 0
        sampled = alive[self._sample(opacity[alive], n_dead, generator).to(model.device)]
        logits, log_scales = self._share(model, optimizer, sampled)
        target = dead.nonzero().squeeze(-1)
        for name in model.PARAM_NAMES:
            getattr(model, name)[target] = getattr(model, name)[sampled]
        model.opacity_logits[target], model.log_scales[target] = logits, log_scales
        _zero_moments(model, optimizer, target)
        return n_dead

    @torch.no_grad()
    def add(self, model, optimizer, generator: torch.Generator) -> int:
        """Add `grow_rate` x the count (up to `cap_max`) copies of Gaussians drawn by opacity. Returns how many."""
        n = len(model)
        n_new = max(0, min(self.c.cap_max, int(n * (1 + self.c.grow_rate))) - n)
        if n_new == 0:
            return 0
        sampled = self._sample(model.opacities, n_new, generator).to(model.device)
        logits, log_scales = self._share(model, optimizer, sampled)
        grown = {
            name: torch.cat([getattr(model, name).detach(), getattr(model, name).detach()[sampled]])
            for name in model.PARAM_NAMES
        }
        grown["opacity_logits"][n:], grown["log_scales"][n:] = logits, log_scales
        source = torch.cat([torch.arange(n, device=model.device), sampled])
        model.replace_points(optimizer, grown, source, n, torch.ones(n + n_new, dtype=torch.bool, device=model.device))
        return n_new


def _zero_moments(model, optimizer: torch.optim.Optimizer, rows: torch.Tensor) -> None:
    """Zero the Adam moments of `rows` of every parameter of `model`."""
    for name in model.PARAM_NAMES:
        state = optimizer.state.get(getattr(model, name))
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                state[key][rows] = 0
