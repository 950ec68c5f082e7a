"""`t3d render`: images and a video of any run from its captured cameras, an orbit or a path through the captures;
and the edit preview, which shows captured views at the fit's training size."""

import json
import shutil

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import threedistill.workflows.render as render
from threedistill.cli import main
from threedistill.scenes import load_scene
from threedistill.scenes.normalize import look_centre
from threedistill.workflows.render import CAMERA_MODES, capture_order, path_cameras, render_image, render_run

QUIET = dict(progress=False, log=lambda s: None)


def psnr(a, b) -> float:
    return float(-10 * torch.log10(((torch.as_tensor(a) - torch.as_tensor(b)) ** 2).mean().clamp_min(1e-10)))


def png(path) -> torch.Tensor:
    """A written frame as (3,H,W) in [0,1]."""
    return torch.from_numpy(iio.imread(path)[..., :3].astype(np.float32) / 255).permute(2, 0, 1)


def cli(*args) -> int:
    """`t3d ARGS` in this process: its exit code (output in capsys)."""
    try:
        main(list(args))
    except SystemExit as exit:
        return exit.code or 0
    return 0


def video_frames(path) -> list[np.ndarray]:
    with iio2.get_reader(path) as reader:
        return [np.asarray(f) for f in reader]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A tiny generate run (a few steps of 200 Gaussians): orbit is its only camera set."""
    from threedistill.workflows.generate import generate

    fast = ["device=cpu", "export=[]", "gaussians.num_points=200", "trainer.batch_size=1", "trainer.resolution=16"]
    return generate(
        prompt="a red duck",
        steps=3,
        seed=0,
        out=str(tmp_path_factory.mktemp("gen")),
        overrides=fast + ["trainer.preview_every=0", "trainer.checkpoint_every=0"],
        **QUIET,
    )


def test_captured_views_resemble_their_photos_and_make_a_video(captured, tmp_path):
    scene_dir, run = captured
    scene = load_scene(scene_dir)
    result = render_run(run.dir, compare=True, **QUIET)  # fit run: captured is the default
    assert result.cameras == "captured" and result.out_dir == run.dir / "render" / "captured"
    order = capture_order(scene)
    assert [p.name for p in result.frames] == [scene.image_paths[i].name for i in order]  # named after the images
    renders = [png(p) for p in result.frames]
    assert all(r.shape == (3, 24, 32) for r in renders)  # the fit's training height (resolution=24), 4:3 views
    photos = scene.load_images(order, 24, 32)[0]
    matched = [psnr(r, p) for r, p in zip(renders, photos)]
    shifted = [psnr(r, p) for r, p in zip(renders, photos.roll(1, 0))]  # each render against another view's photo
    assert min(matched) > 18.0 and np.mean(matched) > np.mean(shifted) + 4, (matched, shifted)
    assert result.psnr == pytest.approx(matched, abs=0.2)  # compare: the same numbers from the float renders
    assert iio.imread(result.compare[0]).shape == (24, 2 * 32 + 2, 3)
    frames = video_frames(result.video)
    assert result.video.name == "video.mp4" and len(frames) == len(scene.image_paths)
    assert frames[0].shape == (24, 32, 3)
    manifest = json.loads((result.out_dir / "render.json").read_text())
    assert manifest["cameras"] == "captured" and manifest["height"] == 24 and len(manifest["psnr"]) == len(frames)
    two = render_run(run.dir, "captured", resolution=48, frames=2, video=False, out=tmp_path / "two", **QUIET)
    assert [p.name for p in two.frames] == [scene.image_paths[order[0]].name, scene.image_paths[order[-1]].name]
    assert png(two.frames[0]).shape == (3, 48, 64) and two.video is None and not list((tmp_path / "two").glob("video*"))


def test_each_captured_view_keeps_its_own_aspect_ratio_and_intrinsics(captured, tmp_path):
    """A view cropped to 24x24 (same focal length and principal point in pixels) renders at 24x24, and its render
    still matches the cropped photo; an edit run renders in its source fit's scene the same way."""
    scene_dir, run = captured
    scene_copy = shutil.copytree(scene_dir, tmp_path / "scene")
    meta = json.loads((scene_copy / "transforms.json").read_text())
    cropped = meta["frames"][3]
    image = iio.imread(scene_copy / cropped["file_path"])
    iio.imwrite(scene_copy / cropped["file_path"], image[:, :24])
    cropped["w"], cropped["h"] = 24, 24
    (scene_copy / "transforms.json").write_text(json.dumps(meta))
    run_copy = shutil.copytree(run.dir, tmp_path / "run")
    config = (run_copy / "config.yaml").read_text().replace(str(scene_dir), str(scene_copy))
    (run_copy / "config.yaml").write_text(config)

    result = render_run(run_copy, "captured", resolution=24, video=False, **QUIET)
    sizes = {p.name: png(p).shape[1:] for p in result.frames}
    name = cropped["file_path"].split("/")[-1]
    assert sizes.pop(name) == (24, 24) and set(sizes.values()) == {(24, 32)}
    scene = load_scene(scene_copy)
    index = [p.name for p in scene.image_paths].index(name)
    assert psnr(png(result.out_dir / name), scene.load_images([index], 24, 24)[0][0]) > 18.0


