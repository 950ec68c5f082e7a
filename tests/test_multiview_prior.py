"""The multi-view prior (issue #29): MVDream's camera condition and attention across views on a diffusers UNet,
its training data in sets, loading, and the one-line errors around it."""

from __future__ import annotations

import json

import pytest
import torch

from threedistill.cameras import orbit_cameras
from threedistill.errors import ConfigError, PriorLoadError, ThreeDistillError
from threedistill.priors import load_prior
from threedistill.priors.multiview import (
    MultiViewAttnProcessor,
    camera_embedding,
    make_multiview,
    multiview_unet_from,
)
from threedistill.toyworld.training.components import build_unet


def _unet(seed=0):
    torch.manual_seed(seed)
    return build_unet(16, channels=(16, 32), layers_per_block=1, text_width=16).eval()


def _inputs(batch, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 16, 16, generator=gen)
    emb = torch.randn(batch, 4, 16, generator=gen)
    return x, torch.full((batch,), 400), emb


def test_grown_unet_with_one_view_equals_the_single_view_unet():
    """Zero-initialised camera layer + one view per set: exactly the 2D model (MVDream's starting point)."""
    base = _unet()
    grown = multiview_unet_from(base, num_views=1).eval()
    x, t, emb = _inputs(4)
    cams = camera_embedding(orbit_cameras(torch.tensor([0.0, 90, 180, 270]), 20.0, 3.0).c2w)
    with torch.no_grad():
        a = base(x, t, encoder_hidden_states=emb).sample
        b = grown(x, t, encoder_hidden_states=emb, class_labels=cams).sample
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_views_of_a_set_attend_to_each_other_and_sets_stay_apart():
    unet = multiview_unet_from(_unet(), num_views=4).eval()
    torch.nn.init.normal_(unet.class_embedding.linear_2.weight, std=0.1)
    x, t, emb = _inputs(8)
    cams = camera_embedding(orbit_cameras(torch.arange(8.0) * 90, 20.0, 3.0).c2w)
    with torch.no_grad():
        out = unet(x, t, encoder_hidden_states=emb, class_labels=cams).sample
        x2 = x.clone()
        x2[1] += 1.0  # change one view of the first set
        out2 = unet(x2, t, encoder_hidden_states=emb, class_labels=cams).sample
        other_cam = cams.clone()
        other_cam[0] = camera_embedding(orbit_cameras(45.0, 20.0, 3.0).c2w)[0]
        out3 = unet(x, t, encoder_hidden_states=emb, class_labels=other_cam).sample
    assert (out2[0] - out[0]).abs().max() > 1e-4  # view 0 sees view 1
    torch.testing.assert_close(out2[4:], out[4:])  # the second set does not
    assert (out3[0] - out[0]).abs().max() > 1e-4  # the camera conditions the view


def test_processor_rejects_incomplete_sets():
    unet = make_multiview(_unet(), 4)
    x, t, emb = _inputs(3)
    with pytest.raises(ValueError, match="sets of 4 views"):
        unet(x, t, encoder_hidden_states=emb)
    kinds = {name.split(".")[-2]: type(p) for name, p in unet.attn_processors.items()}
    assert kinds["attn1"] is MultiViewAttnProcessor and kinds["attn2"] is not MultiViewAttnProcessor


def test_camera_embedding_ignores_distance():
    near = orbit_cameras(30.0, 10.0, 2.0).c2w
    far = orbit_cameras(30.0, 10.0, 5.0).c2w
    torch.testing.assert_close(camera_embedding(near), camera_embedding(far))
    assert camera_embedding(near).shape == (1, 16)


@pytest.fixture(scope="module")
def tiny_mv_prior(tmp_path_factory):
    """A multi-view prior trained for a few steps from the embedded one (the real training code path)."""
    from threedistill.toyworld.training import PriorTrainConfig, train_prior

    root = tmp_path_factory.mktemp("mv")
    cfg = PriorTrainConfig(
        kind="multiview",
        out=str(root / "prior"),
        init_from="toyworld",
        dataset_cache=str(root / "ds.npz"),
        views_per_subject=4,
        steps=2,
        batch_size=8,
        snapshot_every=0,
    )
    train_prior(cfg, progress=False, log=lambda *a: None)
    return root / "prior"


