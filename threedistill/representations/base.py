"""The interface every representation implements: what the Trainer, the exporters and the workflows may call.

A representation is an `nn.Module` with parameter groups (each with its own learning rate or schedule), one
`render` signature, its own named loss terms, and an optional training `strategy` (hooks before and after the
backward pass whose state is checkpointed, e.g. 3DGS densification). The Trainer calls these and nothing else.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..cameras import Cameras
from ..errors import ConfigError, ThreeDistillError
from .strategies.base import Strategy


class Representation(nn.Module):
    """Base class of NeRF, triplane, Gaussians, mesh and any plugin representation."""

    #: the configuration section this representation reads (`cfg.<registered name>`)
    config_class: type | None = None
    #: names of loss terms (see `training_losses`) that need depth and normals from `render(geometry=True)`
    geometry_losses: tuple[str, ...] = ()
    #: the training strategy (densification, pruning, ...), or None
    strategy: Strategy | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def param_groups(self) -> list[dict]:
        """Parameter groups for the optimiser: {"params": [...], "lr": number or schedule, "name": str}."""
        raise NotImplementedError

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        *,
        background: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        geometry: bool = False,
        perturb: bool = True,
    ) -> dict:
        """rgb and alpha (B,C,H,W), with depth and normal when `geometry`. `generator` feeds any sampling jitter
        (volume rendering) and `perturb=False` turns that jitter off for deterministic renders."""
        raise NotImplementedError

    def loss_weights(self) -> dict[str, Any]:
        """Default weights (numbers or schedules) of this representation's own loss terms, by name; a run's
        `trainer.lambdas.<name>` overrides them."""
        return {}

    def training_losses(self, out: dict, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        """Unweighted loss terms `loss_<name>` for this step's render `out`; only terms whose weight in `weights`
        is non-zero need to be computed. The Trainer weights and sums them."""
        return {}

    def after_step(self) -> None:
        """A projection after every optimiser step (e.g. an edit's size cap); nothing by default."""

    def turn_around(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Turn the object 180 degrees about the vertical (y) axis, in place: what a camera at azimuth a saw, one
        at a + 180 sees now (the orientation check's fix for a run whose front grew at the back). `optimizer`:
        its Adam moments follow the parameters. Representations that cannot turn raise a one-line ConfigError."""
        raise ConfigError(f"the {type(self).__name__} representation cannot be turned around (orientation check)")

    def load_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from a state dict (representations whose sizes change override this)."""
        self.load_state_dict(state)


def transform_adam_state(optimizer, param: torch.Tensor, signs: torch.Tensor, order=None) -> None:
    """Keep `param`'s Adam moments in step with a parameter just mapped by x -> x[..., order] * signs (a signed
    permutation: `order` permutes the last axis, None: not at all; `signs` broadcasts against the parameter): the
    first moment maps the same way, the second (elementwise squares) is only permuted. Adam's update is equivariant
    to such maps, so stepping the mapped parameter equals mapping the stepped one."""
    state = optimizer.state.get(param) if optimizer is not None else None
    if not state:
        return
    for key, factor in (("exp_avg", signs), ("exp_avg_sq", None)):
        value = state[key] if order is None else state[key][..., order]
        state[key] = (value * factor if factor is not None else value).contiguous()


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict into any representation (Gaussians and meshes take one whose size differs from theirs);
    a missing tensor or a wrong shape is a one-line ThreeDistillError."""
    try:
        model.load_tensors(state) if hasattr(model, "load_tensors") else model.load_state_dict(state)
    except KeyError as err:
        raise ThreeDistillError(f"the checkpoint has no tensor {err} for the {type(model).__name__} model") from None
    except (RuntimeError, ValueError, IndexError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ThreeDistillError(f"the checkpoint does not fit the {type(model).__name__} model ({reason})") from None
