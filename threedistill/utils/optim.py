"""The optimiser of every run: torch's Adam, with an optional uniform mode per parameter group."""

from __future__ import annotations

import torch


class Adam(torch.optim.Adam):
    """torch.optim.Adam, except in param groups with "uniform": True, which divide the first moment by the square
    root of the largest second moment in the tensor instead of each entry's own (Nicolet et al. 2021's uniform
    Adam). Their step keeps the gradient's direction, so a smooth, Laplacian-preconditioned gradient gives a
    smooth step and vertices with small gradients do not move as fast as the rest. Other groups are stepped by
    torch's own code."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # evaluated once, before any group steps
            with torch.enable_grad():
                loss = closure()
        held = []
        for group in self.param_groups:
            if not group.get("uniform"):
                continue
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:  # the keys torch's Adam uses, so checkpoints store and restore both alike
                    state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t = float(state["step"])
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                scale = (state["exp_avg_sq"].max() / (1 - beta2**t)).sqrt() + group["eps"]
                p.sub_(state["exp_avg"] / scale, alpha=group["lr"] / (1 - beta1**t))
                held.append((p, p.grad))
                p.grad = None  # torch's step skips parameters without a gradient
        try:
            super().step()
        finally:
            for p, grad in held:
                p.grad = grad
        return loss
