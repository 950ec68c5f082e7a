"""`t3d fit` (photometric reconstruction of captured scenes) and `t3d edit` (DDS / SDS edits inside a region)."""

import json

import pytest
import torch
from conftest import FIT_FAST

from threedistill.bench.edit_bench import object_region
from threedistill.cameras import orbit_cameras
from threedistill.editing.dds import DDSConfig, DDSGuidance
from threedistill.editing.region import EditRegion
from threedistill.errors import ConfigError, ThreeDistillError, UnknownNameError
from threedistill.scenes.views import PhotometricLoss
from threedistill.workflows.edit import edit
from threedistill.workflows.fit import fit, load_fit_model

EDIT_FAST = ["device=cpu", "export=[]", "trainer.resolution=16", "trainer.batch_size=1", "trainer.preview_every=0"]


def cube_region(scene_dir) -> str:
    """A box around the scene's first object (the red cube), above the ground, in the capture's coordinates."""
    return object_region(scene_dir, 0)


def test_fit_reconstructs_held_out_views_and_reports_psnr(captured):
    _, run = captured
    metrics = json.loads((run.dir / "metrics.json").read_text())
    assert metrics["val"]["views"] == 2 and metrics["val"]["psnr"] > 20.0, metrics
    from threedistill.scenes import load_scene
    from threedistill.workflows.fit import build_model, evaluate_views

    data = load_scene(run.config.scene)  # the points-seeded start is far worse than the fit
    start = build_model(run.config, data, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert evaluate_views(start, data, data.val_indices)["psnr"] < metrics["val"]["psnr"] - 3
    assert (run.dir / "renders" / "val.png").is_file()
    assert len(load_fit_model(run.dir)) == len(run.model)


def test_interrupted_fit_resumes_to_the_same_parameters(captured, tmp_path):
    scene, _ = captured
    args = dict(
        scene=str(scene),
        steps=30,
        seed=1,
        progress=False,
        log=lambda s: None,
        overrides=FIT_FAST + ["trainer.checkpoint_every=10"],
    )
    full = fit(out=str(tmp_path / "a"), **args)
    cut = fit(out=str(tmp_path / "b"), stop_at=25, **args)
    resumed = fit(resume=cut.dir, progress=False, log=lambda s: None)
    assert resumed.trainer.step == 30
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_photometric_loss_is_zero_on_the_images_and_ignores_masked_pixels():
    loss = PhotometricLoss(0.2)
    images = torch.rand(2, 3, 16, 16)
    assert float(loss(images.clone(), None, None, 0, images=images)["loss_photometric"]) < 1e-6
    masks = torch.ones(2, 1, 16, 16)
    masks[..., :, 8:] = 0
    render = images.clone()
    render[..., :, 8:] = 0.0  # wrong only where the mask says "ignore"
    assert float(loss(render, None, None, 0, images=images, masks=masks)["l1"]) < 1e-6
    assert float(loss(render, None, None, 0, images=images)["l1"]) > 0.05


def test_dds_gradient_vanishes_when_edit_and_source_agree(toy_prior):
    """guidance_spec 12.1: x_tgt = x_src and y_tgt = y_src give G = 0 exactly; a different target prompt does not."""
    guidance = DDSGuidance(toy_prior, DDSConfig(source_prompt="a red cube", guidance_scale=20.0))
    rgb = torch.rand(2, 3, 16, 16)
    cams = orbit_cameras([0.0, 90.0], 20.0, 3.0)
    for prompt, vanishes in (("a red cube", True), ("a blue cube", False)):
        state = guidance.prompt_state(prompt)
        out = guidance(
            rgb.clone().requires_grad_(True), cams, state, 0, torch.Generator().manual_seed(0), source=rgb.clone()
        )
        assert (float(out["grad_norm"]) == 0.0) == vanishes, prompt


def test_edit_changes_only_the_region_and_moves_its_colour(captured, tmp_path):
    assert_region_only_edit(captured, tmp_path, EDIT_FAST, source_prompt="a red cube")


def assert_region_only_edit(captured, tmp_path, overrides, **kwargs):
    """An edit toward "a blue cube" in the cube's box changes every parameter group inside it, nothing outside,
    and makes the region bluer (shared with tests/test_edit_in2n.py)."""
    scene, run = captured
    before = load_fit_model(run.dir)
    result = edit(
        source=str(run.dir),
        prompt="a blue cube",
        region=cube_region(scene),
        steps=12,
        seed=0,
        out=str(tmp_path),
        progress=False,
        log=lambda s: None,
        overrides=overrides,
        **kwargs,
    )
    after = result.model
    region = EditRegion.parse(cube_region(scene)).transformed(load_scene_transform(run.dir))
    inside = region.contains(before.means)
    assert 0 < int(inside.sum()) < len(before)
    for name in ("means", "sh", "log_scales", "opacity_logits", "quats"):
        a, b = getattr(before, name).detach(), getattr(after, name).detach()
        assert torch.equal(a[~inside], b[~inside]), f"{name} changed outside the region"
        assert not torch.equal(a[inside], b[inside]), f"{name} did not change inside the region"
    blue = lambda g: float((g.sh.detach()[inside, 0, 2] - g.sh.detach()[inside, 0, 0]).mean())  # noqa: E731
    assert blue(after) > blue(before)
    assert (result.dir / "renders" / "edit.png").is_file()


def test_runs_record_absolute_paths_so_they_are_edited_from_any_folder(captured, tmp_path, monkeypatch):
    """A fit given a relative --scene, then edited (by a relative run path) from another working directory: the
    edit finds the scene; both configs hold absolute paths."""
    scene, _ = captured
    monkeypatch.chdir(scene.parent)
    fitted = fit(
        scene=scene.name,
        steps=2,
        seed=0,
        out=str(tmp_path / "fits"),
        progress=False,
        log=lambda s: None,
        overrides=FIT_FAST,
    )
    assert fitted.config.scene == str(scene.resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    edited = edit(
        source=str(fitted.dir.relative_to(tmp_path)),
        prompt="a blue cube",
        region=cube_region(scene),
        steps=1,
        seed=0,
        out="edits",
        progress=False,
        log=lambda s: None,
        overrides=EDIT_FAST,
        source_prompt="a red cube",
    )
    assert edited.config.source == str(fitted.dir.resolve())
    edit_dir = edited.dir.resolve()
    monkeypatch.chdir(tmp_path / "elsewhere")
    from threedistill.workflows.loading import load_run, scene_source

    assert scene_source(load_run(edit_dir))[1] == scene.resolve()


def load_scene_transform(fit_dir):
    from threedistill.config import load_config
    from threedistill.scenes import load_scene
    from threedistill.workflows.fit import FitConfig

    return load_scene(load_config(FitConfig, fit_dir / "config.yaml").scene).transform


def test_edit_scales_the_view_dependent_colour_updates_of_the_region(captured):
    """sh_rest_lr_factor: the SH bands above 0 move that fraction of Adam's step (0: not at all), band 0 moves
    in full, and Gaussians outside the region not at all; resuming from a checkpoint keeps the rule."""
    import copy

    from threedistill.editing.region_model import RegionModel

    scene, run = captured
    base = load_fit_model(run.dir)
    assert base.sh.shape[1] > 1
    region = EditRegion.parse(cube_region(scene)).transformed(load_scene_transform(run.dir))
    inside = region.contains(base.means.detach())
    cams = orbit_cameras([0.0, 120.0], 20.0, 3.0)

    def one_step(factor):
        g = copy.deepcopy(base).requires_grad_(True)
        model = RegionModel(g, inside, sh_rest_lr_factor=factor)
        optimizer = torch.optim.Adam(model.param_groups())
        model.render(cams, 16, 16)["rgb"][:, 2].mean().neg().backward()  # bluer
        optimizer.step()
        model.after_step()
        return (g.sh.detach() - base.sh.detach()), model

    full, _ = one_step(1.0)
    assert full[inside, 1:].abs().max() > 0 and full[~inside].abs().max() == 0
    tenth, model = one_step(0.1)
    assert torch.allclose(tenth[inside, 1:], 0.1 * full[inside, 1:], atol=1e-7)
    assert torch.equal(tenth[inside, :1], full[inside, :1])
    frozen, _ = one_step(0.0)
    assert frozen[inside, 1:].abs().max() == 0 and frozen[inside, 0].abs().max() > 0
    model.load_tensors(base.state_dict())  # a resumed edit scales from the restored bands, not from older ones
    model.after_step()
    assert torch.equal(model.gaussians.sh.detach(), base.sh.detach())


def test_region_parsing_transform_and_membership():
    box = EditRegion.parse("box:1,2,3,0.5,0.5,1")
    assert box.contains(torch.tensor([[1.4, 2.0, 3.9], [1.6, 2.0, 3.0]])).tolist() == [True, False]
    move = torch.eye(4)
    move[:3, :3] = 2 * torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # Y up -> Z up, scale 2
    move[:3, 3] = torch.tensor([1.0, 0.0, 0.0])
    moved = box.transformed(move)
    assert torch.allclose(moved.centre, torch.tensor([3.0, -6.0, 4.0]))
    assert torch.allclose(moved.size, torch.tensor([1.0, 2.0, 1.0]))
    sphere = EditRegion.parse("sphere:0,0,0,1").transformed(move)
    assert float(sphere.size) == pytest.approx(2.0)
    for bad in ("box:1,2,3", "cube:0,0,0,1,1,1", "sphere:0,0,0,-1", "sphere:0,0,nan,1", "box:a,b,c,d,e,f"):
        with pytest.raises(ConfigError, match="edit region"):
            EditRegion.parse(bad)


def test_edit_and_fit_errors_are_one_line(captured, tmp_path):
    scene, run = captured
    quiet = dict(progress=False, log=lambda s: None, out=str(tmp_path), overrides=EDIT_FAST)
    cases = [
        (dict(source=str(run.dir), prompt="a blue cube"), ConfigError, "source prompt"),  # DDS without y_src
        (dict(source=str(run.dir), prompt=" ", source_prompt="a red cube"), ConfigError, "prompt is empty"),
        (dict(source=str(run.dir), prompt="a blue cube", method="magic"), UnknownNameError, "dds"),
        (
            dict(source=str(run.dir), prompt="a blue cube", source_prompt="a red cube", region="sphere:99,99,99,0.1"),
            ThreeDistillError,
            "holds none",
        ),
        (
            dict(source=str(tmp_path / "nope"), prompt="a blue cube", source_prompt="a red cube"),
            ThreeDistillError,
            "does not exist",
        ),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error, match=words) as info:
            edit(steps=1, **kwargs, **quiet)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"sh_rest_lr_factor must be in \[0, 1\].*got -0.5") as info:
        edit(
            source=str(run.dir),
            prompt="a blue cube",
            source_prompt="a red cube",
            steps=1,
            progress=False,
            log=lambda s: None,
            out=str(tmp_path),
            overrides=EDIT_FAST + ["sh_rest_lr_factor=-0.5"],
        )
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="gaussians or nerf"):
        fit(scene=str(scene), representation="mesh", progress=False, log=lambda s: None)
    with pytest.raises(ThreeDistillError, match=str(tmp_path / "empty")):
        (tmp_path / "empty").mkdir()
        fit(scene=str(tmp_path / "empty"), progress=False, log=lambda s: None, out=str(tmp_path))