def test_trained_multiview_prior_loads_and_needs_cameras(tiny_mv_prior):
    prior = load_prior(tiny_mv_prior)
    assert prior.num_views == 4 and "4 views" in repr(prior)
    x = torch.randn(8, 3, 32, 32)
    emb = prior.encode_prompt(["a red duck"] * 4)
    unc = prior.encode_prompt([""] * 4)
    with pytest.raises(ThreeDistillError, match="needs the cameras"):
        prior.predict_noise(x[:4], torch.tensor([300]), emb)
    cams = orbit_cameras(torch.tensor([0.0, 90, 180, 270]), 20.0, 3.0)
    with prior.viewing(cams.c2w):
        eps, eps_c, eps_u = prior.predict_noise_cfg(x[:4], torch.tensor([300]), emb, unc, 5.0)  # 8 images: tiled
        assert eps.shape == (4, 3, 32, 32) and torch.isfinite(eps).all()
        with pytest.raises(ThreeDistillError, match="whole sets of views"):
            prior.predict_noise(x[:6], torch.tensor([300]), torch.cat([emb, emb[:2]]))
    with prior.viewing(cams.c2w[:2]):
        with pytest.raises(ThreeDistillError, match="batch_size must be a multiple of 4"):
            prior.predict_noise(x[:2], torch.tensor([300]), emb[:2])


def test_multiview_training_data_comes_in_sets():
    from threedistill.toyworld.dataset import generate_dataset

    data = generate_dataset(8, 16, seed=0, progress=False, views_per_set=4)
    sets = data.azimuth.reshape(-1, 4)
    gaps = (sets[:, 1:] - sets[:, :1]) % 360
    assert abs(gaps - [90, 180, 270]).max() < 1e-3
    assert (data.elevation.reshape(-1, 4).std(1) < 1e-5).all()
    with pytest.raises(ThreeDistillError, match="not a multiple of 4 views"):
        generate_dataset(6, 16, progress=False, views_per_set=4)


def test_multiview_train_config_errors():
    from threedistill.toyworld.training import PriorTrainConfig

    with pytest.raises(ConfigError, match="batch_size must be a multiple of num_views"):
        PriorTrainConfig(kind="multiview", batch_size=30)
    with pytest.raises(ConfigError, match="num_views must be between 2 and 8"):
        PriorTrainConfig(kind="multiview", num_views=1)
    with pytest.raises(ConfigError, match="camera_lr_scale must be positive"):
        PriorTrainConfig(kind="multiview", camera_lr_scale=0)


def test_training_timesteps_lean_to_the_noisy_half_as_configured_and_a_set_shares_one():
    from threedistill.toyworld.training import PriorTrainConfig
    from threedistill.toyworld.training.prior import draw_timesteps

    torch.manual_seed(0)
    plain = draw_timesteps(PriorTrainConfig(kind="pixel", batch_size=4000))
    torch.manual_seed(0)
    assert torch.equal(plain, torch.randint(0, 1000, (4000,)))  # unchanged without the option
    leaning = draw_timesteps(PriorTrainConfig(kind="pixel", batch_size=4000, high_noise_prob=0.6))
    assert leaning.min() >= 0 and leaning.max() < 1000
    assert abs((leaning >= 500).float().mean() - (0.6 + 0.4 * 0.5)) < 0.03  # 0.6 from the upper half, 0.2 by chance
    sets = draw_timesteps(PriorTrainConfig(kind="multiview", batch_size=64, high_noise_prob=1.0)).reshape(16, 4)
    assert (sets >= 500).all() and (sets == sets[:, :1]).all()
    with pytest.raises(ConfigError, match="high_noise_prob must be between 0 and 1"):
        PriorTrainConfig(high_noise_prob=1.5)