def test_orbit_circles_the_scene_and_falls_back_to_a_gif(captured, tmp_path, monkeypatch):
    scene_dir, run = captured
    scene = load_scene(scene_dir)

    def no_ffmpeg(*args, **kwargs):
        raise RuntimeError("ffmpeg: not found\nmore")

    monkeypatch.setattr(render, "write_mp4", no_ffmpeg)
    lines = []
    result = render_run(run.dir, "orbit", frames=8, out=tmp_path, progress=False, log=lines.append)
    assert [p.name for p in result.frames] == [f"frame_{i:04d}.png" for i in range(8)]
    frames = [png(p) for p in result.frames]
    assert all(f.shape == (3, 24, 32) for f in frames)  # the captured views' aspect ratio
    centre = torch.from_numpy(look_centre(scene.c2w.double().numpy())).float()
    offsets = result.cams.positions - centre
    azimuth = torch.rad2deg(torch.atan2(offsets[:, 0], offsets[:, 2]))
    steps = (azimuth.roll(-1) - azimuth) % 360
    assert torch.allclose(steps, torch.full((8,), 45.0), atol=1e-3)  # evenly around the full circle
    captured_offsets = scene.c2w[:, :3, 3] - centre
    assert torch.allclose(offsets.norm(dim=-1), captured_offsets.norm(dim=-1).mean(), rtol=1e-4)
    looking = torch.nn.functional.normalize(-result.cams.c2w[:, :3, 2], dim=-1)
    assert torch.allclose((looking * torch.nn.functional.normalize(-offsets, dim=-1)).sum(-1), torch.ones(8), atol=1e-4)
    diffs = [float((frames[i] - frames[(i + 1) % 8]).abs().mean()) for i in range(8)]
    assert min(diffs) > 0.01, diffs  # every frame shows the scene from elsewhere
    assert result.video.name == "video.gif" and len(video_frames(result.video)) == 8
    warnings = [line for line in lines if line.startswith("warning")]
    assert len(warnings) == 1 and "ffmpeg: not found" in warnings[0] and "\n" not in warnings[0]
    again = render_run(run.dir, "orbit", frames=4, out=tmp_path, video=False, **QUIET)  # fewer frames: no stale ones
    assert sorted(p.name for p in tmp_path.glob("frame_*.png")) == [p.name for p in again.frames]


def test_path_runs_smoothly_through_the_captured_cameras(captured, tmp_path):
    scene_dir, run = captured
    scene = load_scene(scene_dir)
    order = capture_order(scene)
    cams = scene.cameras(order)
    path = path_cameras(cams, 400)
    assert torch.allclose(path.c2w[0], cams.c2w[0], atol=1e-5) and torch.allclose(path.c2w[-1], cams.c2w[-1], atol=1e-5)
    rot = path.c2w[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(400, 3, 3), atol=1e-5)
    near = torch.cdist(cams.positions, path.positions).min(1).values
    step = (path.positions[1:] - path.positions[:-1]).norm(dim=-1)
    assert float(near.max()) < 2 * float(step.max())  # it passes through every captured camera
    assert float(step.max()) < 4 * float(step.mean())  # no jumps
    turn = (rot[1:] * rot[:-1]).sum((-2, -1))  # trace(R_i^T R_j) = 1 + 2 cos(angle)
    assert float(torch.rad2deg(torch.acos(((turn - 1) / 2).clamp(-1, 1))).max()) < 10.0

    result = render_run(run.dir, "path", frames=10, out=tmp_path, **QUIET)
    assert len(result.frames) == 10 and len(video_frames(result.video)) == 10
    photos = scene.load_images([order[0], order[-1]], 24, 32)[0]
    assert psnr(png(result.frames[0]), photos[0]) > 18.0 and psnr(png(result.frames[-1]), photos[1]) > 18.0


def test_batches_and_bands_give_the_same_image(captured):
    """Frames are rendered a few at a time within a pixel budget; a volume-rendered frame larger than its budget
    is rendered in bands of rows through the intrinsics: the same pixels either way."""
    from threedistill.representations.nerf import NeRF, NeRFConfig
    from threedistill.workflows.render import render_budget

    scene_dir, run = captured
    cams = load_scene(scene_dir).cameras([0, 5, 9])
    whole = render_image(run.model, cams, 24, 32)
    assert render_budget(run.model) == (render.PIXEL_BUDGET, False)
    assert torch.allclose(render_image(run.model, cams, 24, 32, budget=24 * 32), whole, atol=1e-5)  # one per call
    assert torch.allclose(render_image(run.model, cams, 24, 32, budget=5 * 32), whole, atol=1e-5)  # never in bands
    nerf = NeRF(NeRFConfig(n_samples=8, n_importance=8, levels=4, log2_table_size=10), torch.Generator().manual_seed(0))
    assert render_budget(nerf) == (render.RAY_BUDGET, True)
    whole = render_image(nerf, cams, 12, 16, bands=True)
    assert torch.allclose(render_image(nerf, cams, 12, 16, budget=5 * 16, bands=True), whole, atol=1e-4)
    assert float((whole - 1).abs().amax()) > 0.05  # not a blank image


