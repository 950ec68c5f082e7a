"""The capture-fitting recipe (3DGS / gsplat's density control in NDC units, opacity reset, SH ramp, exponential
position learning rate), per-view working sizes (mixed portrait and landscape), backgrounds, masks and metrics."""

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import FIT_FAST

from threedistill.config import scheduled
from threedistill.errors import ConfigError
from threedistill.representations.gaussians import Gaussians, GaussiansConfig
from threedistill.representations.strategies import CaptureStrategyConfig
from threedistill.scenes import load_scene
from threedistill.scenes.colmap import write_colmap_text
from threedistill.scenes.views import PhotometricLoss, Resolution, SceneViews
from threedistill.trainer import Trainer, TrainerConfig
from threedistill.workflows.fit import FitConfig, evaluate_views, fit, random_points

QUIET = dict(progress=False, log=lambda s: None)


def capture_model(scene, **capture) -> Gaussians:
    """Gaussians seeded from the scene's points with the capture strategy (settings overridden by `capture`)."""
    cfg = GaussiansConfig(strategy="capture", sh_degree=1, capture=CaptureStrategyConfig(**capture), max_points=9000)
    model = Gaussians.from_points(scene.points[:600], scene.point_colours[:600], cfg)
    with torch.no_grad():
        model.log_scales.fill_(math.log(0.03))
    return model


def test_capture_densification_fires_and_the_gaussian_count_grows(captured):
    scene = load_scene(captured[0])
    model = capture_model(scene, refine_start=10, refine_every=10, refine_stop=41, reset_every=0)
    views = SceneViews(scene, scene.train_indices, 24, torch.device("cpu"))
    events = []
    trainer = Trainer(TrainerConfig(steps=40, batch_size=1, seed=0), model, PhotometricLoss(), "", views=views)
    trainer.log = lambda line: events.append(json.loads(line)) if line.startswith("{") else None
    start = len(model)
    trainer.fit(progress=False)
    rounds = [e["densify"] for e in events if "densify" in e]
    assert len(rounds) == 4, events
    assert sum(r["cloned"] + r["split"] for r in rounds) > 50, rounds
    assert len(model) > start * 1.1, (start, len(model))


def test_the_densify_statistic_is_in_ndc_units_and_does_not_depend_on_image_size(captured):
    """The same model and loss at two image sizes: pixel-space position gradients halve when the image doubles,
    the NDC statistic the threshold compares stays (3DGS's units)."""
    scene = load_scene(captured[0])
    stats, raw = {}, {}
    for height in (36, 72):
        model = capture_model(scene)
        target = capture_model(scene)
        with torch.no_grad():
            target.means.add_(0.02 * torch.randn(target.means.shape, generator=torch.Generator().manual_seed(0)))
        cams = scene.cameras(scene.train_indices[:2])
        width = height * 4 // 3
        images = target.render(cams, height, width)["rgb"].detach()
        out = model.render(cams, height, width)
        PhotometricLoss(lambda_dssim=0.0)(out["rgb"], cams, None, 0, images=images)["loss_photometric"].backward()
        raw[height] = float(sum(m.grad.norm(dim=-1).sum() for m, _ in model.render_info))
        model.strategy.accumulate(model)
        visible = model.strategy.grad_count > 0
        stats[height] = float((model.strategy.grad_accum[visible] / model.strategy.grad_count[visible]).mean())
    assert 1.6 < raw[36] / raw[72] < 2.5, raw  # pixel units follow the image size
    assert 0.8 < stats[36] / stats[72] < 1.25, stats  # NDC units do not


def test_opacity_reset_caps_opacities_and_zeroes_their_adam_moments(captured):
    scene = load_scene(captured[0])
    model = capture_model(scene, reset_every=5, refine_start=1000)
    with torch.no_grad():
        model.opacity_logits.fill_(3.0)
    views = SceneViews(scene, scene.train_indices, 24, torch.device("cpu"))
    trainer = Trainer(TrainerConfig(steps=5, batch_size=1, seed=0), model, PhotometricLoss(), "", views=views)
    trainer.fit(progress=False)
    assert float(model.opacities.detach().max()) <= 2 * 0.005 + 1e-6
    state = trainer.optimizer.state[model.opacity_logits]
    assert float(state["exp_avg"].abs().max()) == 0.0 and float(state["exp_avg_sq"].abs().max()) == 0.0
    before = model.opacities.detach().clone()
    trainer.cfg.steps = 6
    trainer.fit(progress=False)  # training goes on from the lowered opacities
    assert not torch.equal(before, model.opacities.detach())


