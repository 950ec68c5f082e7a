"""The orientation check (threedistill/rewards/orientation.py): turning a representation around, the judge's flip
margin on toy ground truth, the check inside a run, its config errors and the judge's training."""

import json

import pytest
import torch

from threedistill.cameras import orbit_cameras
from threedistill.errors import ConfigError, ThreeDistillError
from threedistill.representations.gaussians import Gaussians, GaussiansConfig
from threedistill.representations.nerf import NeRF
from threedistill.representations.triplane import Triplane
from threedistill.rewards.orientation import OrientationConfig, flip_margin, load_judge

CAMS = orbit_cameras([20.0, 110.0, 250.0], [15.0, 30.0, -5.0], 2.9)
OPPOSITE = orbit_cameras([200.0, 290.0, 70.0], [15.0, 30.0, -5.0], 2.9)
FAST = ["gaussians.num_points=200", "trainer.batch_size=1", "trainer.resolution=16", "trainer.preview_every=0",
        "trainer.checkpoint_every=0", "trainer.log_every=1", "export=[]", "device=cpu"]  # fmt: skip


def lumpy_gaussians(seed: int = 0) -> Gaussians:
    """Gaussians with every parameter away from its initial value (SH degree 3: the view-dependent bands turn)."""
    torch.manual_seed(seed)
    g = Gaussians(GaussiansConfig(num_points=300, sh_degree=3))
    with torch.no_grad():
        g.means.mul_(torch.tensor([1.5, 0.5, 0.8]))
        g.sh.normal_(0, 0.3)
        g.quats.normal_()
        g.log_scales.add_(0.5 * torch.randn_like(g.log_scales))
        g.opacity_logits.add_(2.0)
    return g


@pytest.mark.parametrize(
    "make", [lumpy_gaussians, lambda: NeRF(), lambda: Triplane()], ids=["gaussians", "nerf", "triplane"]
)
def test_a_turned_model_shows_from_each_camera_what_the_opposite_camera_saw(make):
    model = make()
    before = model.render(OPPOSITE, 16, 16, perturb=False)["rgb"]
    model.turn_around()
    after = model.render(CAMS, 16, 16, perturb=False)["rgb"]
    assert before.std() > 0.05  # not a blank image
    assert torch.allclose(before, after, atol=1e-5)
    model.turn_around()  # twice: back as it was
    assert torch.allclose(model.render(OPPOSITE, 16, 16, perturb=False)["rgb"], before, atol=1e-5)


def test_turning_carries_the_adam_moments_so_a_step_after_the_turn_is_the_turned_step():
    """step, step, turn == step, turn, (the same loss seen from the opposite cameras) step: the second moment
    estimates follow the parameters. Fails if the turn leaves the moments as they were."""

    def loss(model, cams):
        return model.render(cams, 16, 16)["rgb"].square().mean()

    def adam(model):
        return torch.optim.Adam([{"params": [p]} for p in model.parameters()], lr=0.05)

    a, b = lumpy_gaussians(), lumpy_gaussians()
    opt_a, opt_b = adam(a), adam(b)
    for model, opt, steps in ((a, opt_a, [CAMS, CAMS]), (b, opt_b, [CAMS])):
        for cams in steps:
            opt.zero_grad()
            loss(model, cams).backward()
            opt.step()
    a.turn_around(opt_a)
    b.turn_around(opt_b)
    opt_b.zero_grad()
    loss(b, OPPOSITE).backward()
    opt_b.step()
    for name in ("means", "quats", "sh", "log_scales", "opacity_logits"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5), name


class ToyTruth:
    """The toy world's own renderer as a representation (what the judge should read correctly), turned around at
    will: a camera at azimuth a then sees the object from a + 180."""

    device = torch.device("cpu")

    def __init__(self, subject: str, turned: bool):
        from threedistill.toyworld.catalogue import parse_subject

        self.colour, self.obj = parse_subject(subject)
        self.turned = turned

    def render(self, cams, height, width, perturb=False):
        from threedistill.toyworld.render import render_toy

        az = cams.azimuth + (180.0 if self.turned else 0.0)
        moved = orbit_cameras(az.tolist(), cams.elevation.tolist(), cams.radius.tolist(), 40.0)
        return render_toy(self.obj, self.colour, moved, height, width)


@pytest.mark.parametrize("subject", ["blue duck", "green snowman", "red house", "purple robot"])
def test_the_shipped_judge_finds_a_turned_object_and_passes_one_facing_the_front(subject):
    judge, cfg = load_judge(), OrientationConfig()
    facing, turned = flip_margin(judge, ToyTruth(subject, False), cfg), flip_margin(judge, ToyTruth(subject, True), cfg)
    assert facing < -cfg.margin < cfg.margin < turned


