"""The embedded toy critic (reward=critic): the shipped one tells true views from every kind of negative on groups
it never saw, its gradient reaches every view, bad input is a one-line error, its training is reproducible and
it runs as a reward inside a generate run."""

import json

import numpy as np
import pytest
import torch

from threedistill.errors import ThreeDistillError
from threedistill.rewards import RewardConfig, load_reward
from threedistill.rewards.critic import default_critic_path, load_critic
from threedistill.toyworld.training.critic import (
    NEGATIVES,
    CriticTrainConfig,
    eligible,
    make_example,
    render_groups,
    train_critic,
)


@pytest.fixture(scope="module")
def held_out():
    """Two groups each of a red and a blue duck and robot, rendered with a seed neither training nor the shipped
    evaluation used (other cameras and colour instances), in the critic's training layout."""
    cfg = CriticTrainConfig()
    subjects = [("red", "duck"), ("blue", "duck"), ("red", "robot"), ("blue", "robot")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # sphere tracing's many small ops: one thread is several times faster on a busy machine
    try:
        return render_groups(cfg, subjects, 2, seed=4242, progress=False)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def critic():
    return load_critic()


def test_the_shipped_critic_scores_true_views_above_every_kind_of_negative(critic, held_out):
    rng = np.random.default_rng(0)
    scores = {}
    with torch.no_grad():
        for kind in ("positive", *NEGATIVES):
            groups = eligible(held_out, kind)
            examples = [make_example(held_out, int(g), kind, rng) for g in groups]
            views = torch.stack([x for x, _ in examples])
            scores[kind] = critic.reward(views, [p for _, p in examples])
    positive = scores.pop("positive")
    assert (positive > 0).float().mean() >= 0.875, positive  # R > 0 is a yes
    for kind, negative in scores.items():
        assert positive.mean() > negative.mean() + 3.0, (kind, positive, negative)
        assert (negative < 0).float().mean() >= 0.75, (kind, negative)


def test_the_critic_reward_reaches_every_view(held_out):
    reward = load_reward(RewardConfig(name="critic"))  # reward.model defaults to the shipped critic
    images, prompt = make_example(held_out, 0, "positive", np.random.default_rng(0))
    images = images.clone().requires_grad_(True)
    score = reward.score(images, prompt)
    (grad,) = torch.autograd.grad(score, images)
    assert score.shape == () and torch.isfinite(grad).all()
    assert (grad.flatten(1).norm(dim=1) > 0).all()  # no view cut off the graph (spec 10.6)


def test_the_shipped_critic_is_small_and_in_its_documented_format():
    folder = default_critic_path()
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "threedistill-critic" and config["views"] == 4
    assert config["eval"]["overall"]["auc"] >= 0.95  # the held-out evaluation it was shipped with
    assert sum(f.stat().st_size for f in folder.iterdir()) < 5e6


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: load_reward(RewardConfig(name="critic", model=str(d / "nothing"))), "is not a critic directory"),
        (lambda d: load_reward(RewardConfig(name="critic", views=3)), "set reward.views=4"),
        (lambda d: load_critic(d), "is not a threedistill-critic config"),
        (lambda d: CriticTrainConfig(negatives=["janus", "sideways"]), "unknown negative 'sideways'"),
        (lambda d: CriticTrainConfig(holdout_subjects=["red dog"]), "is not '<colour> <object>'"),
    ],
)
def test_bad_critic_input_is_a_one_line_error(tmp_path, make, fragment):
    (tmp_path / "config.json").write_text('{"format": "something else"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ThreeDistillError) as err:
        make(tmp_path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_bad_config_key_of_critic_train_is_a_one_line_error(tmp_path):
    from test_cli import assert_one_line_error, t3d

    assert_one_line_error(t3d("critic", "train", "stepz=3", cwd=tmp_path), "unknown config key 'stepz'")


TINY = dict(objects=["duck", "cone"], colours=["red", "blue"], groups_per_subject=1, eval_groups_per_subject=1,
            resolution=32, supersample=1, image_size=32, channels=[8, 16], feature=16, text_width=8, hidden=16,
            steps=3, batch_size=4, log_every=0, threads=1)  # fmt: skip


def test_training_is_reproducible_from_its_config(tmp_path):
    from safetensors.torch import load_file

    def train(name: str, seed: int):
        cfg = CriticTrainConfig(**TINY, seed=seed, out=str(tmp_path / name), dataset_cache=str(tmp_path / name / "d"))
        return load_file(str(train_critic(cfg, progress=False, log=lambda s: None) / "model.safetensors"))

    first, again, other = train("a", 0), train("b", 0), train("c", 1)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)  # same config and seed: same weights
    assert not all(torch.equal(first[k], other[k]) for k in first)
    saved = load_critic(tmp_path / "a")
    assert saved.views == 4 and saved.image_size == 32


def test_a_run_with_the_critic_reward_logs_loss_reward(tmp_path):
    from test_rewards import FAST

    from threedistill.workflows.generate import generate

    run = generate(
        prompt="a red duck", steps=2, seed=0, out=str(tmp_path), progress=False, log=lambda s: None,
        overrides=FAST + ["reward.name=critic", "reward.resolution=48"],
    )  # fmt: skip
    logs = [json.loads(line) for line in (run.dir / "log.jsonl").read_text().splitlines()]
    rewarded = [row for row in logs if "loss_reward" in row]
    assert [row["step"] for row in rewarded] == [1, 2]
    assert all(np.isfinite(row["loss_reward"]) for row in rewarded)


def test_the_shipped_toy_clip_loads_as_a_clip_reward_and_prefers_the_right_prompt(held_out):
    reward = load_reward(RewardConfig(name="clip", model=str(default_critic_path("toyworld-clip"))))
    images, _ = make_example(held_out, 0, "positive", np.random.default_rng(0))  # a red duck
    images = images.clone().requires_grad_(True)
    right = reward.score(images, "a red duck")
    (grad,) = torch.autograd.grad(right, images)
    assert torch.isfinite(grad).all() and (grad.flatten(1).norm(dim=1) > 0).all()
    for wrong in ("a blue duck", "a red robot", "an orange duck", "a red snowman"):
        assert float(right.detach()) > float(reward.score(images.detach(), wrong)) + 0.1, wrong


def test_toy_clip_training_is_reproducible_from_its_config(tmp_path):
    from safetensors.torch import load_file

    from threedistill.toyworld.training.clip import ClipTrainConfig, train_clip

    tiny = dict(objects=["duck", "cone"], colours=["red", "blue"], groups_per_subject=1, eval_groups_per_subject=1,
                resolution=32, supersample=1, image_size=16, patch_size=8, width=16, vision_layers=1, text_layers=1,
                heads=2, projection_dim=8, steps=3, batch_size=4, log_every=0, threads=1)  # fmt: skip

    def train(name: str):
        cfg = ClipTrainConfig(**tiny, out=str(tmp_path / name), dataset_cache=str(tmp_path / "d"))
        return load_file(str(train_clip(cfg, progress=False, log=lambda s: None) / "model.safetensors"))

    first, again = train("a"), train("b")
    assert all(torch.equal(first[k], again[k]) for k in first)
    reward = load_reward(RewardConfig(name="clip", model=str(tmp_path / "a")))  # the clip reward's own loader
    assert -1 <= float(reward.score(torch.rand(4, 3, 32, 32), "a red duck")) <= 1
