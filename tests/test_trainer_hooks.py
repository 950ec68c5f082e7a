"""The Trainer's interfaces: a representation it has never seen trains through it with its own strategy hooks and
loss terms, every term is weighted by its own lambda, and strategy state survives a checkpoint."""

import json

import pytest
import torch

from threedistill.errors import ConfigError
from threedistill.objective import Objective
from threedistill.representations.base import Representation
from threedistill.representations.strategies import Strategy
from threedistill.trainer import Trainer, TrainerConfig


class CountingStrategy(Strategy):
    """Records every hook call; its state (a call counter) must be checkpointed and restored."""

    def __init__(self):
        self.calls, self.count = [], torch.zeros(1)

    def step_pre_backward(self, model, optimizer, step):
        assert model.colour.grad is None  # before backward
        self.calls.append(("pre", step))

    def step_post_backward(self, model, optimizer, step, generator, event):
        assert model.colour.grad is not None  # after backward and the step
        self.calls.append(("post", step))
        self.count += 1
        if step == 2:
            event("grew", {"points": 7})
        return {"strategy_count": float(self.count)}

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"].clone()


class Flat(Representation):
    """A representation the Trainer has never heard of: a flat colour, one 'smooth' term of its own."""

    geometry_losses = ("bumps",)

    def __init__(self):
        super().__init__()
        self.colour = torch.nn.Parameter(torch.zeros(3))
        self.strategy = CountingStrategy()
        self.geometry_calls = []

    def param_groups(self):
        return [{"params": [self.colour], "lr": 0.1, "name": "colour"}]

    def render(self, cameras, height, width, *, background=None, generator=None, geometry=False, perturb=True):
        self.geometry_calls.append(geometry)
        b = len(cameras)
        rgb = torch.sigmoid(self.colour)[None, :, None, None].expand(b, 3, height, width)
        return {"rgb": rgb, "alpha": torch.ones(b, 1, height, width)}

    def loss_weights(self):
        return {"smooth": 0.5, "bumps": 0.0}

    def training_losses(self, out, weights):
        return {"loss_smooth": self.colour.square().sum()} if weights.get("smooth") else {}


class ToRed(Objective):
    name = "red"

    def __init__(self, extra=None):
        super().__init__()
        self.extra = extra

    def loss_weights(self):
        return {"aux": 1.0}

    def forward(self, rgb, cameras, prompt, step, generator=None, **targets):
        target = torch.tensor([1.0, 0.0, 0.0])[None, :, None, None]
        out = {"loss_red": (rgb - target).square().mean(), "loss_aux": rgb.mean()}
        if self.extra:
            out[f"loss_{self.extra}"] = rgb.sum()
        return out


def trainer(tmp_path=None, extra=None, **cfg):
    cfg = TrainerConfig(steps=4, batch_size=1, resolution=4, checkpoint_every=2, log_every=1, **cfg)
    log = []
    return Trainer(cfg, Flat(), ToRed(extra), "", tmp_path, log=log.append), log


def test_a_new_representation_trains_with_its_own_strategy_hooks_and_checkpointed_state(tmp_path):
    t, log = trainer(tmp_path)
    t.fit(progress=False)
    strategy = t.model.strategy
    assert strategy.calls == [(kind, s) for s in range(1, 5) for kind in ("pre", "post")]
    assert [json.loads(line) for line in log] == [{"step": 2, "grew": {"points": 7}}]
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [line["strategy_count"] for line in lines] == [1.0, 2.0, 3.0, 4.0]
    assert all(g is False for g in t.model.geometry_calls)  # its geometry term has weight 0
    resumed, _ = trainer(tmp_path)
    resumed.load_checkpoint(tmp_path)
    assert float(resumed.model.strategy.count) == 4.0 and resumed.step == 4
    assert torch.equal(resumed.model.colour, t.model.colour)


def test_every_named_term_has_its_own_weight():
    t, _ = trainer(lambda_guidance=0.25, lambdas={"aux": 3.0})
    logs = t.train_step()
    expected = 0.25 * logs["loss_red"] + 3.0 * logs["loss_aux"] + 0.5 * logs["loss_smooth"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-6)
    assert t.loss_weights()["smooth"] == 0.5  # the representation's default
    t2, _ = trainer(lambdas={"smooth": 0.0})  # a zero weight drops the representation's term
    assert "loss_smooth" not in t2.train_step()


def test_a_term_without_a_weight_is_a_one_line_error():
    t, _ = trainer(extra="mystery")
    with pytest.raises(ConfigError, match=r"loss_mystery .*trainer\.lambdas\.mystery="):
        t.train_step()


def test_a_geometry_term_with_weight_asks_the_render_for_geometry():
    t, _ = trainer(lambdas={"bumps": 1.0})
    t.train_step()
    assert t.model.geometry_calls == [True]


def test_vsd_lora_loss_is_not_scaled_by_lambda_guidance(toy_prior):
    from threedistill.guidance import GUIDANCE

    vsd = GUIDANCE.get("vsd")
    assert vsd(toy_prior, vsd.config_class()).loss_weights() == {"lora": 1.0}


def test_views_and_objectives_declare_their_targets():
    from threedistill.editing.dds import DDSGuidance
    from threedistill.objective import Views
    from threedistill.scenes.views import PhotometricLoss, SceneViews

    assert DDSGuidance.targets == ("source",) and PhotometricLoss.targets == (
        "images",
        "masks",
        "valid",
        "view",
        "points",
    )
    views = SceneViews.__new__(SceneViews)
    assert isinstance(views, Views)  # structural: sample(generator, n) -> ViewBatch
    assert not isinstance(object(), Views)