def test_a_generate_run_orbits_like_its_turntable(generated, tmp_path, capsys):
    from threedistill.cameras import orbit_cameras

    assert cli("render", str(generated.dir), "--frames", "6", "--resolution", "32", "--fps", "6") == 0
    out_dir = generated.dir / "render" / "orbit"
    assert f"wrote 6 frames to {out_dir}" in capsys.readouterr().out
    frames = [png(out_dir / f"frame_{i:04d}.png") for i in range(6)]
    assert all(f.shape == (3, 32, 32) for f in frames)
    assert min(float((frames[i] - frames[(i + 1) % 6]).abs().mean()) for i in range(6)) > 1e-3
    assert len(video_frames(out_dir / "video.mp4")) == 6
    result = render_run(generated.dir, frames=6, resolution=16, video=False, out=tmp_path, **QUIET)
    turntable = orbit_cameras(torch.arange(6) * 60.0, 15.0, 2.9)
    assert torch.allclose(result.cams.c2w, turntable.c2w, atol=1e-5)  # the turntable's circle: 360 degrees


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["RUN", "--cameras", "spiral"], "unknown --cameras 'spiral'; valid: captured, orbit, path"),
        (["RUN", "--resolution", "0"], "--resolution must be between 8 and 4096"),
        (["RUN", "--resolution", "100000"], "--resolution must be between 8 and 4096"),
        (["RUN", "--frames", "0"], "--frames must be positive"),
        (["RUN", "--fps", "0"], "--fps must be positive"),
        (["RUN", "--cameras", "orbit", "--compare"], "--compare needs --cameras captured"),
        (["NOWHERE"], "is not a run directory"),
        (["GENERATED", "--cameras", "captured"], "has no captured cameras for --cameras captured; use --cameras orbit"),
        (["GENERATED", "--cameras", "path"], "use --cameras orbit"),
    ],
)
def test_bad_render_input_is_one_line(args, fragment, generated, tmp_path, capsys):
    names = {"RUN": str(generated.dir), "GENERATED": str(generated.dir), "NOWHERE": str(tmp_path / "nothing")}
    code = cli("render", *(names.get(a, a) for a in args))
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert not (tmp_path / "nothing").exists() and not (generated.dir / "render" / "captured").exists()


def test_render_help_names_every_camera_set():
    from typer.testing import CliRunner

    from threedistill.cli import app

    text = " ".join(CliRunner().invoke(app, ["render", "--help"], terminal_width=200).output.split())
    assert all(mode in text for mode in CAMERA_MODES) and "generate, fit or edit" in text
    assert "render" in CliRunner().invoke(app, ["--help"]).output


def test_edit_preview_shows_captured_views_at_the_fit_size(captured, tmp_path):
    """The edit preview: photos, the scene before and now, from up to 4 captured views that see the region, at the
    fit's training height (24 px here) and the views' 4:3 aspect, so the renders compare with the photos."""
    from types import SimpleNamespace

    from threedistill.bench.edit_bench import object_region
    from threedistill.cameras import project_points
    from threedistill.editing.region import EditRegion
    from threedistill.editing.region_model import RegionModel
    from threedistill.workflows.edit import EditConfig, edit_preview, write_edit_preview
    from threedistill.workflows.fit import load_fit_model

    scene_dir, run = captured
    scene = load_scene(scene_dir)
    gaussians = load_fit_model(run.dir)
    region = EditRegion.parse(object_region(scene_dir, 0)).transformed(scene.transform)
    selected = region.contains(gaussians.means.detach())
    preview = edit_preview(run.dir, scene, region, RegionModel(gaussians, selected), None, EditConfig())
    assert preview["whole"] and preview["size"] == (24, 32) and len(preview["cams"]) == 4
    xy, depth = project_points(region.centre.reshape(1, 3).float(), preview["cams"], 1, 1)
    assert bool((depth > 0).all() and (xy >= 0).all() and (xy <= 1).all())  # every view sees the region
    photos, before = preview["rows"][:4], preview["rows"][4:]
    assert psnr(before, photos) > 18.0
    edited = load_fit_model(run.dir)
    with torch.no_grad():
        edited.sh[selected] = 0.0  # the region's colour changed
    write_edit_preview(SimpleNamespace(dir=tmp_path), RegionModel(edited, selected), preview, 7)
    image = iio.imread(tmp_path / "renders" / "edit_000007.png")
    assert image.shape == (3 * 26 - 2, 4 * 34 - 2, 3)
    grid = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)
    rows = [torch.stack([grid[:, r * 26 : r * 26 + 24, c * 34 : c * 34 + 32] for c in range(4)]) for r in range(3)]
    assert psnr(rows[0], photos) > 40 and psnr(rows[1], before) > 40  # photos on top, the unedited scene below
    assert float((rows[2] - rows[1]).abs().amax()) > 0.2  # the edit shows in the bottom row
