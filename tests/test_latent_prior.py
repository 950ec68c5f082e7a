"""The embedded latent prior (assets/priors/toyworld-latent) and the latent branch of `t3d prior train`."""

import json

import numpy as np
import pytest
import torch

from threedistill.config import load_config
from threedistill.errors import ConfigError
from threedistill.priors import embedded_prior_path, load_prior
from threedistill.priors.sampling import sample_images
from threedistill.toyworld.training.common import PriorTrainConfig


@pytest.fixture(scope="module")
def latent_prior():
    return load_prior("toyworld-latent")


@pytest.fixture(scope="module")
def toy_renders():
    """Two toy-world views in [0, 1] at 32 px (a blue cone, a red duck from the front)."""
    from threedistill.cameras import orbit_cameras
    from threedistill.toyworld.render import render_toy

    cams = orbit_cameras([30.0], [15.0], 2.9)
    return torch.cat(
        [
            render_toy(obj, colour, cams, 32, 32, supersample=2)["rgb"]
            for obj, colour in (("cone", "blue"), ("duck", "red"))
        ]
    )


def test_shipped_latent_prior_loads_as_latent(latent_prior):
    assert latent_prior.latent and latent_prior.channels == 4
    assert latent_prior.native_resolution == 32 and latent_prior.vae_scale == 4
    assert latent_prior.scheduler.config.clip_sample is False  # latents are not bounded to [-1, 1]
    assert latent_prior.latent_scaling == pytest.approx(latent_prior.vae.config.scaling_factor)
    assert latent_prior.info["vae"]["holdout_psnr"] > 25
    assert next(latent_prior.unet.parameters()).dtype == torch.float32  # stored as float16, cast on load


def test_names_and_checkout_paths_resolve_to_the_embedded_latent_prior(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as from an installed package: no assets/ folder below the working directory
    assert load_prior("assets/priors/toyworld-latent").path == embedded_prior_path("toyworld-latent")
    assert not load_prior("toyworld").latent


def test_cli_prior_info_describes_the_latent_prior(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from threedistill.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["prior", "info", "--prior", "assets/priors/toyworld-latent"])
    assert result.exit_code == 0, result.output
    assert "latent, 32px" in result.output and "vae: 4x downsampling to 4 latent channels" in result.output


def test_vae_round_trips_toy_images(latent_prior, toy_renders):
    torch.manual_seed(0)
    z = latent_prior.to_diffusion_space(toy_renders)
    assert z.shape == (2, 4, 8, 8)
    assert 0.3 < float(z.std()) < 3.0  # the scaling factor brings latents near unit std
    recon = latent_prior.from_diffusion_space(z)
    psnr = -10 * torch.log10((recon - toy_renders).square().mean(dim=(1, 2, 3)))
    assert recon.shape == toy_renders.shape and psnr.min() > 22, psnr


def test_gradients_flow_from_latents_to_rendered_rgb(latent_prior, toy_renders):
    rgb = toy_renders.clone().requires_grad_(True)
    direction = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def score(image):
        torch.manual_seed(0)  # the same posterior sample each call
        return (latent_prior.to_diffusion_space(image) * direction).sum()

    score(rgb).backward()
    grad = rgb.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():  # first order: a small step along the gradient raises the score
        step = 1e-2 * grad / grad.norm()
        assert score(rgb + step) > score(rgb) > score(rgb - step)


def test_latent_prior_denoises_better_than_chance(latent_prior, toy_renders):
    torch.manual_seed(0)
    x0 = latent_prior.to_diffusion_space(toy_renders)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([300, 600])
    emb = latent_prior.encode_prompt(["a blue cone", "a red duck, front view"])
    eps = latent_prior.predict_noise(latent_prior.add_noise(x0, noise, t), t, emb)
    assert ((eps - noise) ** 2).mean() < 0.5 * (noise**2).mean()


def test_latent_sampling_decodes_to_rgb(latent_prior):
    images = sample_images(latent_prior, ["a red cone, front view"], steps=2, seed=0)
    assert images.shape == (1, 3, 32, 32) and images.min() >= 0 and images.max() <= 1


def _tiny_dataset(root, n_per_subject=4, resolution=16):
    """A cached toy dataset of random images (two subjects), so training runs without rendering."""
    from threedistill.toyworld.dataset import ToyDataset

    rng = np.random.default_rng(0)
    n = 2 * n_per_subject
    data = ToyDataset(
        rng.integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8),
        np.repeat(np.arange(2, dtype=np.int16), n_per_subject),
        rng.uniform(-180, 180, n),
        rng.uniform(-10, 75, n),
        np.full(n, 2.9),
        np.full(n, 40.0),
        [("red", "cone"), ("blue", "duck")],
    )
    cache = root / "ds.npz"
    data.save(cache)
    cache.with_suffix(".json").write_text(
        json.dumps({"views_per_subject": n_per_subject, "resolution": resolution, "seed": 0})
    )
    return cache


