"""`t3d edit --method drag` end to end on a small fitted toy capture (with an untrained teacher of the shipped layout:
these tests check the plumbing and the guarantees, docs/benchmarks/drag.md the quality), and its input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from threedistill.cli import main as cli_main
from threedistill.errors import ConfigError
from threedistill.workflows.edit import edit
from threedistill.workflows.loading import load_run


@pytest.fixture(scope="module")
def teacher_dir(tiny_drag_teacher):
    return tiny_drag_teacher


def main(argv: list[str]) -> int:
    """The CLI's exit code for argv (run in this process)."""
    try:
        cli_main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def part_of(run):
    """A sphere around some of the fit's Gaussians (normalised frame) and a drag of its centre."""
    means = run.model.means.detach()
    centre = means.median(0).values
    radius = float((means - centre).norm(dim=1).quantile(0.1))
    target = centre + torch.tensor([0.0, 0.1, 0.0])
    sphere = "sphere:" + ",".join(f"{v:.5f}" for v in [*centre.tolist(), radius])
    drag = ",".join(f"{v:.5f}" for v in centre.tolist()) + ">" + ",".join(f"{v:.5f}" for v in target.tolist())
    return sphere, drag


FAST = ["region_frame=normalised", "trainer.steps=6", "trainer.batch_size=2", "trainer.resolution=32",
        "trainer.preview_every=0", "export=[ply]", "device=cpu"]  # fmt: skip


def test_a_drag_edit_moves_the_part_and_leaves_every_other_gaussian_bit_identical(captured, teacher_dir, tmp_path):
    _, fit_run = captured
    sphere, drag = part_of(fit_run)
    run = edit(
        source=str(fit_run.dir), method="drag", region=sphere, drag=[drag], out=str(tmp_path), progress=False,
        log=lambda s: None, overrides=FAST + [f"drag.teacher={teacher_dir}", "drag.scaffold.lr=0.05"],
    )  # fmt: skip
    source = fit_run.model
    edited = load_run(run.dir).model  # what the run's checkpoint holds
    selected = run.model.means.new_zeros(len(source), dtype=torch.bool)
    from threedistill.editing.region import EditRegion

    selected = EditRegion.parse(sphere).contains(source.means.detach())
    metrics = (run.dir / "metrics.json").read_text()
    assert '"ring_gaussians"' in metrics and (run.dir / "export" / "point_cloud.ply").is_file()
    moved = (edited.means - source.means.detach()).norm(dim=1) > 0
    assert moved[selected].any()  # the field moved the part
    ring = int(metrics.split('"ring_gaussians": ')[1].split(",")[0].split("}")[0])
    assert int(moved.sum()) <= int(selected.sum()) + ring
    from threedistill.editing.drag_model import knn_ring

    rest = ~(selected | knn_ring(source.means.detach(), selected, 20))
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        assert torch.equal(getattr(edited, name)[rest], getattr(source, name).detach()[rest])
    for name in ("log_scales", "opacity_logits", "sh"):  # the default: only the field learns
        assert torch.equal(getattr(edited, name), getattr(source, name).detach())
    # orientations: the part's turn with it where the rigid start turns it (drag.start=joint), nothing else's
    assert torch.equal(edited.quats[~selected], source.quats.detach()[~selected])
    dyg = edit(
        source=str(fit_run.dir), method="drag", region=sphere, drag=[drag], out=str(tmp_path / "dyg"), progress=False,
        log=lambda s: None, overrides=FAST + [f"drag.teacher={teacher_dir}", "drag.lr.sh=2.5e-3"],
    )  # fmt: skip
    changed = (load_run(dyg.dir).model.sh - source.sh.detach()).abs().flatten(1).amax(1) > 0
    assert changed[selected].any() and not changed[rest].any()  # DYG's second phase: the part's colours learn too