def test_a_2d_mask_on_one_view_selects_the_object_in_3d(captured, tmp_path):
    """`view:NAME:MASK.png`: the cube's instance mask in one captured view selects most of the Gaussians that belong
    to the cube (its hidden back included; `object_membership`: nearest ground-truth surface), and little else."""
    import imageio.v3 as iio
    import numpy as np

    from threedistill.bench.edit_bench import object_membership
    from threedistill.editing.lift import lift_view_mask
    from threedistill.scenes import load_scene

    scene_dir, run = captured
    data, model = load_scene(str(scene_dir)), load_fit_model(run.dir)
    name = data.image_paths[1].name
    cube = (iio.imread(scene_dir / "instances" / name) == 2).astype(np.uint8) * 255  # ids are written + 1
    iio.imwrite(tmp_path / "mask.png", cube)
    selected, framing = lift_view_mask(data, model, f"view:{name}:{tmp_path / 'mask.png'}")
    cube_gaussians = object_membership(scene_dir, data, model) == 0
    both = int((selected & cube_gaussians).sum())
    assert both / int(cube_gaussians.sum()) > 0.6 and both / int(selected.sum()) > 0.8, (
        both,
        int(selected.sum()),
        int(cube_gaussians.sum()),
    )
    assert framing.contains(model.means.detach()[cube_gaussians]).float().mean() > 0.8
    iio.imwrite(tmp_path / "empty.png", np.zeros_like(cube))
    for text, words in (
        (f"view:nope.png:{tmp_path / 'mask.png'}", "no view 'nope.png'"),
        (f"view:{name}:{tmp_path / 'empty.png'}", "is empty"),
        (f"view:{name}:{tmp_path / 'missing.png'}", "does not exist"),
        ("view:x", "bad edit mask"),
    ):
        with pytest.raises(ConfigError, match=words):
            lift_view_mask(data, model, text)


