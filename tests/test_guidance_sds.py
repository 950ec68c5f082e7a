import pytest
import torch

from threedistill.cameras import orbit_cameras
from threedistill.errors import ConfigError, UnknownNameError
from threedistill.guidance import GUIDANCE, GuidanceConfig, inject_gradient
from threedistill.priors.analytic import AnalyticGaussianPrior


@pytest.fixture
def prior():
    return AnalyticGaussianPrior(resolution=8)


def test_inject_gradient_gives_grad_over_batch():
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    g = torch.randn(3, 4, 5, 5)
    inject_gradient(x, g).backward()
    assert torch.allclose(x.grad, g / 3, atol=1e-6)


def sds(prior, scale=1.0, **kw):
    return GUIDANCE.build(
        "sds", prior, GuidanceConfig(guidance_scale=scale, weighting="uniform", view_dependent_prompting=False, **kw)
    )


def test_sds_with_cfg_one_is_the_x0_residual(prior):
    """Spec 1.7: with s = 1 and w = 1, G = (alpha/sigma)(x - x0_hat(eps(x_t; y)))."""
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    noise = torch.randn_like(x)
    t = torch.tensor([250, 700])
    x_t = prior.add_noise(x, noise, t)
    cond = prior.encode_prompt(["a cat", "a cat"])
    guidance = sds(prior)
    grad = guidance.gradient(x, orbit_cameras([0, 0], 0.0, 3.0), guidance.prompt_state("a cat"), 0, t, noise)
    alpha, sigma = prior.alpha_sigma(t)
    x0_hat = prior.predict_x0(x_t, prior.predict_noise(x_t, t, cond), t)
    assert torch.allclose(grad, alpha / sigma * (x - x0_hat), atol=1e-5)


def test_sds_is_zero_when_teacher_recovers_the_noise():
    """Spec 1.7: a teacher whose eps is exactly the injected noise gives G = 0. A Gaussian teacher with
    vanishing data spread centred on x itself is such a teacher."""
    prior = AnalyticGaussianPrior(resolution=8, data_std=0.0)
    x = prior.mean_for("a cat")[None]
    noise = torch.randn_like(x)
    t = torch.tensor([500])
    guidance = sds(prior)
    grad = guidance.gradient(x, orbit_cameras(0.0, 0.0, 3.0), guidance.prompt_state("a cat"), 0, t, noise)
    assert grad.abs().max() < 1e-4


def test_sds_guidance_pulls_renders_toward_the_prompt_mean(prior):
    """Gradient descent on SDS moves a render toward the analytic data mean of its prompt."""
    guidance = GUIDANCE.build("sds", prior, GuidanceConfig(guidance_scale=1.0, view_dependent_prompting=False))
    state = guidance.prompt_state("a cat")
    target = prior.from_diffusion_space(prior.mean_for("a cat")[None])
    rgb = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)
    opt = torch.optim.SGD([rgb], lr=0.05)
    gen = torch.Generator().manual_seed(0)
    start = (rgb.detach() - target).abs().mean()
    cams = orbit_cameras(0.0, 0.0, 3.0)
    for step in range(300):
        opt.zero_grad()
        out = guidance(rgb, cams, state, step, gen)
        out["loss_sds"].backward()
        opt.step()
    assert (rgb.detach() - target).abs().mean() < 0.5 * start


def test_timestep_window_schedule_and_sqrt_anneal(prior):
    g = GUIDANCE.build("sds", prior, GuidanceConfig(min_step_percent=0.02, max_step_percent=[0, 0.98, 0.5, 100]))
    assert g.timestep_window(0) == (20, 980) and g.timestep_window(100) == (20, 500)
    t = g.sample_timesteps(1000, 0, torch.Generator().manual_seed(0))
    assert t.min() >= 20 and t.max() <= 980
    hifa = GUIDANCE.build(
        "sds",
        prior,
        GuidanceConfig(min_step_percent=0.3, max_step_percent=0.98, sqrt_anneal=True, trainer_max_steps=100),
    )
    assert hifa.timestep_window(0) == (980, 980) and hifa.timestep_window(100) == (300, 300)
    assert abs(hifa.timestep_window(25)[0] - 1000 * (0.3 + 0.68 * 0.5)) <= 1


def test_weightings_and_clipping(prior):
    t = torch.tensor([100, 900])
    alpha, sigma = prior.alpha_sigma(t)
    for name, expected in [("sds", sigma**2), ("uniform", torch.ones_like(sigma)), ("fantasia3d", alpha * sigma**2)]:
        assert torch.allclose(GUIDANCE.build("sds", prior, GuidanceConfig(weighting=name)).weight(t), expected)
    clipped = GUIDANCE.build("sds", prior, GuidanceConfig(grad_clip=0.1)).finish_gradient(
        torch.tensor([1.0, -1.0, float("nan")]), 0
    )
    assert torch.allclose(clipped, torch.tensor([0.1, -0.1, 0.0]))