def test_sh_bands_start_at_degree_zero_and_learn_at_a_twentieth_of_the_rate(captured):
    scene = load_scene(captured[0])
    views = SceneViews(scene, scene.train_indices, 24, torch.device("cpu"))
    steps = {}
    for factor in (1.0, 0.05):
        model = capture_model(scene, sh_degree_every=3, refine_start=1000, reset_every=0, sh_rest_lr_factor=factor)
        trainer = Trainer(TrainerConfig(steps=3, batch_size=1, seed=0), model, PhotometricLoss(), "", views=views)
        trainer.fit(progress=False)
        assert (
            float(model.sh.detach()[:, 1:].abs().max()) == 0.0
        )  # degree 0 for the first 3 steps: no gradient above it
        assert model.sh_degree_active == 1 and int(model.strategy.sh_degree) == 1
        trainer.cfg.steps = 4
        trainer.fit(progress=False)
        steps[factor] = float(model.sh.detach()[:, 1:].abs().max())
    assert steps[1.0] > 0 and steps[0.05] / steps[1.0] == pytest.approx(0.05, rel=1e-3)


def test_the_position_learning_rate_decays_exponentially_and_scales_with_the_scene():
    schedule = ["exp", 0, 1.6e-4, 1.6e-6, 100]
    assert scheduled(schedule, 0) == pytest.approx(1.6e-4)
    assert scheduled(schedule, 50) == pytest.approx(1.6e-5)  # halfway in log space
    assert scheduled(schedule, 100) == pytest.approx(1.6e-6) == scheduled(schedule, 500)
    model = Gaussians(GaussiansConfig(lr_means=schedule, scene_scale=4.0, num_points=4))
    lr = next(g["lr"] for g in model.param_groups() if g["name"] == "means")
    assert scheduled(lr, 50) == pytest.approx(6.4e-5)
    for bad in (["exp", 0, -1.0, 1e-6, 100], ["exp", 1.0], ["lin", 0, 1, 2, 3]):
        with pytest.raises(ConfigError, match="schedule"):
            GaussiansConfig(lr_means=bad)
    with pytest.raises(ConfigError, match="strategy must be one of default, capture, mcmc"):
        GaussiansConfig(strategy="3dgs")


def test_resolution_rule_precedence_and_errors(captured):
    scene = load_scene(captured[0])  # 32 x 24 photos
    assert Resolution(max_side=16).size(scene, 0) == (12, 16)
    assert Resolution(max_side=999).size(scene, 0) == (24, 32)  # never enlarged
    assert Resolution(height=12, max_side=999).size(scene, 0) == (12, 16)
    assert Resolution(downscale=2, height=8, max_side=999).size(scene, 0) == (12, 16)
    assert FitConfig(downscale=2).resolution_rule().size(scene, 0) == (12, 16)
    for bad, message in (
        (dict(downscale=0.5), "downscale"),
        (dict(max_side=4), "max_side"),
        (dict(resolution=2), "resolution"),
    ):
        with pytest.raises(ConfigError, match=message):
            FitConfig(**bad)
    for bad, message in ((dict(background="grey"), "background"), (dict(eval_resolution="half"), "eval_resolution")):
        with pytest.raises(ConfigError, match=message):
            FitConfig(**bad)


def portrait(i: int) -> bool:
    return i % 3 == 1 or i == 0  # the first held-out view (0) and a third of the rest


def rotated_capture(source, out):
    """The toy capture with some views turned to portrait: its photo rotated a quarter turn clockwise and its
    camera rolled to match (a real portrait photo of the same scene), written as a COLMAP model."""
    scene = load_scene(source)
    (out / "images").mkdir(parents=True)
    c2w, intr, names = [], [], []
    for i in range(len(scene)):
        image = iio.imread(scene.image_paths[i])
        pose = scene.c2w[i].double().numpy().copy()
        w, h = (int(v) for v in scene.sizes[i])
        fx, fy, cx, cy = (scene.intrinsics[i].double() * torch.tensor([w, h, w, h])).tolist()
        if portrait(i):
            image = np.ascontiguousarray(np.rot90(image, k=-1))
            pose[:3, :3] = np.stack([pose[:3, 1], -pose[:3, 0], pose[:3, 2]], 1)
            fx, fy, cx, cy, w, h = fy, fx, h - cy, cx, h, w
        names.append(f"view_{i:03d}.png")
        iio.imwrite(out / "images" / names[-1], image)
        c2w.append(pose)
        intr.append((fx, fy, cx, cy, w, h))
    colours = (scene.point_colours.numpy() * 255).astype(np.uint8)
    write_colmap_text(out / "sparse" / "0", np.stack(c2w), names, intr, scene.points.numpy(), colours)
    return out


def test_mixed_portrait_and_landscape_views_each_keep_their_own_shape(captured, tmp_path):
    root = rotated_capture(captured[0], tmp_path / "mixed")
    scene = load_scene(root)
    assert {tuple(s.tolist()) for s in scene.sizes} == {(32, 24), (24, 32)}
    views = SceneViews(scene, scene.train_indices, Resolution(max_side=16), torch.device("cpu"))
    assert {views.sizes[k] for k in range(len(views))} == {(12, 16), (16, 12)}
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        batch = views.sample(gen, 3)
        assert batch.targets["images"].shape[-2:] == batch.size and len(batch.cameras) == len(batch.targets["images"])
    run = fit(scene=str(root), steps=80, seed=0, out=str(tmp_path / "runs"), overrides=FIT_FAST, **QUIET)
    # FIT_FAST fits 24 rows; the portrait held-out views render as well as the landscape ones (nothing squashed)
    val = run.dir / "metrics.json"
    metrics = json.loads(val.read_text())
    assert metrics["val"]["psnr"] > 20, metrics
    tall = [i for i in scene.val_indices if portrait(i)]
    wide = [i for i in scene.val_indices if not portrait(i)]
    rule = run.config.resolution_rule()
    psnr = {k: evaluate_views(run.model, scene, idx, rule)["psnr"] for k, idx in (("p", tall), ("l", wide))}
    assert tall and wide and psnr["p"] > psnr["l"] - 3, psnr


