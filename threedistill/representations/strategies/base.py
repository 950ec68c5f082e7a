"""Training strategies: what a representation does around the optimiser step (gsplat's `strategy/` is the model).

The Trainer calls `step_pre_backward` after the losses are built and before `backward`, and `step_post_backward`
after the optimiser step; it checkpoints `state_dict()` and restores it with `load_state_dict`, without knowing
what the state holds. A strategy may edit the representation and the optimiser (e.g. clone Gaussians and their
Adam moments).
"""

from __future__ import annotations

from typing import Callable

import torch


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

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass
