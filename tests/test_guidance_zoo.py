"""Every guidance method against the identities of its guidance_spec.md section, on the analytic Gaussian prior
(exact epsilon in closed form) or, for the LoRA methods, on the embedded toy prior."""

import math

import pytest
import torch

from threedistill.cameras import orbit_cameras
from threedistill.errors import ConfigError, UnknownNameError
from threedistill.guidance import GUIDANCE, GuidanceConfig
from threedistill.guidance.base import pixel_clip
from threedistill.guidance.bsd import min_norm_weight
from threedistill.priors.analytic import AnalyticGaussianPrior

CAMS = orbit_cameras([0.0, 90.0], 10.0, 3.0)


@pytest.fixture
def prior():
    return AnalyticGaussianPrior(resolution=8)


@pytest.fixture
def point_mass():
    """A teacher whose data is a single image per prompt: every deterministic ODE step is exact."""
    return AnalyticGaussianPrior(resolution=8, data_std=0.0)


def build(prior, name, **kw):
    cls = GUIDANCE.get(name)
    return cls(prior, cls.config_class(view_dependent_prompting=False, **kw))


def draws(seed=0, shape=(2, 3, 8, 8), t=(300, 700)):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen) * 2 - 1, torch.randn(shape, generator=gen), torch.tensor(t)


def eps_pair(prior, state, x_t, t):
    cond = state.conditional(CAMS[: x_t.shape[0]])
    return prior.predict_noise(x_t, t, cond), prior.predict_noise(x_t, t, state.empty(x_t.shape[0]))


# ---------------------------------------------------------------- ASD (spec 4.6)
def test_asd_without_shift_is_the_classifier_score(prior):
    x, noise, t = draws()
    g = build(prior, "asd", plus_ratio=0.0, guidance_scale=7.5)
    state = g.prompt_state("a cat")
    eps_y, eps_u = eps_pair(prior, state, prior.add_noise(x, noise, t), t)
    expected = g.weight(t) * 6.5 * (eps_y - eps_u)
    assert torch.allclose(g.gradient(x, CAMS, state, 0, t, noise), expected, atol=1e-5)


def test_asd_shift_stays_in_range(prior):
    g = build(prior, "asd", plus_ratio=0.5)
    t = torch.arange(0, 1000)
    for u in (None, torch.rand(1000, generator=torch.Generator().manual_seed(1))):
        plus = g.shifted_timesteps(t, 0, u)
        assert ((plus >= t.clamp_min(1)) & (plus <= 999)).all()
    assert (g.shifted_timesteps(t, 0, None)[600:999] > t[600:999]).all()  # a real shift above the window's lower end


# ---------------------------------------------------------------- CSD (spec 5.1) and CSM (5.2)
def test_csd_coefficients_reproduce_sds(prior):
    x, noise, t = draws()
    s = 7.5
    csd = build(
        prior,
        "csd",
        coef_cond=s,
        coef_negative=1 - s,
        coef_uncond=0.0,
        coef_noise=-1.0,
        grad_normalize=False,
        weighting="sds",
        negative_prompt="a dog",
    )
    sds = GUIDANCE.build(
        "sds", prior, GuidanceConfig(guidance_scale=s, view_dependent_prompting=False, negative_prompt="a dog")
    )
    state = csd.prompt_state("a cat")
    assert torch.allclose(
        csd.gradient(x, CAMS, state, 0, t, noise), sds.gradient(x, CAMS, state, 0, t, noise), atol=1e-5
    )


def test_pure_csd_vanishes_when_the_prompt_is_empty_and_normalises(prior):
    x, noise, t = draws()
    csd = build(prior, "csd", coef_negative=0.0, coef_uncond=-1.0, grad_normalize=False)
    state = csd.prompt_state("a cat")
    assert csd.gradient(x, CAMS, state, 0, t, noise).abs().max() > 1e-3
    state.conditional = lambda cams: state.empty(len(cams))  # y := empty
    assert csd.gradient(x, CAMS, state, 0, t, noise).abs().max() == 0
    normalised = build(prior, "csd")
    assert abs(float(normalised.gradient(x, CAMS, normalised.prompt_state("a cat"), 0, t, noise).norm()) - 1) < 1e-5