def test_masks_give_masked_metrics_and_random_backgrounds_composite_the_targets(captured, tmp_path):
    scene = load_scene(captured[0])
    for i in range(len(scene)):  # a mask: the left half of every photo is the 'object'
        mask = np.zeros((24, 32), np.uint8)
        mask[:, :16] = 255
        scene.mask_paths[i] = tmp_path / f"mask_{i}.png"
        iio.imwrite(scene.mask_paths[i], mask)
    views = SceneViews(scene, scene.train_indices, 24, torch.device("cpu"), background="random")
    batch = views.sample(torch.Generator().manual_seed(3), 2)
    outside = batch.targets["images"][:, :, :, 16:]
    assert torch.allclose(outside, batch.background[None, :, None, None].expand_as(outside))
    assert torch.equal(batch.targets["masks"][:, :, :, :16], torch.ones_like(batch.targets["masks"][:, :, :, :16]))

    class Photo:  # renders the photo's left half exactly and black elsewhere
        device = torch.device("cpu")

        def render(self, cams, h, w, **kw):
            index = int(torch.nonzero((scene.c2w == cams.c2w[0]).flatten(1).all(1))[0])
            image = scene.load_images([index], h, w)[0]
            image[..., w // 2 :] = 0.0
            return {"rgb": image}

    res = evaluate_views(Photo(), scene, scene.val_indices)
    assert res["masked_psnr"] > 60 and res["masked_ssim"] > 0.99  # right inside the masks
    assert res["psnr"] < 15  # wrong on the white outside them


def test_random_initialisation_covers_the_cameras_when_a_capture_has_no_points(captured):
    scene = load_scene(captured[0])
    points, colours = random_points(scene, 5000, torch.Generator().manual_seed(0))
    reach = scene.c2w[:, :3, 3].abs().max()
    assert float(points.abs().max()) <= float(reach) + 1e-6 and float(points.abs().max()) > 0.9 * float(reach)
    assert colours.shape == (5000, 3) and 0 <= float(colours.min()) and float(colours.max()) <= 1


def test_ssim_matches_kornia_inside_the_image_and_its_backward_is_exact():
    import kornia

    from threedistill.utils.ssim import _SSIM, ssim_map

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, dtype=torch.float64, generator=gen, requires_grad=True)
    y = x.detach() * 0.6 + 0.4 * torch.rand(2, 3, 20, 24, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(lambda a: _SSIM.apply(a, y, 11, 1.5), (x,))
    xf, yf = x.detach().float(), y.float()
    ours, theirs = ssim_map(xf, yf), kornia.metrics.ssim(xf, yf, 11)
    assert float((ours - theirs)[..., 6:-6, 6:-6].abs().max()) < 1e-5  # kornia pads by reflection, 3DGS by zeros
    assert float(ssim_map(y.float(), y.float()).min()) > 0.9999


def test_ssim_blur_channels_last_gives_the_nchw_convolutions_bits():
    import torch.nn.functional as F

    from threedistill.utils.ssim import _blur, _window

    gen = torch.Generator().manual_seed(1)
    g = _window(11, 1.5)
    for shape in [(1, 15, 72, 96), (1, 15, 61, 40), (2, 9, 33, 17)]:
        maps = torch.rand(shape, generator=gen)
        k = shape[1]
        rows = F.conv2d(maps, g.view(1, 1, 1, 11).expand(k, 1, 1, 11), padding=(0, 5), groups=k)
        nchw = F.conv2d(rows, g.view(1, 1, 11, 1).expand(k, 1, 11, 1), padding=(5, 0), groups=k)
        ours = _blur(maps, 11, 1.5)
        assert ours.is_contiguous() and torch.equal(ours, nchw)


def test_bench_fit_measures_a_capture_in_its_own_process(captured, tmp_path):
    from test_cli import t3d

    out = tmp_path / "fit.md"
    args = ["--scene", str(captured[0]), "--toy", "", "--steps", "30", "--out", str(out)]
    result = t3d("bench", "fit", *args, "--runs-dir", str(tmp_path / "runs"), "max_side=24", "export=[]")
    assert result.returncode == 0, result.stderr
    report = out.read_text()
    row = next(line for line in report.splitlines() if line.startswith("| three | gaussians |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "24x18" and cells[4] == "30" and float(cells[5]) > 15  # size, steps, held-out PSNR
    assert float(cells[8]) >= float(cells[5]) - 0.5  # colour-corrected PSNR: a least-squares fit, never much worse
    assert float(cells[14]) > 0.1 and cells[15].endswith("/2")  # peak memory (GB), object presence
    assert (tmp_path / "fit" / "three-gaussians.png").is_file() and "![three](fit/three-gaussians.png)" in report
    per_view = next(line for line in report.splitlines() if line.startswith("- three (gaussians): 0:"))
    psnrs = [float(item.split(": ")[-1]) for item in per_view.split("): ", 1)[1].split(", ")]
    assert len(psnrs) == 2 and abs(sum(psnrs) / 2 - float(cells[5])) < 0.02 and min(psnrs) == float(cells[7])
    bad = t3d("bench", "fit", "--toy", "", "--representations", "mesh", "--out", str(out))
    assert bad.returncode != 0 and "expected some of gaussians, nerf" in bad.stderr.strip().splitlines()[-1]


def test_bench_fit_over_seeds_reports_each_seed_and_their_mean(captured, tmp_path):
    from test_cli import t3d

    from threedistill.bench.fit_bench import seed_summary

    out = tmp_path / "fit.md"
    args = ["--scene", str(captured[0]), "--toy", "", "--steps", "12", "--seed", "3", "--seeds", "2", "--out", str(out)]
    result = t3d("bench", "fit", *args, "--runs-dir", str(tmp_path / "runs"), "max_side=24", "export=[]")
    assert result.returncode == 0, result.stderr
    report = out.read_text()
    rows = [line for line in report.splitlines() if line.startswith("| three (seed ")]
    assert [r.split("|")[1].strip() for r in rows] == ["three (seed 3)", "three (seed 4)"]
    psnr = [float(r.split("|")[6]) for r in rows]
    summary = next(line for line in report.splitlines() if line.startswith("| three | gaussians | 2 |"))
    assert summary.split("|")[4].strip() == f"{sum(psnr) / 2:.2f} ({min(psnr):.2f}-{max(psnr):.2f})"
    assert seed_summary([{"capture": "a", "representation": "gaussians", "psnr": 20.0}]) == []  # one seed: none
    bad = t3d("bench", "fit", "--toy", "", "--seeds", "0", "--out", str(out))
    assert bad.returncode != 0 and "--seeds must be 1 or more" in bad.stderr.strip().splitlines()[-1]


def test_per_view_appearance_learns_each_photos_exposure(tmp_path):
    """Training photos darkened by known per-view gains (a phone's auto-exposure): each view's learned colour
    transform follows its gain, and the fit through the transforms matches the photos better than one without."""
    from threedistill.toyworld.capture import write_captured_scene

    root = write_captured_scene("three", tmp_path / "s", n_views=12, width=32, height=24, n_points=1500, supersample=1)
    scene = load_scene(root)
    order = torch.randperm(len(scene.train_indices), generator=torch.Generator().manual_seed(0))
    gains = torch.linspace(0.6, 1.0, len(scene.train_indices))[order]
    for gain, i in zip(gains.tolist(), scene.train_indices):
        path = scene.image_paths[i]
        pixels = iio.imread(path).astype(np.float32)
        pixels[..., :3] *= gain
        iio.imwrite(path, pixels.round().astype(np.uint8))
    scene = load_scene(root)
    views = SceneViews(scene, scene.train_indices, 24, torch.device("cpu"))
    losses = {}
    for n_views in (0, len(scene.train_indices)):
        model = capture_model(scene, refine_start=1000, reset_every=0)
        objective = PhotometricLoss(appearance_views=n_views, lr_appearance=2e-2)
        Trainer(TrainerConfig(steps=300, batch_size=2, seed=0), model, objective, "", views=views).fit(progress=False)
        with torch.no_grad():
            batch = views.sample(torch.Generator().manual_seed(1), len(views))
            rgb = model.render(batch.cameras, *batch.size)["rgb"]
            losses[n_views] = float(objective(rgb, batch.cameras, None, 0, **batch.targets)["l1"])
    learned = sum(objective.appearance.transforms()).detach().mean(-1)  # what each view makes of white
    assert torch.corrcoef(torch.stack([learned, gains]))[0, 1] > 0.8, (learned, gains)
    assert losses[len(scene.train_indices)] < 0.8 * losses[0], losses


def test_colour_corrected_metrics_undo_an_exposure_change_but_not_a_wrong_image():
    from threedistill.workflows.fit import colour_corrected

    gen = torch.Generator().manual_seed(0)
    photo = torch.rand(1, 3, 20, 30, generator=gen)
    keep = torch.ones(1, 1, 20, 30)
    exposed = (photo * torch.tensor([0.7, 0.8, 0.9])[None, :, None, None] + 0.05).clamp(0, 1)
    assert (colour_corrected(exposed, photo, keep) - photo).abs().max() < 1e-4
    wrong = torch.rand(1, 3, 20, 30, generator=gen)
    assert (colour_corrected(wrong, photo, keep) - photo).abs().mean() > 0.15


def test_background_shell_lies_beyond_every_camera(captured):
    from threedistill.workflows.fit import shell_points

    scene = load_scene(captured[0])
    grey = torch.tensor([0.5, 0.6, 0.7])
    points, colours = shell_points(scene, 500, 2.0, torch.Generator().manual_seed(0), grey)
    farthest = float(scene.c2w[:, :3, 3].norm(dim=-1).max())
    assert points.shape == (500, 3) and torch.equal(colours, grey.expand(500, 3))
    assert torch.allclose(points.norm(dim=-1), torch.full((500,), 2 * farthest), rtol=1e-4)
    assert points.mean(0).norm() < 0.05 * farthest  # spread evenly, not bunched
    for bad in ("background_points=-1", "background_radius=0.5", "lr_appearance=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            fit(scene=str(captured[0]), steps=1, overrides=FIT_FAST + [bad], **QUIET)


def test_fill_points_lie_inside_the_nearest_camera_and_fill_the_ball(captured):
    from threedistill.workflows.fit import build_model, fill_points

    scene = load_scene(captured[0])
    grey = torch.tensor([0.5, 0.6, 0.7])
    points, colours = fill_points(scene, 4000, 0.8, torch.Generator().manual_seed(0), grey)
    nearest = float(scene.c2w[:, :3, 3].norm(dim=-1).min())
    radius = points.norm(dim=-1)
    assert points.shape == (4000, 3) and torch.equal(colours, grey.expand(4000, 3))
    assert float(radius.max()) <= 0.8 * nearest + 1e-5
    assert 0.45 < float((radius < 0.8 * nearest * 0.5 ** (1 / 3)).float().mean()) < 0.55  # uniform in volume
    cfg = FitConfig(scene=str(captured[0]), background_points=100, fill_points=300)
    plain = FitConfig(scene=str(captured[0]), background_points=100)
    grown = build_model(cfg, scene, torch.Generator().manual_seed(0), torch.device("cpu"))
    base = build_model(plain, scene, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert len(grown) == len(base) + 300
    alone = FitConfig(scene=str(captured[0]), background_points=0, fill_points=300)  # without the shell too
    assert (
        len(build_model(alone, scene, torch.Generator().manual_seed(0), torch.device("cpu"))) == len(base) - 100 + 300
    )
    for bad in ("fill_points=-1", "fill_radius=1.5", "fill_radius=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            fit(scene=str(captured[0]), steps=1, overrides=FIT_FAST + [bad], **QUIET)


def test_a_short_fit_stops_densifying_and_resetting_opacity_before_its_end(captured, tmp_path):
    """A fit shorter than the schedule was written for (trainer.steps=1000 with resets every 1000 steps) ended on an
    opacity reset: a transparent model at 10 dB. Refinement now ends by 2/3 of the fit unless asked otherwise."""
    scene_dir = captured[0]
    run = fit(scene=str(scene_dir), steps=3, out=str(tmp_path / "a"), overrides=FIT_FAST, **QUIET)
    assert run.config.gaussians.capture.refine_stop == 2
    chosen = [*FIT_FAST, "gaussians.capture.refine_stop=7"]
    kept = fit(scene=str(scene_dir), steps=3, out=str(tmp_path / "b"), overrides=chosen, **QUIET)
    assert kept.config.gaussians.capture.refine_stop == 7


def test_absgrad_densification_reads_the_per_pixel_gradient_magnitudes(captured):
    """gaussians.capture.absgrad: the statistic is the norm of means2d.absgrad (AbsGS), never below the plain
    gradient's, and clearly larger in sum; the PyTorch path has no absgrad and says so once."""
    scene = load_scene(captured[0])
    cams = scene.cameras(scene.train_indices[:2])
    target = capture_model(scene)
    with torch.no_grad():
        target.means.add_(0.02 * torch.randn(target.means.shape, generator=torch.Generator().manual_seed(0)))
    images = target.render(cams, 36, 48)["rgb"].detach()
    stats = {}
    for absgrad in (False, True):
        model = capture_model(scene, absgrad=absgrad)
        out = model.render(cams, 36, 48)
        PhotometricLoss(lambda_dssim=0.0)(out["rgb"], cams, None, 0, images=images)["loss_photometric"].backward()
        expected = sum(
            (m.absgrad if absgrad else m.grad).mul(torch.tensor([24.0 * 2, 18.0 * 2])).norm(dim=-1)
            for m, _ in model.render_info
        )
        model.strategy.accumulate(model)
        assert torch.allclose(model.strategy.grad_accum, expected, rtol=1e-5, atol=1e-9)
        stats[absgrad] = model.strategy.grad_accum
    assert bool((stats[True] >= stats[False] - 1e-6).all())
    assert float(stats[True].sum()) > 1.3 * float(stats[False].sum())  # pixels pulling both ways no longer cancel
    from threedistill import native

    previous = native.set_mode("torch")
    try:
        model = capture_model(scene, absgrad=True)
        out = model.render(cams, 36, 48)
        PhotometricLoss(lambda_dssim=0.0)(out["rgb"], cams, None, 0, images=images)["loss_photometric"].backward()
        with pytest.warns(UserWarning, match="absgrad needs the native or gsplat"):
            model.strategy.accumulate(model)
        assert float(model.strategy.grad_accum.sum()) > 0
    finally:
        native.set_mode(previous)


def test_perf_bench_times_a_fitted_capture_with_both_paths(captured, tmp_path):
    from threedistill.bench.perf_bench import fit_run_rows, markdown_report
    from threedistill.errors import ThreeDistillError

    run = fit(scene=str(captured[0]), steps=2, out=str(tmp_path), overrides=FIT_FAST, **QUIET)
    rows = fit_run_rows(run.dir, 1, lambda s: None, views=2)
    assert rows[0]["views"] == 2 and rows[0]["gaussians"] == len(run.model)
    assert rows[0]["torch"] > 0 and rows[0]["native"] > 0
    report = markdown_report("# perf", [], [], [], None, 0.8, fitted=rows)
    assert "on a fitted capture" in report and f"| {run.dir.name} |" in report
    with pytest.raises(ThreeDistillError, match="not a run directory"):
        fit_run_rows(tmp_path, 1, lambda s: None)
    nerf = fit(
        scene=str(captured[0]),
        steps=1,
        out=str(tmp_path / "nerf"),
        overrides=FIT_FAST + ["representation=nerf"],
        **QUIET,
    )
    with pytest.raises(ThreeDistillError, match="is a fit run of nerf; give a t3d fit run of Gaussians"):
        fit_run_rows(nerf.dir, 1, lambda s: None)