def test_bad_multiview_entries_are_one_line_errors(tiny_mv_prior, tmp_path):
    import shutil

    copy = tmp_path / "p"
    shutil.copytree(tiny_mv_prior, copy)
    index = json.loads((copy / "model_index.json").read_text())
    index["threedistill"]["multiview"] = {"num_views": "four"}
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(PriorLoadError, match="num_views must be a whole number"):
        load_prior(copy)
    plain = tmp_path / "plain"
    shutil.copytree(load_prior().path, plain)  # a 2D UNet declared multi-view: no camera input
    index = json.loads((plain / "model_index.json").read_text())
    index["threedistill"]["multiview"] = {"num_views": 4}
    (plain / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(PriorLoadError, match="class_embed_type 'projection'"):
        load_prior(plain)


def test_sample_orbit_in_sets_shares_elevation_and_spaces_azimuth():
    from threedistill.cameras import sample_orbit

    cams = sample_orbit(torch.Generator().manual_seed(0), 8, views_per_set=4)
    az = cams.azimuth.reshape(2, 4)
    assert torch.allclose((az - az[:, :1]) % 360, torch.tensor([0.0, 90, 180, 270]).expand(2, 4), atol=1e-3)
    assert (cams.elevation.reshape(2, 4).std(1) < 1e-6).all() and (cams.radius.reshape(2, 4).std(1) < 1e-6).all()
    single = sample_orbit(torch.Generator().manual_seed(0), 3)
    again = sample_orbit(torch.Generator().manual_seed(0), 3, views_per_set=1)
    torch.testing.assert_close(single.c2w, again.c2w)  # the 2D prior's draws are unchanged
    with pytest.raises(ValueError, match="whole sets of 4"):
        sample_orbit(torch.Generator(), 6, views_per_set=4)


def test_sds_with_a_multiview_prior_trains_sets_and_rejects_what_cannot_work(tiny_mv_prior):
    from threedistill.guidance import GUIDANCE
    from threedistill.representations import REPRESENTATIONS
    from threedistill.representations.gaussians import GaussiansConfig
    from threedistill.trainer import Trainer, TrainerConfig

    prior = load_prior(tiny_mv_prior)
    sds = GUIDANCE.get("sds")
    with pytest.raises(ConfigError, match="perp_neg=false"):
        sds(prior, sds.config_class(perp_neg=True))
    guidance = sds(prior, sds.config_class())
    assert guidance.views_per_set == 4
    assert (
        guidance.prompt_state("a red duck").texts(orbit_cameras(torch.tensor([0.0, 180.0]), 0.0, 3.0))
        == ["a red duck"] * 2
    )  # no view suffix: the camera is the condition
    gen = torch.Generator().manual_seed(0)
    model = REPRESENTATIONS.get("gaussians")(GaussiansConfig(num_points=200), generator=gen)
    with pytest.raises(ConfigError, match="multiple of 4"):
        Trainer(TrainerConfig(steps=2, batch_size=2), model, guidance, "a red duck")
    trainer = Trainer(TrainerConfig(steps=2, batch_size=4, resolution=32), model, guidance, "a red duck")
    logs = trainer.train_step()
    assert torch.isfinite(torch.tensor(logs["loss"])) and logs["loss_sds"] > 0


def test_cfg_rescale_is_the_identity_without_guidance_and_pulls_the_spread_otherwise(tiny_mv_prior):
    from threedistill.guidance import GUIDANCE
    from threedistill.guidance.sds import rescale_x0

    prior = load_prior(tiny_mv_prior)
    sds = GUIDANCE.get("sds")
    cams = orbit_cameras(torch.tensor([0.0, 90, 180, 270]), 10.0, 3.0)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    t, noise = torch.full((4,), 600), torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    grads = {}
    for name, scale, rescale in (("plain1", 1.0, 0.0), ("rescaled1", 1.0, 0.5), ("plain", 7.5, 0.0), ("res", 7.5, 0.5)):
        guidance = sds(prior, sds.config_class(guidance_scale=scale, cfg_rescale=rescale))
        state = guidance.prompt_state("a red duck")
        with prior.viewing(cams.c2w):
            grads[name] = guidance.gradient(x, cams, state, 0, t, noise)
    torch.testing.assert_close(grads["plain1"], grads["rescaled1"], atol=1e-4, rtol=1e-4)
    assert (grads["plain"] - grads["res"]).abs().max() > 1e-3
    x0, cond = torch.randn(8, 3, 4, 4) * 3, torch.randn(8, 3, 4, 4)
    out = rescale_x0(x0, cond, 1.0, 4)
    torch.testing.assert_close(out.reshape(2, -1).std(1), cond.reshape(2, -1).std(1))
    with pytest.raises(ConfigError, match="cfg_rescale must be in"):
        sds.config_class(cfg_rescale=2.0)


def test_generate_config_takes_the_multiview_defaults(tiny_mv_prior):
    from threedistill.workflows.generate import new_run_config

    cfg = new_run_config("a red duck", prior=str(tiny_mv_prior))
    assert cfg.trainer.batch_size == 4 and not cfg.guidance.perp_neg
    assert new_run_config("a red duck").guidance.perp_neg  # the 2D prior keeps its own
    cfg = new_run_config("a red duck", prior=str(tiny_mv_prior), overrides=["trainer.batch_size=8"])
    assert cfg.trainer.batch_size == 8  # the user's setting wins


def test_gate_judges_each_view_and_its_front(tiny_mv_prior):
    from threedistill.evaluation.image_judge import SilhouetteBank
    from threedistill.evaluation.prior_gate import evaluate_prior, faces_its_camera
    from threedistill.toyworld.render import render_toy

    cams = orbit_cameras(torch.tensor([0.0, 180.0]), 10.0, 2.9)
    front, back = render_toy("duck", "red", cams, 32, 32, supersample=2)["rgb"]
    assert faces_its_camera(front, "duck", "red", cams[0]) and faces_its_camera(back, "duck", "red", cams[1])
    assert not faces_its_camera(back, "duck", "red", cams[0])
    report = evaluate_prior(
        load_prior(tiny_mv_prior),
        samples_per_prompt=1,
        steps=2,
        subjects=[("red", "duck")],
        progress=False,
        bank=SilhouetteBank(32, azimuths=range(0, 360, 60), elevations=(0, 40), radii=(2.9,)),
    )
    assert report["views_per_sample"] == 4 and report["_images"].shape == (4, 3, 32, 32)
    assert set(report["accuracy"]) == {"all", "object", "colour", "background", "front", "set"}
    assert report["per_prompt"]["a red duck"]["n"] == 4


def test_gate_asks_a_2d_prior_for_views_in_words(toy_prior):
    from threedistill.evaluation.image_judge import SilhouetteBank
    from threedistill.evaluation.prior_gate import evaluate_prior

    report = evaluate_prior(
        toy_prior,
        samples_per_prompt=2,
        steps=2,
        subjects=[("red", "duck"), ("red", "cone")],
        progress=False,
        view_prompts=True,
        bank=SilhouetteBank(32, azimuths=range(0, 360, 60), elevations=(0, 40), radii=(2.9,)),
    )
    assert set(report["accuracy"]) == {"all", "object", "colour", "background", "front"}
    assert "front" in report["per_prompt"]["a red duck"] and "front" not in report["per_prompt"]["a red cone"]


def test_multiview_batches_hold_whole_sets_with_their_cameras_and_prompts():
    import numpy as np

    from threedistill.prompting import view_prompt
    from threedistill.toyworld.dataset import generate_dataset
    from threedistill.toyworld.training import PriorTrainConfig
    from threedistill.toyworld.training.prior import draw_batch

    data = generate_dataset(8, 16, seed=0, progress=False, views_per_set=4)
    cfg = PriorTrainConfig(kind="multiview", batch_size=32, view_prompts=True, empty_prompt_prob=0.2)
    idx, flip, prompts, extra = draw_batch(cfg, data, None, np.random.default_rng(0))
    sets = idx.reshape(-1, 4)
    assert (sets[:, 0] % 4 == 0).all() and (np.diff(sets, axis=1) == 1).all()  # whole sets, in order
    assert all(len(set(f.tolist())) == 1 for f in flip.reshape(-1, 4))  # a set is mirrored as one
    azimuth = torch.from_numpy(data.azimuth[idx]).float()
    azimuth = torch.where(flip, -azimuth, azimuth)
    cams = orbit_cameras(azimuth, torch.from_numpy(data.elevation[idx]).float(), 1.0)
    torch.testing.assert_close(extra["class_labels"], camera_embedding(cams.c2w))
    kinds = set()
    for i, text in enumerate(prompts):
        plain = data.prompt(idx[i])
        suffixed = view_prompt(plain, float(azimuth[i]), float(data.elevation[idx[i]]))
        assert text in ("", plain, suffixed)
        kinds.add("empty" if text == "" else "suffixed" if text == suffixed != plain else "plain")
    assert {"empty", "suffixed"} <= kinds
    plain_cfg = PriorTrainConfig(kind="multiview", batch_size=32)  # MVDream's: the camera alone
    _, _, prompts, _ = draw_batch(plain_cfg, data, None, np.random.default_rng(0))
    assert all("view" not in p for p in prompts)


def test_a_multiview_prior_trained_with_view_prompts_reads_them(tiny_mv_prior, tmp_path):
    import shutil

    from threedistill.guidance import GUIDANCE

    copy = tmp_path / "vp"
    shutil.copytree(tiny_mv_prior, copy)
    index = json.loads((copy / "model_index.json").read_text())
    index["threedistill"]["multiview"]["view_prompts"] = True
    (copy / "model_index.json").write_text(json.dumps(index))
    cams = orbit_cameras(torch.tensor([0.0, 180.0]), 0.0, 3.0)
    texts = GUIDANCE.get("sds")(load_prior(copy)).prompt_state("a red duck").texts(cams)
    assert texts[0] != texts[1] and all(t.startswith("a red duck,") for t in texts)


def test_an_auto_reference_image_comes_from_a_set_drawn_by_a_multiview_prior(tiny_mv_prior, tmp_path):
    from types import SimpleNamespace

    from threedistill.rewards import ReferenceConfig, reference_term

    lines = []
    run_cfg = SimpleNamespace(prompt="a red duck", trainer=SimpleNamespace(seed=0))
    term = reference_term(
        ReferenceConfig(image="auto", auto_steps=2), load_prior(tiny_mv_prior), run_cfg, tmp_path, lines.append
    )
    assert term is not None and (tmp_path / "reference.png").is_file()
    assert "'a red duck'" in lines[0]  # the plain prompt: this tiny prior was trained without view suffixes