def test_exports_are_in_the_capture_frame_and_a_ready_ply_can_be_edited(captured, tmp_path):
    """The fit's point_cloud.ply lines up with the capture's own coordinates (the COLMAP points), and a 3DGS .ply
    given to t3d edit is edited as it is (no fit), its result exported back in the ply's frame."""
    import numpy as np

    from threedistill.export.splats import read_ply
    from threedistill.scenes import load_scene
    from threedistill.workflows.fit import export_scene_model

    scene_dir, run = captured
    data, model = load_scene(str(scene_dir)), load_fit_model(run.dir)
    export_scene_model(model, "gaussians", data, ["ply"], tmp_path, log=lambda s: None)
    ply = tmp_path / "export" / "point_cloud.ply"
    written = read_ply(ply)
    assert np.allclose(written.means, data.to_original(model.means.detach()).numpy(), atol=1e-4)
    colmap_points = np.loadtxt(scene_dir / "sparse" / "0" / "points3D.txt", comments="#", usecols=(1, 2, 3))
    assert np.abs(np.median(written.means, 0) - np.median(colmap_points, 0)).max() < 0.2  # the capture's frame
    region = "sphere:" + ",".join(f"{v:.4f}" for v in np.median(written.means, 0)) + ",0.8"
    result = edit(
        source=str(ply),
        prompt="a blue cube",
        source_prompt="a red cube",
        region=region,
        steps=3,
        seed=0,
        out=str(tmp_path / "runs"),
        progress=False,
        log=lambda s: None,
        overrides=[o for o in EDIT_FAST if o != "export=[]"],
    )
    assert len(result.model) == len(model)
    edited = read_ply(result.dir / "export" / "point_cloud.ply")
    changed = np.abs(edited.means - written.means).max(-1) > 1e-6
    assert 0 < changed.sum() < len(changed)
    assert np.allclose(edited.means[~changed], written.means[~changed], atol=1e-4)