def test_csm_with_forward_noising_is_scaled_csd(prior):
    x, noise, t = draws()
    csm = build(prior, "csm", inversion="noise", guidance_scale=5.0, weighting="uniform")
    csd = build(prior, "csd", coef_negative=0.0, coef_uncond=-1.0, grad_normalize=False, weighting="uniform")
    state = csm.prompt_state("a cat")
    assert torch.allclose(
        csm.gradient(x, CAMS, state, 0, t, noise), 5.0 * csd.gradient(x, CAMS, state, 0, t, noise), atol=1e-5
    )
    ddim = build(prior, "csm", guidance_scale=5.0, weighting="uniform")
    assert not torch.allclose(ddim.gradient(x, CAMS, state, 0, t, noise), csm.gradient(x, CAMS, state, 0, t, noise))


# ---------------------------------------------------------------- ISM (spec 6.6) and TSM (7.6)
def test_ism_with_forward_noising_is_sds_with_sigma_over_alpha(prior):
    x, noise, t = draws()
    ism = build(prior, "ism", inversion="noise", guidance_scale=7.5)
    sds = GUIDANCE.build(
        "sds", prior, GuidanceConfig(guidance_scale=7.5, weighting="sigma_over_alpha", view_dependent_prompting=False)
    )
    state = ism.prompt_state("a cat")
    assert torch.allclose(
        ism.gradient(x, CAMS, state, 0, t, noise), sds.gradient(x, CAMS, state, 0, t, noise), atol=1e-5
    )
    alpha, sigma = prior.alpha_sigma(t)
    assert torch.allclose(ism.weight(t), sigma / alpha)


@pytest.mark.parametrize("name", ["ism", "tsm"])
def test_interval_methods_vanish_for_a_point_mass_teacher_on_the_empty_prompt(point_mass, name):
    """Every DDIM step is exact for a point mass, so the trajectory's target equals the teacher at x_t."""
    x, noise, t = draws(t=(500, 500))
    g = build(point_mass, name, guidance_scale=1.0)
    state = g.prompt_state("a cat")
    assert g.gradient(x, CAMS, state, 0, t, noise).abs().max() > 1e-2  # the prompt's own mean pulls
    state.conditional = lambda cams: state.empty(len(cams))
    assert g.gradient(x, CAMS, state, 0, t, noise).abs().max() < 1e-4


def test_tsm_with_gamma_one_is_ism_and_differs_otherwise(prior):
    x, noise, t = draws(t=(640, 640))
    ism, tsm = build(prior, "ism"), build(prior, "tsm", gamma=1.0)
    state = ism.prompt_state("a cat")
    assert torch.equal(tsm.gradient(x, CAMS, state, 0, t, noise), ism.gradient(x, CAMS, state, 0, t, noise))
    other = build(prior, "tsm", gamma=0.3)
    mu = other.target_timesteps(t, other.interval_start(t, 0))
    assert int(mu[0]) == round(540 + 100 * math.sqrt(1 - 0.09))
    assert not torch.allclose(other.gradient(x, CAMS, state, 0, t, noise), ism.gradient(x, CAMS, state, 0, t, noise))


def test_ism_uses_one_timestep_per_step_and_offset_noise(prior):
    g = build(prior, "ism")
    t = g.sample_timesteps(4, 0, torch.Generator().manual_seed(0))
    assert (t == t[0]).all()
    noise = g.sample_noise(torch.zeros(64, 3, 8, 8), 0, torch.Generator().manual_seed(0))
    assert noise.mean(dim=(0, 2, 3)).abs().max() > 0.02  # the shared per-channel offset


def test_pixel_gradient_clipping_keeps_directions():
    g = torch.randn(2, 3, 5, 5) * 0.2
    clipped = pixel_clip(g, 0.05)
    assert clipped.abs().amax(dim=1).max() <= 0.05 + 1e-7
    cos = torch.nn.functional.cosine_similarity(g, clipped, dim=1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)
    small = torch.full((1, 3, 2, 2), 0.01)
    assert torch.equal(pixel_clip(small, 0.05), small)


