"""Training strategies: what a representation does around the optimiser step (gsplat's `strategy/` is the model).

The Trainer calls `step_pre_backward` after the losses are built and before `backward`, and `step_post_backward`
after the optimiser step; it checkpoints `state_dict()` and restores it with `load_state_dict`, without knowing
what the state holds. A strategy may edit the representation and the optimiser (e.g. clone Gaussians and their
Adam moments).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ...geometry import quat_to_rotmat


class Strategy:
    """No-op base: a representation without a strategy trains with a fixed set of parameters."""

    def step_pre_backward(self, model, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Before backward (e.g. ask the renderer to keep screen-space gradients)."""

    def step_post_backward(
        self,
        model,
        optimizer: torch.optim.Optimizer,
        step: int,
        generator: torch.Generator,
        event: Callable[[str, dict], None],
    ) -> dict[str, float]:
        """After the optimiser step `step` (1-based within the stage). Returns numbers for this step's log line;
        `event(name, record)` writes a record of something that happened (e.g. a densification) to the run log."""
        return {}

    def loss_weights(self) -> dict[str, float]:
        """Default weights of the strategy's own loss terms (e.g. MCMC's opacity and scale regularisers)."""
        return {}

    def training_losses(self, model, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        """Unweighted terms `loss_<name>` of the strategy's own losses whose weight in `weights` is non-zero."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


@torch.no_grad()
def clone_and_split(model, clone: torch.Tensor, split: torch.Tensor, generator: torch.Generator):
    """3DGS's growth of Gaussians (`model.PARAM_NAMES`): copies of the `clone` rows, and two children of each
    `split` row drawn from the parent's Gaussian at 1/1.6 of its size. Returns (grown parameters: the current rows,
    then the clones, then the children; the parent of every grown row; a keep mask that drops the split parents)."""
    names = model.PARAM_NAMES
    new = {n: [getattr(model, n).detach()] for n in names}
    idx, sidx = clone.nonzero().squeeze(-1), split.nonzero().squeeze(-1)
    for n in names:
        new[n].append(getattr(model, n).detach()[idx])
    if len(sidx):
        rot = quat_to_rotmat(model.quats[sidx])
        for _ in range(2):
            draw = torch.randn(len(sidx), 3, generator=generator).to(model.device)  # CPU generator, any device
            offset = (rot @ (draw * model.scales[sidx])[..., None])[..., 0]
            new["means"].append(model.means[sidx] + offset)
            new["log_scales"].append(model.log_scales[sidx] - math.log(1.6))
            for n in ("quats", "opacity_logits", "sh"):
                new[n].append(getattr(model, n).detach()[sidx])
    n_old = len(model)
    grown = {n: torch.cat(v) for n, v in new.items()}
    keep = torch.ones(len(grown["means"]), dtype=torch.bool, device=model.device)
    keep[:n_old] = ~split  # split parents are replaced by their children
    source = torch.cat([torch.arange(n_old, device=model.device), idx, sidx, sidx])  # parent of every grown row
    return grown, source, keep
