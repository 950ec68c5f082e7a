"""What the Trainer optimises against: an objective (a guidance method, the photometric loss of a capture fit, an
edit's dataset loss) and, for captured scenes and edits, the views it trains on. Both are small declared
interfaces; the Trainer calls nothing else of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .cameras import Cameras


class Objective(nn.Module):
    """Returns named loss terms for a batch of renders. Its own term is `loss_<name>` (weighted by the run's
    `trainer.lambda_guidance`); any other `loss_<aux>` term is weighted by `trainer.lambdas.<aux>`, else by
    `loss_weights()[aux]`. Other entries are logged as they are. Trained parts (e.g. VSD's LoRA) are its
    parameters with `requires_grad`; the Trainer optimises and checkpoints them."""

    name = "objective"
    #: the per-view targets this objective reads (keyword arguments of `forward`, supplied by the views):
    #: e.g. ("images", "masks") for a photometric fit, ("source",) for DDS's unedited render
    targets: tuple[str, ...] = ()
    #: views the objective judges together: a multi-view prior's set size (the Trainer then draws its random
    #: cameras in sets of this many, 360/V degrees apart at one elevation); 1 for independent views
    views_per_set: int = 1
    #: true when `forward` also needs the render's `depth` (B,1,H,W) (the Trainer then renders geometry)
    wants_depth: bool = False

    def prompt_state(self, prompt: str) -> Any:
        """Whatever the objective precomputes for a prompt (text embeddings); None when it has no prompt."""
        return None

    def loss_weights(self) -> dict[str, Any]:
        """Default weights of the auxiliary terms this objective returns besides its own."""
        return {}

    def param_groups(self) -> list[dict]:
        """The optimiser groups of its trained parts (default: every parameter with `requires_grad` at 1e-4)."""
        trainable = [p for p in self.parameters() if p.requires_grad]  # e.g. VSD's LoRA and camera MLP
        return [{"params": trainable, "lr": 1e-4, "name": "guidance"}]

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """Buffers to checkpoint besides the trained parameters (e.g. CDS's fixed noise)."""
        return {}

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def forward(
        self,
        rgb: torch.Tensor,
        cameras: Cameras,
        prompt: Any,
        step: int,
        generator: torch.Generator | None = None,
        **targets,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@runtime_checkable
class Views(Protocol):
    """Training views of a captured scene or an edit: `sample` draws a batch of `n` views (fewer when not enough
    views share a size) as a `ViewBatch`."""

    def sample(self, generator: torch.Generator, n: int) -> "ViewBatch": ...


@dataclass
class ViewBatch:
    """One step's views: cameras, the (H, W) they are rendered at, their targets (keyword arguments of the
    objective, e.g. captured images and masks) and the background colour (3,) to render on (None: white)."""

    cameras: Cameras
    size: tuple[int, int]
    targets: dict[str, Any] = field(default_factory=dict)
    background: torch.Tensor | None = None