def test_pixel_gradient_clipping_hook_acts_on_the_render(prior):
    g = build(prior, "sds", pixel_grad_clip=0.001, guidance_scale=7.5)
    rgb = torch.rand(2, 3, 8, 8, requires_grad=True)
    g(rgb, CAMS, g.prompt_state("a cat"), 0, torch.Generator().manual_seed(0))["loss_sds"].backward()
    assert rgb.grad.abs().amax(dim=1).max() <= 0.001 + 1e-8


# ---------------------------------------------------------------- BSD (spec 8.6)
def test_bsd_weight_matches_a_brute_force_line_search():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        g_c = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
        g_d = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64) + 0.5
        a = min_norm_weight(g_c, g_d).flatten()
        grid = torch.linspace(0, 1, 10001, dtype=torch.float64)
        for b in range(3):
            norms = (grid[:, None] * g_c[b].flatten() + (1 - grid[:, None]) * g_d[b].flatten()).norm(dim=1)
            assert abs(float(a[b]) - float(grid[norms.argmin()])) < 2e-4
    e1, e2 = torch.zeros(1, 4), torch.zeros(1, 4)
    e1[0, 0], e2[0, 1] = 2.0, 2.0
    assert float(min_norm_weight(e1, e2)) == pytest.approx(0.5)


def test_bsd_gradient_is_the_balanced_combination(prior):
    x, noise, t = draws(t=(400, 400))
    g = build(prior, "bsd")
    state = g.prompt_state("a cat")
    eps_y, eps_u = eps_pair(prior, state, prior.add_noise(x, noise, t), t)
    g_c, g_d = 15 * (eps_y - eps_u), eps_u
    a = min_norm_weight(g_c, g_d)
    expected = prior.alpha_sigma(t)[0] * (a * g_c + (1 - a) * g_d)
    assert torch.allclose(g.gradient(x, CAMS, state, 0, t, noise), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="guidance.variant must be one of default, auto"):
        GUIDANCE.get("bsd").config_class(variant="automatic")


# ---------------------------------------------------------------- CDS (spec 11.5)
def test_cds_vanishes_for_a_point_mass_teacher(point_mass):
    x, noise, t = draws(t=(600, 800))
    for scale in (1.0, 7.5):
        g = build(point_mass, "cds", guidance_scale=scale)
        grad = g.gradient(x, CAMS, g.prompt_state("a cat"), 0, t, noise, t_early=torch.tensor([300, 450]))
        assert grad.abs().max() < 1e-4


def test_cds_noise_is_drawn_once_and_timesteps_follow_the_schedule(prior):
    g = build(prior, "cds")
    gen = torch.Generator().manual_seed(0)
    first = g.sample_noise(torch.zeros(2, 3, 8, 8), 0, gen)
    assert torch.equal(first[0], first[1]) and torch.equal(g.sample_noise(torch.zeros(2, 3, 8, 8), 5, gen), first)
    assert g.earlier_timestep(0) == 700 and g.earlier_timestep(300) == 100
    t = g.sample_timesteps(500, 0, gen)
    assert (t >= 800).all() and (t <= 980).all()


# ---------------------------------------------------------------- NFSD (spec 13.2)
def test_nfsd_domain_term_switches_at_t_200(prior):
    x, noise, _ = draws()
    t = torch.tensor([100, 500])
    with_neg = build(prior, "nfsd", negative_prompt="a dog", guidance_scale=7.5)
    without = build(prior, "nfsd", guidance_scale=7.5)
    g_neg = with_neg.gradient(x, CAMS, with_neg.prompt_state("a cat"), 0, t, noise)
    g_none = without.gradient(x, CAMS, without.prompt_state("a cat"), 0, t, noise)
    assert torch.allclose(g_neg[0], g_none[0], atol=1e-6) and not torch.allclose(g_neg[1], g_none[1])
    state = without.prompt_state("a cat")
    eps_y, eps_e = eps_pair(prior, state, prior.add_noise(x, noise, t), t)
    assert torch.allclose(g_none[1], (without.weight(t) * 7.5 * (eps_y - eps_e))[1], atol=1e-5)


