"""3DGS-MCMC as a strategy of the Gaussians (`gaussians.strategy=mcmc`): the relocation formula keeps the render,
dead Gaussians move onto live ones, growth stops at the cap, the position noise moves only transparent Gaussians,
and a fit with it runs from the CLI's path, resumes to the same result and reports its regularisers."""

import json
import math

import pytest
import torch
from conftest import FIT_FAST

from threedistill.cameras import Cameras, orbit_cameras
from threedistill.errors import ConfigError
from threedistill.representations.gaussians import Gaussians, GaussiansConfig
from threedistill.representations.strategies import McmcStrategyConfig
from threedistill.representations.strategies.mcmc import relocation
from threedistill.scenes import load_scene
from threedistill.scenes.views import PhotometricLoss, SceneViews
from threedistill.trainer import Trainer, TrainerConfig
from threedistill.workflows.fit import fit

QUIET = dict(progress=False, log=lambda s: None)


def one_camera() -> Cameras:
    return orbit_cameras([0.0], [0.0], [3.0])


def gaussians(n: int, opacity: float, scale: float = 0.2, **mcmc) -> Gaussians:
    cfg = GaussiansConfig(num_points=n, strategy="mcmc", mcmc=McmcStrategyConfig(**mcmc), max_points=10**6)
    model = Gaussians(cfg)
    with torch.no_grad():
        model.means.zero_()
        model.log_scales.fill_(math.log(scale))
        model.opacity_logits.fill_(math.log(opacity / (1 - opacity)))
    return model


def alpha(model: Gaussians) -> torch.Tensor:
    with torch.no_grad():
        return model.render(one_camera(), 48, 48)["alpha"][0, 0]


@pytest.mark.parametrize("opacity", [0.6, 0.8])
def test_relocating_a_gaussian_into_copies_keeps_its_render(opacity):
    """N copies at the relocated opacity and scale render close to the one Gaussian; at the relocated opacity alone
    (scale kept) or at the original opacity they do not. The rest is the rasterizer's 1/255 alpha cut-off."""
    one = gaussians(1, opacity)
    target = alpha(one)
    for n in (2, 4):
        o, s = relocation(one.opacities.detach(), one.scales.detach(), torch.tensor([n]))
        assert (1 - (1 - o) ** n).item() == pytest.approx(opacity, rel=1e-6)  # same opacity at the centre
        err = (alpha(gaussians(n, float(o[0]), float(s[0, 0]))) - target).abs().max()
        scale_kept = (alpha(gaussians(n, float(o[0]))) - target).abs().max()
        naive = (alpha(gaussians(n, opacity)) - target).abs().max()
        assert err < 0.04 and 2 * err < scale_kept < naive, (n, float(err), float(scale_kept), float(naive))
    o, s = relocation(one.opacities.detach(), one.scales.detach(), torch.tensor([1]))  # one copy: unchanged
    assert torch.allclose(o, one.opacities) and torch.allclose(s, one.scales)


def optimiser(model: Gaussians) -> torch.optim.Adam:
    opt = torch.optim.Adam(model.param_groups())
    model.means.grad = torch.ones_like(model.means)
    for name in model.PARAM_NAMES:
        getattr(model, name).grad = torch.ones_like(getattr(model, name))
    opt.step()  # non-zero moments everywhere
    return opt


def test_dead_gaussians_are_relocated_onto_live_ones_and_their_moments_zeroed():
    model = gaussians(200, 0.5)
    with torch.no_grad():
        model.means.copy_(torch.randn(200, 3, generator=torch.Generator().manual_seed(0)))
        model.opacity_logits[:50] = -10.0  # dead
    opt = optimiser(model)
    live_means = model.means[50:].detach().clone()
    moved = model.strategy.relocate(model, opt, torch.Generator().manual_seed(1))
    assert moved == 50 and len(model) == 200
    assert bool((model.opacities > model.cfg.mcmc.min_opacity).all())
    # every relocated Gaussian sits on a live one, which now shares its opacity
    assert bool((model.means[:50, None].detach() == live_means[None]).all(-1).any(-1).all())
    assert float(model.opacities[:50].detach().max()) < 0.5
    assert bool((opt.state[model.means]["exp_avg"][:50] == 0).all())