def run_with_check(tmp_path, name, margin, representation="gaussians"):
    from threedistill.workflows.generate import generate

    overrides = FAST + ["orientation.check_at=[1.0]", f"orientation.margin={margin}"]
    return generate(prompt="a red duck", representation=representation, steps=2, seed=0, out=str(tmp_path / name),
                    overrides=overrides, progress=False, log=lambda s: None)  # fmt: skip


def test_a_run_turns_at_its_check_when_the_margin_is_passed_and_logs_it(tmp_path):
    kept, turned = run_with_check(tmp_path, "kept", 1e9), run_with_check(tmp_path, "turned", -1e9)
    flip = torch.tensor([-1.0, 1.0, -1.0])
    assert torch.equal(turned.model.means, kept.model.means * flip)
    rows = [json.loads(line) for line in (turned.dir / "log.jsonl").read_text().splitlines()]
    last = [r for r in rows if r.get("step") == 2 and "orientation_turned" in r]
    assert last and last[0]["orientation_turned"] == 1 and isinstance(last[0]["orientation_margin"], float)


def test_orientation_settings_are_checked_before_the_run(tmp_path):
    for bad in ([0.0], [1.5], ["half"]):
        with pytest.raises(ConfigError, match="orientation.check_at"):
            OrientationConfig(check_at=bad)
    with pytest.raises(ConfigError, match="orientation.views"):
        OrientationConfig(views=1)
    with pytest.raises(ThreeDistillError, match="not an orientation judge directory"):
        load_judge(tmp_path)
    with pytest.raises(ConfigError, match="mesh representation cannot be turned"):
        run_with_check(tmp_path, "mesh", 0.0, representation="mesh")
    from threedistill.workflows.generate import generate

    staged = FAST + [
        "orientation.check_at=[1.0]",
        "stages=[{name: coarse, steps: 1}, {name: mesh, steps: 1, overrides: [representation=mesh]}]",
    ]
    with pytest.raises(ConfigError, match="mesh representation cannot be turned"):  # before the first stage trains
        generate(prompt="a red duck", representation="nerf", out=str(tmp_path / "staged"), overrides=staged,
                 progress=False, log=lambda s: None)  # fmt: skip
    assert not (tmp_path / "staged").exists()


def test_the_judge_trains_reproducibly_and_loads(tmp_path):
    from threedistill.toyworld.training.orientation import OrientTrainConfig, train_judge

    def train(out):
        cfg = OrientTrainConfig(out=str(out), views_per_subject=2, eval_views_per_subject=1, steps=4, batch_size=8)
        return train_judge(cfg, progress=False, log=lambda s: None)

    first, second = train(tmp_path / "a"), train(tmp_path / "b")
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    report = json.loads((first / "config.json").read_text())["eval"]
    assert report["views"] == 24 and set(report["per_object"]) == {"snowman", "duck", "house", "robot"}
    assert load_judge(first)(torch.rand(2, 3, 32, 32)).shape == (2, 8)


def test_the_orient_reward_scores_views_at_their_own_azimuths_above_the_turned_ones():
    """reward=orient on ground-truth views of a fronted object: labelled with their cameras' azimuths they score
    higher than labelled with the opposite ones, and the gradient reaches every view. Without azimuths: an error."""
    from threedistill.rewards import RewardConfig, load_reward

    reward = load_reward(RewardConfig(name="orient"))
    azimuths = torch.tensor([30.0, 120.0, 210.0, 300.0])
    cams = orbit_cameras(azimuths.tolist(), [15.0] * 4, 2.9)
    for subject in ("blue duck", "green snowman"):
        images = ToyTruth(subject, False).render(cams, 64, 64)["rgb"].clone().requires_grad_(True)
        right = reward.score(images, subject, azimuths=azimuths)
        assert float(right) > float(reward.score(images.detach(), subject, azimuths=azimuths + 180.0)) + 1.0
        right.backward()
        assert torch.isfinite(images.grad).all() and (images.grad.flatten(1).abs().sum(1) > 0).all()
    with pytest.raises(ThreeDistillError, match="needs each view's camera azimuth"):
        reward.score(images.detach(), "a blue duck")


def test_a_run_with_the_orient_reward_logs_its_term_and_trains_with_it(tmp_path):
    from threedistill.workflows.generate import generate

    def run(name, extra):
        return generate(prompt="a red duck", steps=2, seed=0, out=str(tmp_path / name), overrides=FAST + extra,
                        progress=False, log=lambda s: None)  # fmt: skip

    plain, rewarded = run("plain", []), run("rewarded", ["reward.name=orient"])
    rows = [json.loads(line) for line in (rewarded.dir / "log.jsonl").read_text().splitlines()]
    assert any(isinstance(r.get("loss_reward"), float) for r in rows)
    assert not torch.equal(plain.model.sh, rewarded.model.sh)  # the term moved the colours