def test_nfsd_with_perp_neg_has_sds_perp_neg_condition_term(prior):
    """guidance.perp_neg=true (the Gaussians' default) reaches NFSD's condition term as it reaches SDS's: for
    t >= 200 and no negative prompt, SDS's G minus NFSD's is w(t) (eps_empty - noise) with Perp-Neg as without it,
    and Perp-Neg changes NFSD's G (cameras off the front and back, where its negatives weigh)."""
    x, noise, _ = draws()
    t = torch.tensor([300, 700])
    cams = orbit_cameras([30.0, 150.0], 10.0, 3.0)
    grads = []
    for perp in (False, True):
        nfsd, sds = (build(prior, name, guidance_scale=7.5, perp_neg=perp) for name in ("nfsd", "sds"))
        state = nfsd.prompt_state("a cat")
        g_n = nfsd.gradient(x, cams, state, 0, t, noise)
        g_s = sds.gradient(x, cams, sds.prompt_state("a cat"), 0, t, noise)
        eps_e = prior.predict_noise(prior.add_noise(x, noise, t), t, state.empty(2))
        assert torch.allclose(g_s - g_n, nfsd.weight(t).view(-1, 1, 1, 1) * (eps_e - noise), atol=1e-5)
        grads.append(g_n)
    assert (grads[1] - grads[0]).abs().max() > 1e-3
    assert build(prior, "nfsd", perp_neg=True).teacher_evals == 4
    assert build(prior, "nfsd", perp_neg=True, negative_prompt="a dog").teacher_evals == 5


@pytest.mark.parametrize("name", ["bsd", "csm"])
def test_a_method_without_a_perp_neg_form_says_it_ignores_perp_neg(prior, name):
    with pytest.warns(UserWarning, match=f"{name} has no Perp-Neg form: guidance.perp_neg=true is ignored"):
        build(prior, name, perp_neg=True)


# ---------------------------------------------------------------- VSD / ESD (spec 2.6, 3.4)
@pytest.fixture(scope="module")
def toy_prior():
    from threedistill.priors import load_prior

    return load_prior(None)


def particle(toy_prior, name, **kw):
    torch.manual_seed(0)
    return build(toy_prior, name, **kw)


def toy_draws(t=(300, 700)):
    gen = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1, torch.randn(2, 3, 32, 32, generator=gen), torch.tensor(t)


def test_vsd_vanishes_when_the_particle_model_is_the_teacher(toy_prior):
    x, noise, t = toy_draws()
    g = particle(toy_prior, "vsd", guidance_scale=1.0)
    state = g.prompt_state("a red cone")
    assert g.gradient(x, CAMS, state, 0, t, noise).abs().max() > 1e-3  # the random camera MLP differs
    torch.nn.init.zeros_(g.camera_mlp[2].weight)
    torch.nn.init.zeros_(g.camera_mlp[2].bias)
    assert g.gradient(x, CAMS, state, 0, t, noise).abs().max() < 1e-5


def test_esd_is_vsd_at_lambda_zero_and_affine_in_lambda(toy_prior):
    x, noise, t = toy_draws()
    vsd = particle(toy_prior, "vsd")
    state = vsd.prompt_state("a red cone")
    grads = {}
    for lam in (0.0, 0.5, 1.0):
        esd = particle(toy_prior, "esd", entropy_lambda=lam)
        grads[lam] = esd.gradient(x, CAMS, state, 0, t, noise)
    assert torch.equal(grads[0.0], vsd.gradient(x, CAMS, state, 0, t, noise))
    assert torch.allclose(grads[0.5], 0.5 * (grads[0.0] + grads[1.0]), atol=1e-5)
    assert not torch.allclose(grads[0.0], grads[1.0])


