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


def test_a_new_run_that_fails_before_training_leaves_no_folder_and_a_resumed_one_is_kept(tmp_path):
    out = tmp_path / "out"
    session = RunSession.start("fit", FitConfig(scene="x"), out / "scene", "fit-gaussians", log=lambda s: None)
    with pytest.raises(ThreeDistillError, match="bad prior"), session:
        raise ThreeDistillError("bad prior")
    assert not out.exists()  # the run folder and the two folders start made for it
    kept = RunSession.start("fit", FitConfig(scene="x"), tmp_path, "fit-gaussians", log=lambda s: None)
    with kept:  # no error: the folder stays
        pass
    resumed = RunSession.resume("fit", FitConfig(scene="x"), kept.dir, log=lambda s: None)
    with pytest.raises(KeyboardInterrupt), resumed:
        raise KeyboardInterrupt
    assert (kept.dir / "config.yaml").is_file() and tmp_path.is_dir()  # a folder the run did not make is kept


def test_a_bad_prior_leaves_no_run_folder_but_a_crash_after_training_keeps_the_run(tmp_path, monkeypatch):
    from threedistill.workflows import generate as workflow

    args = dict(prompt="a red cone", steps=2, progress=False, log=lambda s: None, out=str(tmp_path / "runs"))
    overrides = ["device=cpu", "export=[]", "gaussians.num_points=100", "trainer.resolution=16"]
    with pytest.raises(ThreeDistillError, match="prior directory not found"):
        generate(prior=str(tmp_path / "no-prior"), overrides=overrides, **args)
    assert not (tmp_path / "runs").exists()

    def broken_turntable(run):  # a crash in the finishing work, after the training wrote its checkpoint
        raise OSError("disk full")

    monkeypatch.setattr(workflow, "write_turntable", broken_turntable)
    with pytest.raises(OSError, match="disk full"):
        generate(overrides=overrides + ["trainer.checkpoint_every=2"], **args)
    (run_dir,) = (tmp_path / "runs" / "a-red-cone").iterdir()
    assert (run_dir / "checkpoints" / "latest.json").is_file()  # kept, so `--resume` can finish it


def test_absolute_path_rewrites_only_relative_paths_that_exist(tmp_path, monkeypatch):
    from threedistill.config import absolute_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "front.png").write_bytes(b"")
    assert absolute_path("model") == str(tmp_path.resolve() / "model")
    assert absolute_path("./front.png") == str(tmp_path.resolve() / "front.png")
    for value in ("toyworld-oracle", "auto", "missing/dir", "", None, str(tmp_path / "model")):
        assert absolute_path(value) == value  # names, missing paths and absolute ones stay as given


def test_a_run_given_relative_paths_resumes_and_reads_back_from_another_folder(tmp_path, monkeypatch):
    """A generate run with a relative local prior and reference image, stopped, then resumed from another working
    directory: it finds both (its config.yaml holds them as absolute paths). Fails if they are saved as given."""
    import imageio.v3 as iio
    import numpy as np

    from threedistill.priors import embedded_prior_path

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    (here / "my-prior").symlink_to(embedded_prior_path(), target_is_directory=True)  # a user's local model
    image = np.zeros((16, 16, 4), np.uint8)
    image[4:12, 4:12] = (200, 30, 30, 255)
    iio.imwrite(here / "front.png", image)
    overrides = ["device=cpu", "export=[]", "gaussians.num_points=100", "trainer.resolution=16",
                 "trainer.checkpoint_every=1", "reference.image=front.png", "reference.resolution=16",
                 "stages=[{name: a, steps: 1}, {name: b, steps: 1, overrides: [prior=my-prior]}]"]  # fmt: skip
    monkeypatch.chdir(here)
    args = dict(progress=False, log=lambda s: None)
    run = generate(prompt="a red cone", prior="my-prior", steps=2, out="runs", overrides=overrides, stop_at=1, **args)
    run_dir = run.dir.resolve()
    saved = (run_dir / "config.yaml").read_text()
    prior = str((here / "my-prior").resolve())
    assert f"prior: {prior}" in saved and f"image: {here.resolve() / 'front.png'}" in saved
    assert f"prior={prior}" in saved  # the stage's override too
    monkeypatch.chdir(elsewhere)
    resumed = generate(resume=run_dir, **args)
    from threedistill.trainer import latest_checkpoint

    assert latest_checkpoint(resumed.dir)[0].name == "step_000002"  # the second stage ran, with the prior