def test_a_drag_edit_takes_a_gaussian_mask_file(captured, teacher_dir, tmp_path):
    _, fit_run = captured
    sphere, drag = part_of(fit_run)
    from threedistill.editing.region import EditRegion

    mask = EditRegion.parse(sphere).contains(fit_run.model.means.detach()).numpy()
    np.save(tmp_path / "mask.npy", mask)
    code = main(
        ["edit", "--scene", str(fit_run.dir), "--method", "drag", "--drag", drag, "--mask", str(tmp_path / "mask.npy"),
         "--out", str(tmp_path / "runs"), *FAST, f"drag.teacher={teacher_dir}"]
    )  # fmt: skip
    assert code == 0
    assert list((tmp_path / "runs").glob("*/edit-drag@*/export/point_cloud.ply"))


def test_a_drag_edit_can_start_from_the_geometric_warp(captured, teacher_dir, tmp_path):
    from threedistill.editing.drag_points import DragPoints, default_falloff, warp_gaussians
    from threedistill.editing.region import EditRegion

    _, fit_run = captured
    sphere, drag = part_of(fit_run)
    run = edit(
        source=str(fit_run.dir), method="drag", region=sphere, drag=[drag], out=str(tmp_path), progress=False,
        log=lambda s: None,
        overrides=FAST + [f"drag.teacher={teacher_dir}", "drag.start=warp", "drag.hint=start", "trainer.steps=1"],
    )  # fmt: skip
    source = fit_run.model.means.detach()
    selected = EditRegion.parse(sphere).contains(source)
    points = DragPoints.parse([drag])
    warped = warp_gaussians(source, selected, points, default_falloff(points))
    edited = load_run(run.dir).model.means.detach()
    moved = (warped - source).norm(dim=1)
    assert moved.max() > 0.05  # the warp moves the part's Gaussians near the handle by most of the drag
    # after one step the part sits where the warp put it, up to the field's first Adam step (about 0.013 here)
    assert (edited - warped)[selected].norm(dim=1).max() < 0.25 * moved.max()


def test_a_drag_edit_can_start_from_the_part_moved_rigidly_with_the_hint_rendered_from_there(
    captured, teacher_dir, tmp_path
):
    from threedistill.editing.drag_points import DragPoints, joint_motion
    from threedistill.editing.region import EditRegion

    _, fit_run = captured
    sphere, drag = part_of(fit_run)
    lines = []
    run = edit(
        source=str(fit_run.dir), method="drag", region=sphere, drag=[drag], out=str(tmp_path), progress=False,
        log=lines.append, overrides=FAST + [f"drag.teacher={teacher_dir}", "drag.start=joint", "drag.hint=start",
                                            "trainer.steps=1"],
    )  # fmt: skip
    source = fit_run.model.means.detach()
    selected = EditRegion.parse(sphere).contains(source)
    motion = joint_motion(source, selected, DragPoints.parse([drag]))
    rigid = motion.moved(fit_run.model, selected).means.detach()
    edited = load_run(run.dir).model.means.detach()
    moved = (rigid - source).norm(dim=1)
    assert moved.max() > 0.05
    assert (edited - rigid)[selected].norm(dim=1).max() < 0.25 * moved.max()  # where the rigid move put it
    assert any("drag: starts from the part" in line for line in lines)


