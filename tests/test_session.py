"""The run session every workflow shares: run directories, their kind, resuming the right kind of run."""

import json

import pytest

from threedistill.errors import ThreeDistillError
from threedistill.session import RunSession, read_run_kind, run_config
from threedistill.workflows.fit import FitConfig
from threedistill.workflows.generate import generate


def test_a_new_session_writes_its_config_and_kind_and_never_shares_a_directory(tmp_path):
    cfg = FitConfig(scene="somewhere")
    first = RunSession.start("fit", cfg, tmp_path, "fit-gaussians", log=lambda s: None)
    second = RunSession.start("fit", cfg, tmp_path, "fit-gaussians", log=lambda s: None)
    assert first.dir != second.dir and first.dir.parent == second.dir.parent == tmp_path
    assert json.loads((first.dir / "run.json").read_text()) == {"kind": "fit"}
    assert "scene: somewhere" in (first.dir / "config.yaml").read_text()
    assert read_run_kind(first.dir) == "fit"
    first.finish({"answer": 42})
    metrics = json.loads((first.dir / "metrics.json").read_text())
    assert metrics["answer"] == 42 and metrics["wall_seconds"] >= 0


def test_runs_written_before_run_json_are_told_apart_by_their_config(tmp_path):
    for kind, text in (("generate", "prompt: a red cone\n"), ("fit", "scene: data/x\n"), ("edit", "source: r\n")):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "config.yaml").write_text(text + "trainer:\n  steps: 3\n")
        assert read_run_kind(tmp_path / kind) == kind
    with pytest.raises(ThreeDistillError, match="not a run directory"):
        read_run_kind(tmp_path)
    (tmp_path / "fit" / "run.json").write_text("{not json")
    with pytest.raises(ThreeDistillError, match=r"run\.json: invalid JSON"):
        read_run_kind(tmp_path / "fit")


def test_resuming_a_run_of_another_kind_is_a_one_line_error(tmp_path):
    session = RunSession.start("fit", FitConfig(scene="x"), tmp_path, "fit-gaussians", log=lambda s: None)
    with pytest.raises(ThreeDistillError, match="holds a fit run, not a generate run"):
        generate(resume=session.dir, progress=False, log=lambda s: None)


def test_run_config_layers_shipped_config_options_and_overrides(tmp_path):
    _, cfg = run_config(FitConfig, "fit", "representation", None, ["trainer.steps=7"], scene="s", trainer__seed=3)
    shipped = FitConfig()  # configs/fit/gaussians.yaml changes the dataclass defaults
    assert cfg.scene == "s" and cfg.trainer.steps == 7 and cfg.trainer.seed == 3
    assert cfg.trainer.steps != shipped.trainer.steps or cfg.resolution == shipped.resolution
    with pytest.raises(ThreeDistillError, match="not a run directory"):
        run_config(FitConfig, "fit", "representation", tmp_path, [])