def test_growth_adds_its_share_and_stops_at_the_cap():
    model = gaussians(100, 0.5, cap_max=112, grow_rate=0.05)
    with torch.no_grad():
        model.means.copy_(torch.randn(100, 3, generator=torch.Generator().manual_seed(0)))
    opt = optimiser(model)
    gen = torch.Generator().manual_seed(0)
    assert model.strategy.add(model, opt, gen) == 5 and len(model) == 105
    assert model.strategy.add(model, opt, gen) == 5 and len(model) == 110
    assert model.strategy.add(model, opt, gen) == 2 and len(model) == 112
    assert model.strategy.add(model, opt, gen) == 0
    assert len(opt.state[model.means]["exp_avg"]) == 112  # the optimiser follows the new rows


def test_position_noise_moves_transparent_gaussians_and_leaves_opaque_ones():
    model = gaussians(20, 0.5)
    with torch.no_grad():
        model.opacity_logits[:10] = math.log(0.001 / 0.999)
    before = model.means.detach().clone()
    model.strategy.inject_noise(model, 1.0, torch.Generator().manual_seed(0))
    step = (model.means.detach() - before).norm(dim=-1)
    assert float(step[:10].min()) > 1e-3 and float(step[10:].max()) < 1e-6


def test_bad_mcmc_settings_are_one_line_errors():
    for bad in (dict(cap_max=0), dict(grow_rate=2.0), dict(min_opacity=0.0), dict(noise_lr=-1.0)):
        with pytest.raises(ConfigError, match="gaussians.mcmc"):
            McmcStrategyConfig(**bad)


def test_mcmc_trainer_relocates_grows_and_logs_its_regularisers(captured):
    scene = load_scene(captured[0])
    cfg = GaussiansConfig(
        strategy="mcmc", sh_degree=1, mcmc=McmcStrategyConfig(refine_start=5, refine_stop=31, refine_every=10)
    )
    model = Gaussians.from_points(scene.points[:600], scene.point_colours[:600], cfg)
    views = SceneViews(scene, scene.train_indices, 24, torch.device("cpu"))
    events, logs = [], []
    trainer = Trainer(TrainerConfig(steps=30, batch_size=1, seed=0), model, PhotometricLoss(), "", views=views)
    trainer.log = lambda line: events.append(json.loads(line)) if line.startswith("{") else None
    trainer.fit(progress=False, on_step=lambda step, row: logs.append(row))
    rounds = [e["mcmc"] for e in events if "mcmc" in e]
    assert len(rounds) == 3 and rounds[-1]["count"] == len(model) > 600 * 1.1, rounds
    assert {"loss_opacity_l1", "loss_scale_l1"} <= set(logs[-1]), logs[-1]


def test_an_mcmc_fit_resumes_to_the_uninterrupted_result(captured, tmp_path):
    scene = str(captured[0])
    over = [*FIT_FAST, "gaussians.strategy=mcmc", "gaussians.mcmc.refine_start=2", "gaussians.mcmc.refine_every=3"]
    over.append("trainer.checkpoint_every=5")
    whole = fit(scene=scene, steps=12, seed=0, out=str(tmp_path / "a"), overrides=over, **QUIET)
    assert whole.config.gaussians.mcmc.refine_stop == 8  # 2/3 of a short fit, as the capture strategy's
    part = fit(scene=scene, steps=12, seed=0, out=str(tmp_path / "b"), overrides=over, stop_at=7, **QUIET)
    resumed = fit(resume=part.dir, **QUIET)
    assert resumed.trainer.step == 12
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
