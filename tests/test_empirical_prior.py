"""The oracle prior (exact denoiser of a toy image set) against brute-force Bayes and its defining properties."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from threedistill.cameras import sample_orbit
from threedistill.errors import PriorLoadError
from threedistill.prompting import view_prompt
from threedistill.toyworld.dataset import ToyDataset
from threedistill.toyworld.oracle import EmpiricalPrior, posterior_mean, prompt_groups
from threedistill.toyworld.render import render_toy

SUBJECTS = [("red", "cone"), ("blue", "cube")]


def tiny_dataset(views: int = 10, size: int = 16) -> ToyDataset:
    gen = torch.Generator().manual_seed(0)
    images, cams = [], []
    for colour, obj in SUBJECTS:
        c = sample_orbit(gen, views)
        images.append(
            (render_toy(obj, colour, c, size, size, supersample=1)["rgb"].permute(0, 2, 3, 1).numpy() * 255)
            .round()
            .astype(np.uint8)
        )
        cams.append(c)
    cat = lambda f: np.concatenate([getattr(c, f).numpy() for c in cams]).astype(np.float32)  # noqa: E731
    return ToyDataset(
        np.concatenate(images),
        np.repeat(np.arange(len(SUBJECTS), dtype=np.int16), views),
        cat("azimuth"),
        cat("elevation"),
        cat("radius"),
        cat("fovy"),
        SUBJECTS,
    )


@pytest.fixture(scope="module")
def data():
    return tiny_dataset()


@pytest.fixture(scope="module")
def oracle(data):
    return EmpiricalPrior(data=data)


def test_posterior_mean_is_bayes_over_the_images():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(7, 12, generator=gen) * 2 - 1
    x_t = torch.randn(3, 12, generator=gen)
    alpha, sigma = torch.tensor([0.9, 0.6, 0.2]), torch.tensor([0.44, 0.8, 0.98])
    got = posterior_mean(x_t, images, images.square().sum(1), alpha, sigma)
    for b in range(3):  # p(i | x_t) from the full Gaussian log-likelihood, in float64
        loglik = -((x_t[b].double() - alpha[b].double() * images.double()) ** 2).sum(1) / (2 * sigma[b].double() ** 2)
        want = torch.softmax(loglik, 0) @ images.double()
        assert torch.allclose(got[b].double(), want, atol=1e-5)


def test_groups_follow_the_training_prompts(data):
    groups = prompt_groups(data)
    assert len(groups[""]) == len(data)
    cone = set(groups["a red cone"].tolist())
    assert cone == {i for i in range(len(data)) if data.subject[i] == 0}
    for text, idx in groups.items():
        if ", " in text:
            assert all(
                view_prompt(data.prompt(i), float(data.azimuth[i]), float(data.elevation[i])) == text for i in idx
            )


def test_a_lightly_noised_training_image_is_denoised_exactly(oracle):
    emb = oracle.encode_prompt(["a blue cube"])  # a cube's mirror image differs (a cone's may not: both are likely)
    x0 = oracle.images[12].reshape(1, 3, 16, 16)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([50])
    eps = oracle.predict_noise(oracle.add_noise(x0, noise, t), t, emb)
    assert torch.allclose(eps, noise, atol=1e-3)


def test_at_full_noise_the_prediction_is_the_prompts_mean_image(oracle, data):
    gen = torch.Generator().manual_seed(3)
    x_t = torch.randn(3, 3, 16, 16, generator=gen)
    t = torch.tensor([999, 999, 999])
    eps = oracle.predict_noise(x_t, t, oracle.encode_prompt(["a red cone", "a blue cube", ""]))
    x0 = oracle.predict_x0(x_t, eps, t)
    groups = prompt_groups(data)
    for row, text in enumerate(["a red cone", "a blue cube", ""]):
        idx = torch.from_numpy(np.concatenate([groups[text], groups[text] + len(data)]))
        assert torch.allclose(x0[row], oracle.images[idx].mean(0).reshape(3, 16, 16), atol=2e-2), text
    assert x0[0, 0].mean() > x0[0, 2].mean() and x0[1, 2].mean() > x0[1, 0].mean()  # red cone, blue cube


def test_unknown_prompts_get_one_line_error(oracle):
    with pytest.raises(PriorLoadError, match="knows only toy-world prompts.*'a photo of a dog'"):
        oracle.encode_prompt(["a red cone", "a photo of a dog"])


def test_loads_by_name_from_the_cache_and_describes_itself(tmp_path, data):
    """`--prior toyworld-oracle` reads the rendered training set from the user cache (here a tiny stand-in)."""
    (tmp_path / "oracle").mkdir()
    data.save(tmp_path / "oracle" / "toyworld_500v_32px_seed3.npz")
    env = {**os.environ, "THREEDISTILL_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "threedistill.cli", "prior", "info", "--prior", "toyworld-oracle"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "EmpiricalPrior" in out.stdout and "no network" in out.stdout and "16px" in out.stdout