def test_a_nerf_fits_too_but_only_gaussians_are_edited(captured, tmp_path):
    scene, _ = captured
    run = fit(
        scene=str(scene),
        representation="nerf",
        steps=3,
        seed=0,
        out=str(tmp_path),
        progress=False,
        log=lambda s: None,
        overrides=FIT_FAST + ["nerf.n_samples=8", "nerf.n_importance=8", "nerf.levels=4", "nerf.log2_table_size=10"],
    )
    metrics = json.loads((run.dir / "metrics.json").read_text())
    assert metrics["val"]["views"] == 2 and metrics["val"]["psnr"] > 5
    assert type(load_fit_model(run.dir)).__name__ == "NeRF"
    with pytest.raises(ThreeDistillError, match="edits Gaussians scenes"):
        edit(
            source=str(run.dir),
            prompt="a blue cube",
            source_prompt="a red cube",
            steps=1,
            out=str(tmp_path),
            progress=False,
            log=lambda s: None,
        )


def test_fit_and_edit_runs_export_and_evaluate_like_any_run(captured, tmp_path):
    """t3d export and t3d eval take fit and edit runs: splat formats in the capture's frame (the same bytes as the
    automatic export), a mesh, held-out PSNR; an edit run can itself be edited further."""
    import numpy as np

    from threedistill.export.splats import read_ply
    from threedistill.scenes import load_scene
    from threedistill.workflows.fit import export_scene_model
    from threedistill.workflows.loading import load_run
    from threedistill.workflows.results import evaluate_run, export_run

    scene_dir, run = captured
    for fmt in ("ply", "splat", "spz", "glb"):
        path = export_run(run.dir, fmt, out=tmp_path / f"fit.{fmt}", faces=2000, texture_size=0)
        assert path.is_file() and path.stat().st_size > 100, fmt
    export_scene_model(
        load_fit_model(run.dir), "gaussians", load_scene(str(scene_dir)), ["ply"], tmp_path / "auto", log=lambda s: None
    )
    assert (tmp_path / "fit.ply").read_bytes() == (tmp_path / "auto" / "export" / "point_cloud.ply").read_bytes()
    fit_eval = evaluate_run(run.dir)["eval"]
    assert fit_eval["kind"] == "fit" and fit_eval["views"] == 2 and fit_eval["psnr"] > 12
    assert json.loads((run.dir / "metrics.json").read_text())["eval"] == fit_eval

    edited = edit(
        source=str(run.dir),
        prompt="a blue cube",
        source_prompt="a red cube",
        region=cube_region(scene_dir),
        steps=2,
        seed=0,
        out=str(tmp_path / "runs"),
        progress=False,
        log=lambda s: None,
        overrides=EDIT_FAST,
    )
    assert load_run(edited.dir).kind == "edit"
    for fmt in ("ply", "splat", "spz", "glb"):
        assert export_run(edited.dir, fmt, out=tmp_path / f"edit.{fmt}", faces=2000, texture_size=0).is_file()
    data = load_scene(str(scene_dir))
    assert np.allclose(
        read_ply(tmp_path / "edit.ply").means, data.to_original(edited.model.means.detach()).numpy(), atol=1e-4
    )
    edit_eval = evaluate_run(edited.dir)["eval"]
    assert edit_eval["kind"] == "edit" and "unedited" in edit_eval["against"] and edit_eval["psnr"] > 12
    again = edit(
        source=str(edited.dir),
        prompt="a blue cube",
        source_prompt="a red cube",
        region=cube_region(scene_dir),
        steps=1,
        seed=0,
        out=str(tmp_path / "runs"),
        progress=False,
        log=lambda s: None,
        overrides=EDIT_FAST,
    )
    fitted = load_fit_model(run.dir).sh.detach()
    step_from = lambda start: float((again.model.sh.detach() - start).abs().max())  # noqa: E731
    assert step_from(edited.model.sh.detach()) < step_from(fitted)  # the second edit started from the first
    with pytest.raises(ThreeDistillError, match="not a run directory"):
        evaluate_run(tmp_path)


