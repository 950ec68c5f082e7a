import json
import shutil

import pytest
import torch
from tiny_pipelines import build_tiny_pixel, build_tiny_sd

from threedistill.errors import PriorLoadError
from threedistill.priors import DiffusersPrior, default_prior_path, load_prior
from threedistill.priors.sampling import sample_images


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd", prediction_type="v_prediction")


def test_embedded_prior_loads_as_pixel_prior(toy_prior):
    assert default_prior_path().joinpath("model_index.json").is_file()
    assert not toy_prior.latent and toy_prior.native_resolution == 32 and toy_prior.channels == 3
    assert toy_prior.alphas_cumprod.shape == (1000,)
    assert torch.all(toy_prior.alphas_cumprod[1:] < toy_prior.alphas_cumprod[:-1])


def test_prompt_encoding_is_cached_and_distinguishes_prompts(toy_prior):
    a = toy_prior.encode_prompt(["a red duck", "a blue duck", "a red duck"])
    assert a.shape[0] == 3 and torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    assert "a red duck" in toy_prior._prompt_cache
    assert torch.equal(toy_prior.encode_prompt("a red duck")[0], a[0])


def test_pixel_diffusion_space_is_differentiable_resize(toy_prior):
    rgb = torch.rand(2, 3, 64, 64, requires_grad=True)
    x = toy_prior.to_diffusion_space(rgb)
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    x.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    white = toy_prior.to_diffusion_space(torch.ones(1, 3, 32, 32))
    assert torch.allclose(toy_prior.from_diffusion_space(white), torch.ones(1, 3, 32, 32))


def test_predict_noise_and_cfg_convention(toy_prior):
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([500, 100])
    cond = toy_prior.encode_prompt(["a red cube", "a red cube"])
    uncond = toy_prior.encode_prompt(["", ""])
    eps_c = toy_prior.predict_noise(x, t, cond)
    eps_u = toy_prior.predict_noise(x, t, uncond)
    cfg, c, u = toy_prior.predict_noise_cfg(x, t, cond, uncond, 1.0)
    assert torch.allclose(cfg, eps_c, atol=1e-5) and torch.allclose(u, eps_u, atol=1e-5)
    cfg7, _, _ = toy_prior.predict_noise_cfg(x, t, cond, uncond, 7.5)
    assert torch.allclose(cfg7, eps_u + 7.5 * (eps_c - eps_u), atol=1e-4)


def test_trained_prior_denoises_better_than_chance(toy_prior):
    """The shipped prior must have learned something: its noise estimate beats predicting zero."""
    from threedistill.cameras import orbit_cameras
    from threedistill.toyworld.render import render_toy

    rgb = render_toy("cone", "blue", orbit_cameras([0, 90], [10, 20], 2.9), 32, 32)["rgb"]
    x0 = toy_prior.to_diffusion_space(rgb)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.tensor([300, 600])
    eps = toy_prior.predict_noise(toy_prior.add_noise(x0, noise, t), t, toy_prior.encode_prompt(["a blue cone"] * 2))
    assert ((eps - noise) ** 2).mean() < 0.5 * (noise**2).mean()


def test_sampling_is_deterministic_per_seed(toy_prior):
    a = sample_images(toy_prior, ["a red sphere"] * 2, steps=3, seed=1)
    b = sample_images(toy_prior, ["a red sphere"] * 2, steps=3, seed=1)
    c = sample_images(toy_prior, ["a red sphere"] * 2, steps=3, seed=2)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)


def test_tiny_stable_diffusion_layout_loads_as_latent_prior(tiny_sd):
    prior = DiffusersPrior(tiny_sd)
    assert prior.latent and prior.channels == 4 and prior.native_resolution == 16
    assert prior.prediction_type == "v_prediction"
    emb = prior.encode_prompt(["red", ""])
    assert emb.shape == (2, 16, 32)
    rgb = torch.rand(2, 3, 40, 40, requires_grad=True)
    x = prior.to_diffusion_space(rgb)
    assert x.shape == (2, 4, 8, 8)
    x.square().sum().backward()
    assert rgb.grad.abs().sum() > 0  # gradients flow through the VAE encoder
    assert prior.from_diffusion_space(x.detach()).shape == (2, 3, 16, 16)
    images = sample_images(prior, ["red"], steps=2, seed=0)
    assert images.shape == (1, 3, 16, 16)


def test_v_prediction_is_converted_to_epsilon(tiny_sd):
    prior = DiffusersPrior(tiny_sd)
    x_t = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    emb = prior.encode_prompt(["red", "red"])
    v = prior._unet(x_t, t, emb)
    eps = prior.predict_noise(x_t, t, emb)
    alpha, sigma = prior.alpha_sigma(t)
    assert torch.allclose(eps, sigma * x_t + alpha * v, atol=1e-5)
    # x_t = alpha x0 + sigma eps must hold for the implied clean estimate.
    x0 = prior.predict_x0(x_t, eps, t)
    assert torch.allclose(x0, alpha * x_t - sigma * v, atol=1e-4)


