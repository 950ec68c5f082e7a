"""3DGS's adaptive density control as a strategy of `Gaussians`: accumulate each Gaussian's screen-space position
gradient after every backward pass; every `densify_every` steps inside [densify_from, densify_until] clone the
small hot Gaussians, split the large hot ones in two (children sampled from the parent, 1/1.6 of its size) and
prune transparent or huge ones. The statistics are this strategy's checkpointed state."""

from __future__ import annotations

from typing import Callable

import torch

from .base import Strategy, clone_and_split


class DefaultStrategy(Strategy):
    """Settings come from the Gaussians' config (`densify_*`, `split_scale`, `prune_*`, `max_points`)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.grad_accum = torch.zeros(0)
        self.grad_count = torch.zeros(0)

    def reset(self, model) -> None:
        """Zero statistics for every Gaussian of `model` (after its Gaussians were replaced)."""
        self.grad_accum = torch.zeros(len(model), device=model.device)
        self.grad_count = torch.zeros(len(model), device=model.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"grad_accum": self.grad_accum, "grad_count": self.grad_count}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("grad_accum", "grad_count"):
            if name in state:
                setattr(self, name, state[name])

    def step_post_backward(
        self,
        model,
        optimizer: torch.optim.Optimizer,
        step: int,
        generator: torch.Generator,
        event: Callable[[str, dict], None],
    ) -> dict[str, float]:
        self.accumulate(model)
        c = self.cfg
        if c.densify_from <= step <= c.densify_until and step % c.densify_every == 0:
            event("densify", self.densify_and_prune(model, optimizer, generator))
        return {"num_points": len(model)}

    def accumulate(self, model) -> None:
        """Add each visible Gaussian's screen-space gradient norm (scaled to pixels of a unit-size image so the
        threshold does not depend on resolution), from the projections the last render kept (`model.render_info`)."""
        n = len(model)
        if self.grad_accum.device != model.device:  # the model was moved after its statistics were made
            self.grad_accum, self.grad_count = self.grad_accum.to(model.device), self.grad_count.to(model.device)
        for means2d, radii in model.render_info:  # per camera (CPU path) or (cameras, N, 2) at once (gsplat)
            if means2d.grad is None:
                continue
            grad, visible = means2d.grad.reshape(-1, n, 2), radii.reshape(-1, n) > 0
            self.grad_accum += torch.where(visible, grad.norm(dim=-1), 0.0).sum(0)
            self.grad_count += visible.sum(0)
        model.render_info = []

    def densify_and_prune(self, model, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict:
        """Clone small / split large Gaussians whose mean screen gradient exceeds the threshold, then prune
        transparent or huge ones; the optimiser's Adam moments follow the Gaussians."""
        c = self.cfg
        mean_grad = self.grad_accum / self.grad_count.clamp_min(1)
        hot = mean_grad > c.densify_grad_threshold
        room = max(0, c.max_points - len(model))
        if hot.sum() > room:  # keep the hottest when the budget is short
            keep = mean_grad.masked_fill(~hot, -1).topk(room).indices
            hot = torch.zeros_like(hot)
            hot[keep] = True
        big = model.scales.max(-1).values > c.split_scale
        clone, split = hot & ~big, hot & big
        n_old = len(model)
        grown, source, keep = clone_and_split(model, clone, split, generator)
        keep &= torch.sigmoid(grown["opacity_logits"]) > c.prune_opacity
        keep &= grown["log_scales"].exp().max(-1).values < c.prune_scale
        model.replace_points(optimizer, grown, source, n_old, keep)
        return {
            "cloned": int(clone.sum()),
            "split": int(split.sum()),
            "pruned": int((~keep).sum()),
            "count": len(model),
        }
