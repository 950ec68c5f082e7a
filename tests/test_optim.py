"""The runs' optimiser: torch's Adam for ordinary param groups, uniform Adam (Nicolet et al. 2021) for flagged ones."""

import torch

from threedistill.utils.optim import Adam


def _steps(optimizer, params, grads):
    for grad in grads:
        optimizer.zero_grad()
        for p, g in zip(params, grad):
            p.grad = g.clone()
        optimizer.step()


def test_ordinary_groups_step_exactly_like_torchs_adam():
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen)]
    grads = [[torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen)] for _ in range(6)]
    ours, theirs = ([p.clone().requires_grad_() for p in start] for _ in range(2))
    _steps(
        Adam(
            [{"params": [ours[0]], "lr": 0.1}, {"params": [ours[1]], "lr": 0.01, "uniform": False}],
            betas=(0.9, 0.99),
            eps=1e-15,
        ),
        ours,
        grads,
    )
    _steps(
        torch.optim.Adam(
            [{"params": [theirs[0]], "lr": 0.1}, {"params": [theirs[1]], "lr": 0.01}], betas=(0.9, 0.99), eps=1e-15
        ),
        theirs,
        grads,
    )
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_uniform_groups_step_along_the_gradient_scaled_by_its_largest_entry():
    grad = torch.tensor([[1.0, -0.5, 0.0], [0.25, 2.0, -2.0]])
    uniform, other = torch.zeros(2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)
    optimizer = Adam(
        [{"params": [uniform], "lr": 0.1, "uniform": True}, {"params": [other], "lr": 0.1}],
        betas=(0.9, 0.99),
        eps=1e-15,
    )
    _steps(optimizer, [uniform, other], [[grad, torch.ones(4)]] * 3)  # a constant gradient
    assert torch.allclose(uniform.detach(), -3 * 0.1 * grad / 2.0, atol=1e-6)  # direction kept, largest entry 0.1/step
    assert torch.allclose(other.detach(), torch.full((4,), -0.3), atol=1e-6)  # torch's Adam: sign-like steps
    assert uniform.grad is not None and float(optimizer.state[uniform]["step"]) == 3  # the gradient is left in place


def test_uniform_state_uses_torchs_keys_so_checkpoints_restore_it():
    p = torch.zeros(3, requires_grad=True)
    optimizer = Adam([{"params": [p], "lr": 0.1, "uniform": True}])
    _steps(optimizer, [p], [[torch.tensor([1.0, 2.0, 3.0])]])
    assert set(optimizer.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
    assert optimizer.state[p]["exp_avg"].shape == p.shape


def test_a_closure_runs_once_before_every_group_steps():
    uniform, other = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    optimizer = Adam([{"params": [uniform], "lr": 0.1, "uniform": True}, {"params": [other], "lr": 0.1}])
    calls = []

    def closure():
        calls.append(1)
        optimizer.zero_grad()
        loss = (uniform * torch.tensor([1.0, 2.0])).sum() + other.sum()
        loss.backward()
        return loss.detach()

    assert float(optimizer.step(closure)) == 5.0 and len(calls) == 1
    assert torch.allclose(uniform.detach(), torch.tensor([0.95, 0.9]))  # uniform: the gradient over its largest
    assert torch.allclose(other.detach(), torch.full((2,), 0.9))