def test_the_rigid_move_alone_is_a_drag_edit_whose_field_stays_at_zero(captured, teacher_dir, tmp_path):
    """The README's recipe for real captures until a real drag teacher is given (`trainer.steps=1
    drag.scaffold.lr=0`): the part ends exactly where `drag.start=joint` moves it, with its orientations turned
    alike; everything else is bit-identical."""
    from threedistill.editing.drag_points import DragPoints, joint_motion
    from threedistill.editing.region import EditRegion

    _, fit_run = captured
    sphere, drag = part_of(fit_run)
    run = edit(
        source=str(fit_run.dir), method="drag", region=sphere, drag=[drag], out=str(tmp_path), progress=False,
        log=lambda s: None, overrides=FAST + [f"drag.teacher={teacher_dir}", "drag.start=joint", "drag.hint=start",
                                              "trainer.steps=1", "drag.scaffold.lr=0"],
    )  # fmt: skip
    source = fit_run.model
    selected = EditRegion.parse(sphere).contains(source.means.detach())
    rigid = joint_motion(source.means.detach(), selected, DragPoints.parse([drag])).moved(source, selected)
    edited = load_run(run.dir).model
    assert (rigid.means.detach() - source.means.detach())[selected].norm(dim=1).max() > 0.05
    torch.testing.assert_close(edited.means, rigid.means.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(edited.quats, rigid.quats.detach(), atol=1e-6, rtol=0)
    assert torch.equal(edited.means[~selected], source.means.detach()[~selected])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mask", "sphere:0,0,0,0.5"], "needs points"),
        (["--drag", "0,0,0>0,0.1,0"], "needs the Gaussians to move"),
        (["--drag", "0,0,0>0,0.1", "--mask", "sphere:0,0,0,0.5"], "bad --drag"),
        (["--drag", "0,0,0>0,0.1,0", "--drag-file", "x.json", "--mask", "sphere:0,0,0,0.5"], "once"),
        (["--drag", "40,0,0>0,0.1,0", "--mask", "sphere:0,0,0,0.5"], r"handle point 1 \[40.0, 0.0, 0.0\] lies outside"),
        (["--drag", "0,0,0>0,0.1,0", "--mask", "missing.pt"], "missing.pt not found"),
        (["--drag", "0,0,0>0,0.1,0", "--mask", "missing.pt", "--mask", "sphere:0,0,0,1"], "given alone"),
        (["--drag", "0,0,0>0,0.1,0", "--mask", "sphere:0,0,0,0.5", "drag.lr.sh=-1"], r"drag.lr.sh must be >= 0"),
    ],
)
def test_drag_input_errors_are_one_line(captured, tmp_path, capsys, args, message):
    _, fit_run = captured
    code = main(["edit", "--scene", str(fit_run.dir), "--method", "drag", *args, "--out", str(tmp_path), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and err[-1] == errors[0] and "Traceback" not in "".join(err)
    import re

    assert re.search(message, errors[0]), errors[0]


def test_drag_points_belong_to_the_drag_method_only(captured, tmp_path):
    _, fit_run = captured
    with pytest.raises(ConfigError, match="for --method drag"):
        edit(source=str(fit_run.dir), method="dds", prompt="a blue cube", drag=["0,0,0>0,1,0"], out=str(tmp_path))


def test_a_drag_file_with_unequal_point_counts_is_refused(captured, tmp_path, capsys):
    _, fit_run = captured
    bad = tmp_path / "drag_points.json"
    bad.write_text('{"handle_points": [[0, 0, 0], [0, 0.1, 0]], "target_points": [[0, 0.2, 0]]}')
    code = main(["edit", "--scene", str(fit_run.dir), "--method", "drag", "--drag-file", str(bad), "--mask",
                 "sphere:0,0,0,0.5", *FAST])  # fmt: skip
    assert code == 2 and "2 handle points but 1 target points" in capsys.readouterr().err


def test_an_interrupted_drag_edit_resumes_to_the_same_result(captured, teacher_dir, tmp_path):
    _, fit_run = captured
    sphere, drag = part_of(fit_run)
    overrides = FAST + [f"drag.teacher={teacher_dir}", "trainer.checkpoint_every=3", "export=[]"]
    args = dict(source=str(fit_run.dir), method="drag", region=sphere, drag=[drag], progress=False, log=lambda s: None,
                overrides=overrides)  # fmt: skip
    whole = edit(out=str(tmp_path / "a"), **args)
    stopped = edit(out=str(tmp_path / "b"), stop_at=3, **args)
    resumed = edit(resume=str(stopped.dir), progress=False, log=lambda s: None)
    a, b = load_run(whole.dir).model, load_run(resumed.dir).model
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        assert torch.equal(getattr(a, name), getattr(b, name))