def test_bad_guidance_names_and_settings(prior):
    with pytest.raises(
        UnknownNameError,
        match="unknown guidance 'sdss'; known: asd, bsd, cds, csd, csm, esd, ism, nfsd, sdedit, sds, tsm, vsd",
    ):
        GUIDANCE.get("sdss")
    with pytest.raises(ConfigError, match="weighting must be one of"):
        GuidanceConfig(weighting="linear")
    with pytest.raises(ConfigError, match="prompt is empty"):
        GUIDANCE.build("sds", prior).prompt_state("   ")
    with pytest.raises(ConfigError, match=r"guidance.guidance_scale: expected a number or a schedule"):
        GuidanceConfig(guidance_scale=[1, 2])
    with pytest.raises(ConfigError, match=r"guidance.max_step_percent"):
        GuidanceConfig(max_step_percent="high")


def test_guidance_scale_follows_its_schedule(prior):
    # With a schedule the CFG scale changes the gradient between steps exactly as a fixed scale would.
    from threedistill.cameras import orbit_cameras

    rgb = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cams = orbit_cameras(0.0, 10.0, 2.9)

    def grad(scale, step):
        guidance = GUIDANCE.build("sds", prior, GuidanceConfig(guidance_scale=scale))
        x = rgb.clone().requires_grad_(True)
        guidance(x, cams, guidance.prompt_state("a red cone"), step, torch.Generator().manual_seed(1))[
            "loss_sds"
        ].backward()
        return x.grad

    schedule = [0, 20.0, 5.0, 100]
    assert torch.allclose(grad(schedule, 0), grad(20.0, 0))
    assert torch.allclose(grad(schedule, 50), grad(12.5, 50))
    assert torch.allclose(grad(schedule, 200), grad(5.0, 200))
    assert not torch.allclose(grad(20.0, 0), grad(5.0, 0))


def test_perp_neg_weights_follow_the_azimuth(prior):
    from threedistill.guidance.perp_neg import perp_neg_embeddings

    cams = orbit_cameras([0.0, 90.0, 180.0, -45.0, 30.0], [10.0, 10.0, 10.0, 10.0, 70.0], 3.0)
    pos, negs, w = perp_neg_embeddings(prior, "a cat", cams)
    front, side, back, overhead = prior.encode_prompt(
        [f"a cat, {v} view" for v in ("front", "side", "back", "overhead")]
    )
    assert torch.allclose(pos[0], front) and torch.allclose(pos[1], side) and torch.allclose(pos[2], back)
    assert torch.allclose(pos[3], 0.5 * front + 0.5 * side) and torch.allclose(pos[4], overhead)
    # front: no push from its own prompt, away from the side; side: away from the front; back: away from both
    assert torch.allclose(w[0], torch.tensor([0.0, -1.5741]), atol=1e-3)
    assert torch.allclose(w[1], torch.tensor([0.0, -1.5741]), atol=1e-3) and torch.allclose(negs[1, 1], front)
    assert torch.allclose(w[2], torch.tensor([-0.394, -1.967]), atol=1e-3) and torch.equal(w[4], torch.zeros(2))


def test_perp_neg_is_cfg_plus_components_orthogonal_to_the_prompt(prior):
    from threedistill.guidance.perp_neg import perp_neg_eps, perpendicular

    a, b = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    assert (perpendicular(a, b) * b).flatten(1).sum(1).abs().max() < 1e-4
    x_t, t = torch.randn(2, 3, 8, 8), torch.tensor([300, 600])
    pos, uncond = prior.encode_prompt(["a cat", "a cat"]), prior.encode_prompt(["", ""])
    negs = torch.stack([prior.encode_prompt(["a dog", "a dog"]), prior.encode_prompt(["a cow", "a cow"])], 1)
    plain = prior.predict_noise_cfg(x_t, t, pos, uncond, 7.5)[0]
    assert torch.allclose(perp_neg_eps(prior, x_t, t, pos, negs, torch.zeros(2, 2), uncond, 7.5), plain, atol=1e-5)
    pushed = perp_neg_eps(prior, x_t, t, pos, negs, torch.tensor([[-1.0, 0.0], [-1.0, 0.0]]), uncond, 7.5)
    e_u = prior.predict_noise(x_t, t, uncond)
    d_pos, d_neg = plain - e_u, prior.predict_noise(x_t, t, negs[:, 0]) - e_u
    # the extra push is orthogonal to the prompt's direction and against the negative's
    extra = pushed - plain
    assert (extra * d_pos).flatten(1).sum(1).abs().max() < 1e-2 * d_pos.flatten(1).norm(dim=1).max() ** 2
    assert ((extra * d_neg).flatten(1).sum(1) < 0).all()