TINY = [
    "kind=latent",
    "threads=1",
    "resolution=16",
    "views_per_subject=4",
    "seed=0",
    "steps=2",
    "batch_size=4",
    "channels=[16,16]",
    "layers_per_block=1",
    "text_width=16",
    "text_layers=1",
    "snapshot_every=0",
    "weights_dtype=float16",
    "vae.channels=[8,8]",
    "vae.steps=2",
    "vae.batch_size=4",
    "vae.holdout_views=0",
    "vae.snapshot_every=0",
]


@pytest.fixture
def keep_threads():
    """Restore torch's thread count after a test whose config sets it (tiny models run ~10x faster on one thread
    when other jobs share the cores)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_latent_training_runs_and_saves_a_loadable_pipeline(tmp_path, keep_threads):
    from threedistill.toyworld.training import train_prior

    cache = _tiny_dataset(tmp_path)
    cfg = load_config(PriorTrainConfig, None, TINY + [f"dataset_cache={cache}", f"out={tmp_path / 'p1'}"])
    out = train_prior(cfg, progress=False, log=lambda s: None)
    index = json.loads((out / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"] and index["threedistill"]["trained_steps"] == 2
    prior = load_prior(out)
    assert prior.latent and prior.channels == 4 and prior.native_resolution == 16 and prior.vae_scale == 2
    assert sample_images(prior, ["a red cone"], steps=2, seed=0).shape == (1, 3, 16, 16)
    # A second run on the first run's VAE skips VAE training and keeps its scaling factor.
    cfg2 = load_config(
        PriorTrainConfig, None, TINY + [f"dataset_cache={cache}", f"out={tmp_path / 'p2'}", f"vae.init_from={out}"]
    )
    again = load_prior(train_prior(cfg2, progress=False, log=lambda s: None))
    assert again.latent_scaling == pytest.approx(prior.latent_scaling)
    assert torch.equal(next(again.vae.parameters()), next(prior.vae.parameters()))


def test_learning_rate_schedule_warms_up_then_decays_to_its_end_value():
    from threedistill.toyworld.training.common import warmup_cosine

    lr_at = warmup_cosine(1e-3, 10, 100, end=0.1)
    values = [lr_at(s) for s in range(100)]
    assert values[0] == pytest.approx(1e-4) and max(values) <= 1e-3 and values[-1] == pytest.approx(1e-4, rel=1e-2)
    assert all(v > 0 for v in values) and all(b <= a for a, b in zip(values[10:], values[11:]))


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("kind=latnet", "kind must be one of pixel, latent"),
        ("vae.channels=[12,24]", "vae.channels must be a non-empty list of multiples of 8"),
        ("vae.channels=[8,8,8,8,8,8,8]", "does not divide resolution 32"),
        ("vae.kl_weight=-1", "vae.kl_weight must be non-negative"),
        ("weights_dtype=int8", "weights_dtype must be one of float32, float16"),
        ("attention_levels=4", "attention_levels must be between 1 and len(channels) = 3"),
    ],
)
def test_bad_latent_settings_give_one_line_errors(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(PriorTrainConfig, None, ["kind=latent", override])
    assert fragment in str(err.value) and "\n" not in str(err.value)