def test_vsd_particle_model_learns_and_only_it_trains(toy_prior):
    g = particle(toy_prior, "vsd", camera_dropout=0.0)
    trainable = [n for n, p in g.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("camera_mlp") for n in trainable)
    before = {n: p.detach().clone() for n, p in g.named_parameters() if p.requires_grad}
    opt = torch.optim.Adam([p for p in g.parameters() if p.requires_grad], lr=3e-3)
    x = toy_prior.to_diffusion_space(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))
    state = g.prompt_state("a red cone")

    def loss_at(seed):  # the LoRA loss on a fixed latent with fixed draws
        return g.auxiliary_losses(x, CAMS, state, 0, torch.Generator().manual_seed(seed))["loss_lora"]

    start = float(sum(loss_at(s).detach() for s in range(4)))
    for step in range(40):
        opt.zero_grad()
        loss_at(step % 4).backward()
        opt.step()
    assert float(sum(loss_at(s).detach() for s in range(4))) < 0.8 * start
    assert any(not torch.equal(before[n], p) for n, p in g.named_parameters() if n in before)
    assert all(p.grad is None for p in toy_prior.unet.parameters())


def test_particle_methods_need_a_diffusers_prior(prior):
    with pytest.raises(ConfigError, match="vsd trains a LoRA copy of the prior's UNet"):
        build(prior, "vsd")


# ---------------------------------------------------------------- SDEdit targets (DreamGaussian's refinement)
def test_sdedit_pulls_to_the_point_mass_for_any_timestep_and_step_count(point_mass):
    """Every DDIM step is exact for a point mass, so the denoised target is the prompt's mean image."""
    x, noise, t = draws(t=(150, 800))
    state = build(point_mass, "sdedit").prompt_state("a cat")
    mu = point_mass.mean_for("a cat").expand_as(x)
    for steps in (1, 3, 8):
        g = build(point_mass, "sdedit", guidance_scale=1.0, denoise_steps=steps)
        assert torch.allclose(g.gradient(x, CAMS, state, 0, t, noise), x - mu, atol=1e-4), steps


def test_sdedit_with_one_step_is_sds_weighted_sigma_over_alpha(prior):
    """x - x0_hat(x_t) = (sigma/alpha)(eps_guided - eps): one denoising step is SDS with w = sigma/alpha."""
    x, noise, t = draws()
    g = build(prior, "sdedit", guidance_scale=7.5, denoise_steps=1)
    sds = build(prior, "sds", guidance_scale=7.5, weighting="sigma_over_alpha")
    state = g.prompt_state("a cat")
    assert torch.allclose(g.gradient(x, CAMS, state, 0, t, noise), sds.gradient(x, CAMS, state, 0, t, noise), atol=1e-4)


def test_sdedit_target_follows_the_probability_flow_to_the_data(prior):
    """For Gaussian data N(mu, s^2) the probability-flow ODE keeps (x - mu) / std standardised: x_t maps to
    mu + s (x_t - alpha mu) / sqrt(alpha^2 s^2 + sigma^2). More DDIM steps approach that map."""
    x, noise, t = draws(t=(400, 700))
    state = build(prior, "sdedit").prompt_state("a cat")
    mu = prior.mean_for("a cat")
    alpha, sigma = prior.alpha_sigma(t)
    s = prior.data_std
    exact = mu + s * (prior.add_noise(x, noise, t) - alpha * mu) / (alpha**2 * s**2 + sigma**2).sqrt()
    errors = []
    for steps in (1, 4, 100):
        g = build(prior, "sdedit", guidance_scale=1.0, denoise_steps=steps)
        errors.append(float((x - g.gradient(x, CAMS, state, 0, t, noise) - exact).abs().max()))
    assert errors[2] < 0.05 and errors[0] > errors[1] > 20 * errors[2], errors
    assert g.teacher_evals == 200


