"""`t3d bench drag` (issue #24) on one small toy drag, with the methods that need no prior."""

from __future__ import annotations

import json

import pytest

from threedistill.bench.drag_bench import DRAG_ROW, check_methods, config_digest, markdown_report, run_drag_bench
from threedistill.errors import ConfigError
from threedistill.toyworld.drags import DRAGS


def test_the_drag_bench_scores_no_edit_the_geometric_drag_and_drag_sds_against_the_dragged_object(tmp_path):
    name = "house-roof_up"
    result = run_drag_bench(
        ["none", "warp", "joint", "drag"], [name], tmp_path, tmp_path / "pictures", fit_steps=30, log=lambda s: None,
        size=(8, 48, 36), drag_steps=4, overrides=["trainer.batch_size=2", "trainer.preview_every=0"],
    )  # fmt: skip
    none, warp, joint, drag_sds = result["rows"]
    assert drag_sds["outside_psnr"] > 35 and 0 < drag_sds["target_iou"] <= 1  # only the part and its ring moved
    drag = DRAGS[name]
    move = float((drag.target_points() - drag.handle_points()).norm(dim=1).mean()) / 2  # object size 2 (own frame)
    assert none["handle_error"] == pytest.approx(move, rel=1e-3)  # no edit: each handle is still where it was
    assert none["outside_identical"] and 0 < none["target_iou"] <= 1
    assert warp["handle_error"] < none["handle_error"]  # the handles' neighbourhoods moved toward the targets
    assert warp["outside_psnr"] > 40
    # the roof moved rigidly (two pairs moved alike: a shift) lands its handles nearer than the falloff warp
    assert joint["handle_error"] < warp["handle_error"] and joint["outside_psnr"] > 40
    report = markdown_report(result, "# header")
    assert f"| {name} | 2 | warp |" in report and "| none | 1 |" in report and "| drag | 1 |" in report
    assert (tmp_path / "pictures" / f"{name}_warp.png").is_file()
    again = run_drag_bench(
        ["none"], [name], tmp_path, fit_steps=30, log=lambda s: None, size=(8, 48, 36),
        overrides=["trainer.batch_size=2", "trainer.preview_every=0"],
    )  # fmt: skip
    assert again["rows"][0] == none  # finished rows are read back, not run again
    other = run_drag_bench(
        ["none"], [name], tmp_path, fit_steps=30, log=lambda s: None, size=(8, 48, 36), overrides=["seed=3"]
    )  # fmt: skip
    assert other["rows"][0]["task"]["overrides"] == ["seed=3"]  # a variant's rows go beside, not over, the others
    longer = run_drag_bench(
        ["none"], [name], tmp_path, fit_steps=30, log=lambda s: None, size=(8, 48, 36), edit_steps=7,
        overrides=["trainer.batch_size=2", "trainer.preview_every=0"],
    )  # fmt: skip
    assert longer["rows"][0]["task"]["steps"] == 7  # other steps: a variant too, beside the others
    assert len([p for p in (tmp_path / "edits" / name).iterdir() if p.name.startswith("none")]) == 3
    assert run_drag_bench(
        ["none"], [name], tmp_path, fit_steps=30, log=lambda s: None, size=(8, 48, 36),
        overrides=["trainer.batch_size=2", "trainer.preview_every=0"],
    )["rows"][0] == none  # fmt: skip
    # a row scored with an older handle error is scored again from its saved edit, not edited again
    row_file = next((tmp_path / "edits" / name).glob(f"drag*/{DRAG_ROW}"))
    older = json.loads(row_file.read_text())
    older["task"]["metric"], older["handle_error"], older["seconds"] = 1, -1.0, 12345.0
    row_file.write_text(json.dumps(older))
    runs = sorted(row_file.parent.glob("*/edit-*@*"))
    rescored = run_drag_bench(
        ["drag"], [name], tmp_path, fit_steps=30, log=lambda s: None, size=(8, 48, 36), drag_steps=4,
        overrides=["trainer.batch_size=2", "trainer.preview_every=0"],
    )["rows"][0]  # fmt: skip
    assert rescored["handle_error"] == drag_sds["handle_error"] and rescored["seconds"] == 12345.0
    assert rescored["task"] == drag_sds["task"] and sorted(row_file.parent.glob("*/edit-*@*")) == runs
    # a row belongs to the default config it ran under: one made under another configs/edit/drag.yaml is run again
    assert drag_sds["task"]["config"] == config_digest("drag") and config_digest("warp") is None
    row_file = next((tmp_path / "edits" / name).glob(f"drag*/{DRAG_ROW}"))
    stale = json.loads(row_file.read_text())
    stale["task"]["config"], stale["target_iou"] = "an older config", -1.0
    row_file.write_text(json.dumps(stale))
    rerun = run_drag_bench(
        ["drag"], [name], tmp_path, fit_steps=30, log=lambda s: None, size=(8, 48, 36), drag_steps=4,
        overrides=["trainer.batch_size=2", "trainer.preview_every=0"],
    )  # fmt: skip
    assert rerun["rows"][0]["target_iou"] == drag_sds["target_iou"]  # made again (deterministic), not read back


def test_unknown_methods_and_drags_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="unknown drag bench method 'magic'"):
        check_methods(["none", "magic"])
    with pytest.raises(Exception, match="unknown toy drag"):
        run_drag_bench(["none"], ["robot-dance"], tmp_path)
    assert not list(tmp_path.iterdir())