def test_export_of_a_fit_run_from_the_command_line(captured, tmp_path):
    import subprocess
    import sys

    _, run = captured
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "threedistill.cli",
            "export",
            str(run.dir),
            "--format",
            "spz",
            "--out",
            str(tmp_path / "scene.spz"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "scene.spz").stat().st_size > 100
    bad = subprocess.run(
        [sys.executable, "-m", "threedistill.cli", "export", str(tmp_path), "--format", "ply"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "not a run directory" in bad.stderr and "Traceback" not in bad.stderr


def test_an_edit_run_saves_the_files_it_names_by_absolute_paths(tmp_path, monkeypatch):
    """The edit config's file fields (drag points, mask, teacher, prior, view masks) that exist by a relative path
    are made absolute when the run starts; names and missing paths stay as given."""
    from threedistill.workflows.edit_config import DragEditConfig, EditConfig

    monkeypatch.chdir(tmp_path)
    for name in ("points.json", "mask.npy", "masks/a.png", "masks/b.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "teacher").mkdir()
    root = tmp_path.resolve()
    drag = EditConfig(method="drag", prior="toyworld", drag=DragEditConfig(file="points.json", teacher="teacher"))
    drag.drag.gaussian_mask = "./mask.npy"
    drag.resolve_paths()
    assert (drag.drag.file, drag.drag.teacher) == (str(root / "points.json"), str(root / "teacher"))
    assert drag.drag.gaussian_mask == str(root / "mask.npy") and drag.prior == "toyworld"  # a name stays
    masked = EditConfig(region="view:img_01.png:masks/a.png;view:img_02.png:masks/missing.png")
    masked.resolve_paths()
    assert masked.region == f"view:img_01.png:{root / 'masks/a.png'};view:img_02.png:masks/missing.png"