# ---------------------------------------------------------------- configs
def test_method_configs_check_their_values():
    for name, kw, match in [
        ("asd", {"plus_ratio": -1}, "plus_ratio"),
        ("ism", {"inversion": "random"}, "inversion"),
        ("tsm", {"gamma": 2.0}, "gamma"),
        ("esd", {"entropy_lambda": 1.5}, "entropy_lambda"),
        ("csd", {"coef_cond": [1, 2]}, "coef_cond"),
        ("vsd", {"lora_rank": 0}, "lora_rank"),
        ("sdedit", {"denoise_steps": 0}, "denoise_steps"),
    ]:
        with pytest.raises(ConfigError, match=match):
            GUIDANCE.get(name).config_class(**kw)


# ---------------------------------------------------------------- whole runs
def _run(tmp_path, representation, method, steps=3, extra=(), **kw):
    from test_generate import FAST

    from threedistill.workflows.generate import generate

    return generate(
        prompt="a red cone",
        representation=representation,
        guidance=method,
        steps=steps,
        seed=1,
        out=str(tmp_path),
        progress=False,
        log=lambda s: None,
        overrides=FAST[representation] + ["trainer.preview_every=0", "trainer.log_every=1", *extra],
        **kw,
    )


@pytest.mark.parametrize("representation", ["nerf", "gaussians"])
def test_every_method_runs_without_nan(tmp_path, representation):
    import json

    for method in GUIDANCE.names():
        run = _run(tmp_path / method, representation, method, extra=["trainer.checkpoint_every=0"])
        logs = [json.loads(line) for line in (run.dir / "log.jsonl").read_text().splitlines()]
        assert len(logs) == 3 and f"loss_{method}" in logs[-1], method
        assert all(math.isfinite(v) for row in logs for v in row.values()), method
        assert all(torch.isfinite(p).all() for p in run.model.parameters()), method
        assert json.loads((run.dir / "log.jsonl").read_text().splitlines()[-1])["grad_norm"] > 0, method


@pytest.mark.parametrize("method", ["cds", "vsd"])
def test_resume_restores_the_guidance_state(tmp_path, method):
    """CDS's fixed noise and VSD's LoRA + camera MLP live in the checkpoints: a resumed run ends bit-identical."""
    from test_generate import final_tensors

    from threedistill.workflows.generate import generate

    extra = ["trainer.checkpoint_every=2"]
    full = _run(tmp_path / "a", "gaussians", method, steps=4, extra=extra)
    cut = _run(tmp_path / "b", "gaussians", method, steps=4, extra=extra, stop_at=3)
    resumed = generate(resume=cut.dir, progress=False, log=lambda s: None)
    a, b = final_tensors(full), final_tensors(resumed)
    assert any(k.startswith("guidance.") for k in a) and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_method_parameters_are_checked_per_method(tmp_path):
    from threedistill.workflows.generate import generate

    run = _run(tmp_path / "ok", "gaussians", "asd", steps=1, extra=["guidance.plus_ratio=0.2"])
    assert run.config.guidance.plus_ratio == 0.2 and run.config.guidance.guidance_scale == 7.5
    assert run.config.guidance.max_step_percent == [0, 0.98, 0.5, 300]  # ASD's own window
    sds = _run(tmp_path / "sds", "gaussians", "sds", steps=1)
    assert (
        sds.config.guidance.guidance_scale == 7.5 and sds.config.guidance.perp_neg
    )  # sds(-gaussians).yaml + gaussians.yaml
    with pytest.raises(
        ConfigError,
        match=r"guidance 'sds' has no parameter 'plus_ratio' \(it belongs to asd\); "
        r"its parameters: .*guidance_scale",
    ):
        _run(tmp_path / "bad", "gaussians", "sds", extra=["guidance.plus_ratio=0.2"])
    with pytest.raises(ConfigError, match="guidance 'ism' has no parameter 'gama'"):
        _run(tmp_path / "bad", "gaussians", "ism", extra=["guidance.gama=0.2"])
    with pytest.raises(UnknownNameError, match="unknown guidance .vds.; known: asd"):
        _run(tmp_path / "bad", "gaussians", "vds")
    with pytest.raises(ConfigError, match="cannot resume: .* has no parameter 'plus_ratio'"):
        generate(resume=sds.dir, overrides=["guidance.plus_ratio=0.1"], progress=False, log=lambda s: None)