def test_x0_prediction_pixel_prior(tmp_path):
    prior = DiffusersPrior(build_tiny_pixel(tmp_path / "px", prediction_type="sample"))
    x_t = torch.randn(1, 3, 16, 16)
    t = torch.tensor([400])
    emb = prior.encode_prompt(["a red cube"])
    x0 = prior._unet(x_t, t, emb)
    eps = prior.predict_noise(x_t, t, emb)
    assert torch.allclose(prior.predict_x0(x_t, eps, t), x0, atol=1e-4)


def _copy_prior(tmp_path):
    dst = tmp_path / "prior"
    shutil.copytree(default_prior_path(), dst)
    return dst


@pytest.mark.parametrize(
    "breakage, fragment",
    [
        (lambda d: shutil.rmtree(d / "unet"), "unet is missing"),
        (lambda d: (d / "model_index.json").unlink(), "model_index.json is missing"),
        (lambda d: (d / "model_index.json").write_text("{not json"), "invalid JSON"),
        (lambda d: (d / "unet" / "diffusion_pytorch_model.safetensors").unlink(), "cannot load prior component"),
        (
            lambda d: (d / "model_index.json").write_text(
                json.dumps(json.loads((d / "model_index.json").read_text()) | {"unet": ["os", "system"]})
            ),
            "only diffusers and transformers",
        ),
    ],
)
def test_broken_prior_directories_give_one_line_errors(tmp_path, breakage, fragment):
    d = _copy_prior(tmp_path)
    breakage(d)
    with pytest.raises(PriorLoadError) as err:
        load_prior(d)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_missing_prior_directory(tmp_path):
    with pytest.raises(PriorLoadError, match="prior directory not found"):
        load_prior(tmp_path / "nothing")


def test_object_weights_oversample_and_reject_unknown_objects():
    import numpy as np

    from threedistill.config import load_config
    from threedistill.errors import ConfigError
    from threedistill.toyworld.dataset import ToyDataset
    from threedistill.toyworld.training.common import PriorTrainConfig, sampling_probabilities

    subjects = [("red", "robot"), ("red", "sphere")]
    data = ToyDataset(np.zeros((4, 2, 2, 3), np.uint8), np.array([0, 0, 1, 1]), *[np.zeros(4)] * 4, subjects)
    assert sampling_probabilities(data, {}) is None
    assert sampling_probabilities(data, {"robot": 3.0}).tolist() == pytest.approx([3 / 8, 3 / 8, 1 / 8, 1 / 8])
    cfg = load_config(PriorTrainConfig, None, ["object_weights={robot: 2.0}"])
    assert cfg.object_weights == {"robot": 2.0}
    with pytest.raises(ConfigError, match="unknown object 'robott'.*known: sphere"):
        load_config(PriorTrainConfig, None, ["object_weights={robott: 2.0}"])
    with pytest.raises(ConfigError, match="object_weights.robot must be positive"):
        PriorTrainConfig(object_weights={"robot": 0.0})


def test_precision_settings_resolve_per_device_and_reject_unknown_names(monkeypatch):
    from threedistill.errors import ConfigError
    from threedistill.priors import base

    assert base.resolve_precision("float32", torch.device("cpu")) is None
    assert base.resolve_precision("bfloat16", torch.device("cpu")) is torch.bfloat16
    assert base.resolve_precision("auto", torch.device("cuda")) is None  # GPUs keep float32 unless asked
    for native in (True, False):
        monkeypatch.setattr(base, "cpu_has_native_bfloat16", lambda native=native: native)
        assert base.resolve_precision("auto", torch.device("cpu")) is (torch.bfloat16 if native else None)
    with pytest.raises(ConfigError, match="prior_precision must be one of auto, float32, bfloat16, got 'half'"):
        load_prior(None, precision="half")


def test_bfloat16_prior_stays_close_to_float32_and_returns_float32():
    """Autocast changes only the teacher's arithmetic: same weights, float32 in and out, the guidance
    direction (conditional minus unconditional) within a few per cent of float32's."""
    full, low = load_prior(None, precision="float32"), load_prior(None, precision="bfloat16")
    assert full.compute_dtype is None and low.compute_dtype is torch.bfloat16
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([300, 700])
    cond, uncond = full.encode_prompt(["a red duck"] * 2), full.encode_prompt([""] * 2)
    _, c32, u32 = full.predict_noise_cfg(x, t, cond, uncond, 7.5)
    _, c16, u16 = low.predict_noise_cfg(x, t, cond, uncond, 7.5)
    assert c16.dtype == torch.float32 and not torch.equal(c16, c32)
    assert (c16 - c32).norm() / c32.norm() < 0.02
    d32, d16 = c32 - u32, c16 - u16
    assert (d16 - d32).norm() / d32.norm() < 0.15
    assert torch.equal(low.predict_noise(x, t, cond), c16)  # deterministic
