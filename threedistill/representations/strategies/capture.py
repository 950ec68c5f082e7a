"""The density control 3DGS uses to fit photographs (gsplat's `DefaultStrategy` is the reference for its numbers),
as a strategy of `Gaussians`; text-to-3D keeps its own tuned `DefaultStrategy`.

- Statistics: after every backward pass, each visible Gaussian's screen-space position gradient in NDC units
  (pixels x half the image size, times the batch's camera count, so the threshold depends on neither the image
  size nor the batch) is accumulated, with how often it was visible. With `absgrad` (AbsGS, gsplat's `absgrad`)
  the gradient is summed from its pixels' magnitudes instead, so large Gaussians whose pixels pull in opposite
  directions (a blurred wall) still densify; its threshold is higher (gsplat suggests 0.0006-0.0008).
- Every `refine_every` steps in [refine_start, refine_stop): Gaussians whose mean gradient exceeds `grow_grad2d`
  are cloned when small (largest scale <= `grow_scale3d` x scene extent) and split in two when large (children
  drawn from the parent, 1/1.6 of its size); then Gaussians below `prune_opacity` are pruned, and, after the first
  opacity reset (without resets: after the first refinement), those larger than `prune_scale3d` x scene extent
  or whose screen radius reached `prune_scale2d` x the image's longer side since the last refinement (3DGS's
  `max_screen_size`: floaters right in front of a training camera cover it cheaply and fog every other view).
- Every `reset_every` steps (before `refine_stop`) every opacity is lowered to at most 2 x `prune_opacity` and its
  Adam moments are zeroed, so floaters that no view needs fade out and get pruned.
- Spherical harmonics: degree 0 first, one more band every `sh_degree_every` steps up to the Gaussians' degree;
  bands above 0 learn `sh_rest_lr_factor` x the colour learning rate (gsplat: 1/20).

The scene extent is `GaussiansConfig.scene_scale` (3DGS's camera extent, set by `t3d fit`)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from ...errors import ConfigError
from .base import Strategy, clone_and_split


@dataclass
class CaptureStrategyConfig:
    """Settings of `CaptureStrategy` (the `gaussians.capture` section). Steps count within the run."""

    grow_grad2d: float = 0.0002  # mean NDC position gradient above which a Gaussian is cloned or split
    absgrad: bool = False  # AbsGS: accumulate per-pixel gradient magnitudes (native and gsplat paths)
    grow_scale3d: float = 0.01  # largest scale (x scene extent) up to which a hot Gaussian is cloned, not split
    prune_opacity: float = 0.005
    prune_scale3d: float = 0.1  # Gaussians larger than this (x scene extent) are pruned after the first reset
    prune_scale2d: float = 0.0  # ... and those whose screen radius reached this x the longer image side (0: off)
    refine_start: int = 500
    refine_stop: int = 15000
    refine_every: int = 100
    reset_every: int = 3000  # opacity reset period (0: never)
    sh_degree_every: int = 1000  # steps per added SH band
    sh_rest_lr_factor: float = 0.05  # learning-rate factor of SH bands above 0

    def __post_init__(self):
        for name in ("refine_every", "sh_degree_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"gaussians.capture.{name} must be >= 1, got {getattr(self, name)}")
        if self.reset_every < 0 or self.refine_start < 0 or self.refine_stop < 0:
            raise ConfigError("gaussians.capture: refine_start, refine_stop and reset_every must be >= 0")
        if not 0 < self.prune_opacity < 0.5:
            raise ConfigError(f"gaussians.capture.prune_opacity must be in (0, 0.5), got {self.prune_opacity}")
        if not 0 < self.sh_rest_lr_factor <= 1:
            raise ConfigError(f"gaussians.capture.sh_rest_lr_factor must be in (0, 1], got {self.sh_rest_lr_factor}")


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class SphericalHarmonicsRamp(Strategy):
    """The SH schedule shared by the photograph strategies: degree 0 first, one more band every
    `self.c.sh_degree_every` steps; bands above 0 move `self.c.sh_rest_lr_factor` x what Adam gives them."""

    c: CaptureStrategyConfig
    sh_degree: torch.Tensor
    _sh_rest: torch.Tensor | None = None

    def step_pre_backward(self, model, optimizer: torch.optim.Optimizer, step: int) -> None:
        if model.sh.shape[1] > 1 and self.c.sh_rest_lr_factor < 1:
            self._sh_rest = model.sh.detach()[:, 1:].clone()  # to scale this step's update of the higher bands

    def scale_sh_rest(self, model) -> None:
        """After the optimiser step: Adam's update is proportional to the learning rate, so scale it afterwards."""
        if self._sh_rest is not None:
            with torch.no_grad():
                rest = model.sh[:, 1:]
                rest.copy_(self._sh_rest + (rest - self._sh_rest) * self.c.sh_rest_lr_factor)
            self._sh_rest = None

    def advance_sh_degree(self, model, step: int, event: Callable[[str, dict], None]) -> None:
        degree = min(step // self.c.sh_degree_every, round(math.sqrt(model.sh.shape[1])) - 1)
        if degree != int(self.sh_degree):
            self.sh_degree = torch.tensor(degree)
            model.sh_degree_active = degree
            event("sh_degree", {"degree": degree})


class CaptureStrategy(SphericalHarmonicsRamp):
    """Reads `gaussians.capture` (`CaptureStrategyConfig`), `gaussians.scene_scale` and `gaussians.max_points`."""

    def __init__(self, cfg):
        self.cfg, self.c = cfg, cfg.capture
        self.grad_accum = torch.zeros(0)
        self.grad_count = torch.zeros(0)
        self.max_radii = torch.zeros(0)  # largest screen radius / longer image side since the last refinement
        self.sh_degree = torch.zeros((), dtype=torch.int64)  # the active SH degree (checkpointed)
        self._sh_rest: torch.Tensor | None = None
        self._warned_absgrad = False

    # ------------------------------------------------------------ state
    def reset(self, model) -> None:
        """Zero statistics for every Gaussian of `model` (after its Gaussians were replaced)."""
        self.grad_accum = torch.zeros(len(model), device=model.device)
        self.grad_count = torch.zeros(len(model), device=model.device)
        self.max_radii = torch.zeros(len(model), device=model.device)
        model.sh_degree_active = int(self.sh_degree)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "grad_accum": self.grad_accum,
            "grad_count": self.grad_count,
            "max_radii": self.max_radii,
            "sh_degree": self.sh_degree,
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("grad_accum", "grad_count", "max_radii", "sh_degree"):
            if name in state:
                setattr(self, name, state[name])

    # ------------------------------------------------------------ hooks
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
        self.accumulate(model)
        if c.refine_start <= step < c.refine_stop and step % c.refine_every == 0 and step > 0:
            event("densify", self.refine(model, optimizer, step, generator))
        if c.reset_every and step < c.refine_stop and step % c.reset_every == 0:
            self.reset_opacity(model, optimizer)
            event("opacity_reset", {"max_opacity": 2 * c.prune_opacity})
        self.advance_sh_degree(model, step, event)
        return {"num_points": len(model)}

    def accumulate(self, model) -> None:
        """Add each visible Gaussian's NDC position-gradient norm from the projections of the last render."""
        n = len(model)
        if self.grad_accum.device != model.device:
            self.grad_accum, self.grad_count = self.grad_accum.to(model.device), self.grad_count.to(model.device)
            self.max_radii = self.max_radii.to(model.device)
        infos = [(m, r) for m, r in model.render_info if m.grad is not None]
        height, width = model.render_size
        cameras = sum(m.grad.reshape(-1, n, 2).shape[0] for m, _ in infos)
        scale = torch.tensor([width / 2 * cameras, height / 2 * cameras], device=model.device)
        for means2d, radii in infos:  # per camera (CPU path) or (cameras, N, 2) at once (gsplat)
            grad = self.screen_gradient(means2d)
            grad, visible = grad.reshape(-1, n, 2) * scale, radii.reshape(-1, n) > 0
            self.grad_accum += torch.where(visible, grad.norm(dim=-1), 0.0).sum(0)
            self.grad_count += visible.sum(0)
            radius = radii.reshape(-1, n).amax(0).to(self.max_radii.dtype) / max(height, width)
            self.max_radii = torch.maximum(self.max_radii, radius)
        model.render_info = []

    def screen_gradient(self, means2d: torch.Tensor) -> torch.Tensor:
        """The position gradient densification reads: `means2d.grad`, or with `absgrad` the per-pixel magnitudes
        the rasterizer left in `means2d.absgrad` (the PyTorch path leaves none: then the plain gradient, said once)."""
        if not self.c.absgrad:
            return means2d.grad
        absgrad = getattr(means2d, "absgrad", None)
        if absgrad is None:
            if not self._warned_absgrad:
                warnings.warn(
                    "gaussians.capture.absgrad needs the native or gsplat rasterizer; densifying by the plain "
                    "position gradient instead",
                    stacklevel=2,
                )
                self._warned_absgrad = True
            return means2d.grad
        return absgrad.to(means2d.grad.dtype).reshape(means2d.grad.shape)

    # ------------------------------------------------------------ surgery
    def refine(self, model, optimizer: torch.optim.Optimizer, step: int, generator: torch.Generator) -> dict:
        """Clone small / split large hot Gaussians, then prune transparent (and, after a reset, huge) ones."""
        c, extent = self.c, self.cfg.scene_scale
        mean_grad = self.grad_accum / self.grad_count.clamp_min(1)
        hot = mean_grad > c.grow_grad2d
        big = model.scales.max(-1).values > c.grow_scale3d * extent
        room = max(0, self.cfg.max_points - len(model))
        extra = hot & ~big  # clones add one row each, splits add one net row each
        if int(hot.sum()) > room:  # the budget is short: keep the hottest
            keep = mean_grad.masked_fill(~hot, -1).topk(room).indices
            hot = torch.zeros_like(hot)
            hot[keep] = True
            extra = hot & ~big
        clone, split = extra, hot & big
        n_old = len(model)
        grown, source, keep = clone_and_split(model, clone, split, generator)
        keep &= torch.sigmoid(grown["opacity_logits"]) > c.prune_opacity
        if step > (c.reset_every or c.refine_start):  # after the first reset (3DGS), or the first refinement
            keep &= grown["log_scales"].exp().max(-1).values <= c.prune_scale3d * extent
            if c.prune_scale2d:
                keep &= self.max_radii[source] <= c.prune_scale2d
        model.replace_points(optimizer, grown, source, n_old, keep)
        pruned = int((~keep).sum()) - int(split.sum())  # split parents are replaced, not pruned
        return {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": pruned, "count": len(model)}

    def reset_opacity(self, model, optimizer: torch.optim.Optimizer) -> None:
        """Lower every opacity to at most 2 x prune_opacity and zero its Adam moments (3DGS)."""
        with torch.no_grad():
            model.opacity_logits.clamp_(max=_logit(2 * self.c.prune_opacity))
        state = optimizer.state.get(model.opacity_logits)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                state[key].zero_()
