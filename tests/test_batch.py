"""`t3d batch` and the engines: the same table on a local Ray instance as on the local engine, a run whose worker
is killed retried to the same metrics, --resume, and one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_cli import assert_one_line_error, t3d

from threedistill.engines import EngineConfig, make_engine
from threedistill.errors import ThreeDistillError
from threedistill.workflows.batch import run_batch

# Under pytest-xdist these tests run one after another on one worker, beside the stage bench's Ray test and the
# fidelity bench's: each starts a local Ray instance of 2 CPUs, and two at once on 2 cores time out.
pytestmark = pytest.mark.xdist_group("ray")

FAST = [
    "gaussians.num_points=200",
    "trainer.batch_size=1",
    "trainer.resolution=16",
    "trainer.preview_every=0",
    "export=[]",
    "device=cpu",
]
RESULT_KEYS = ("prompt", "seed", "representation", "guidance", "steps", "threads", "task") + (
    "silhouette_iou",
    "colour_error",
    "front_back_correct",
)


def results(rows: list[dict]) -> list[dict]:
    """What must not depend on the engine or a retry (wall time, tries and folders may)."""
    return [{k: r[k] for k in RESULT_KEYS} for r in rows]


def prompt_file(tmp_path, *prompts) -> str:
    path = tmp_path / "prompts.txt"
    path.write_text("# a batch\n" + "\n".join(prompts) + "\n")
    return str(path)


def quiet(message: str) -> None:
    pass


def test_a_batch_on_ray_gives_the_local_engines_table(tmp_path):
    pytest.importorskip("ray")
    prompts = prompt_file(tmp_path, "a red cone", "a blue duck", "a shiny teapot")  # the last has no ground truth
    overrides = FAST + ["trainer.steps=3"]
    local = run_batch(
        tmp_path / "local", EngineConfig("local", cpus_per_run=1), prompts, overrides=overrides, log=quiet
    )
    ray = run_batch(
        tmp_path / "ray", EngineConfig("ray", jobs=2, cpus_per_run=1), prompts, overrides=overrides, log=quiet
    )
    assert [r["prompt"] for r in ray] == ["a red cone", "a blue duck", "a shiny teapot"]  # prompt order
    assert results(ray) == results(local)
    assert ray[0]["silhouette_iou"] is not None and ray[2]["silhouette_iou"] is None
    for rows, folder in ((local, tmp_path / "local"), (ray, tmp_path / "ray")):
        assert json.loads((folder / "summary.json").read_text()) == rows
        table = (folder / "summary.md").read_text()
        assert "3 of 3 runs finished" in table and "| a shiny teapot | 0 | gaussians | sds | - | - | - |" in table
        assert "| **mean of 2** |" in table and "[run](runs/000-a-red-cone/seed0/a-red-cone/sds-gaussians@" in table
    assert "engine ray (a local Ray instance), 2 run(s) at a time" in (tmp_path / "ray" / "summary.md").read_text()
    assert any((tmp_path / "ray" / "ray").glob("session_*/logs"))  # the Ray session's logs in the batch folder


def test_a_killed_worker_is_retried_and_its_run_ends_as_an_uninterrupted_one(tmp_path):
    """SIGKILL the worker process of one run after its first checkpoint: Ray runs the task again, the run
    continues from that checkpoint, the batch completes with every run, and the metrics equal a run never
    interrupted."""
    pytest.importorskip("ray")
    prompts = prompt_file(tmp_path, "a red cone", "a blue duck")
    overrides = FAST + ["trainer.steps=40", "trainer.checkpoint_every=5"]
    out = tmp_path / "batch"
    command = [sys.executable, "-m", "threedistill.cli", "batch", "--prompts", prompts, "--out", str(out)]
    command += ["--engine", "ray", "--jobs", "2", "--cpus-per-run", "1", *overrides]
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    task = out / "runs" / "000-a-red-cone" / "seed0"
    deadline = time.time() + 300  # Ray's start and the first 5 steps, on cores other tests share
    while not any(task.glob("a-red-cone/*/checkpoints/latest.json")):
        assert batch.poll() is None and time.time() < deadline, "the run never reached its first checkpoint"
        time.sleep(0.1)
    worker = int((task / "worker.pid").read_text().split()[0])
    os.kill(worker, signal.SIGKILL)
    _, stderr = batch.communicate(timeout=300)
    assert batch.returncode == 0, stderr
    rows = json.loads((out / "summary.json").read_text())
    assert [(r["prompt"], r["tries"]) for r in rows] == [("a red cone", 2), ("a blue duck", 1)]
    pids = (task / "worker.pid").read_text().split()
    assert len(pids) == 2 and int(pids[0]) == worker and int(pids[1]) != worker
    log = (task / "log.txt").read_text()
    assert "continuing " in log and "resuming " in log and " at step 0" not in log  # from its checkpoint
    uninterrupted = run_batch(
        tmp_path / "local", EngineConfig("local", cpus_per_run=1), prompts, overrides=overrides, log=quiet
    )
    assert results(rows) == results(uninterrupted)


def test_resume_keeps_finished_runs_and_continues_interrupted_ones(tmp_path):
    prompts = prompt_file(tmp_path, "a red cone", "a blue duck")
    overrides = FAST + ["trainer.steps=4", "trainer.checkpoint_every=2"]
    engine = EngineConfig("local", cpus_per_run=1)
    first = run_batch(tmp_path / "b", engine, prompts, overrides=overrides, log=quiet)
    with pytest.raises(ThreeDistillError, match="already holds a batch: --resume continues it"):
        run_batch(tmp_path / "b", engine, prompts, overrides=overrides, log=quiet)
    # the second run as if killed before it finished: no row, and its metrics without the finishing wall time
    task = tmp_path / "b" / "runs" / "001-a-blue-duck" / "seed0"
    (task / "row.json").unlink()
    metrics_file = next(task.glob("a-blue-duck/*/metrics.json"))
    metrics_file.write_text(json.dumps({"step": 4}))
    lines = []
    again = run_batch(tmp_path / "b", engine, resume=True, log=lines.append)
    assert results(again) == results(first)
    assert lines[0].startswith("[1/2] a red cone") and "1 run(s) to go" in lines[1]  # read back, not run again
    assert (tmp_path / "b" / "runs" / "000-a-red-cone" / "seed0" / "worker.pid").read_text().count("\n") == 1
    assert "continuing " in (task / "log.txt").read_text() and len(list(task.glob("a-blue-duck/*"))) == 1
    with pytest.raises(ThreeDistillError, match="was started with other seeds, overrides; --resume continues it"):
        run_batch(tmp_path / "b", engine, prompts, seeds=2, overrides=FAST, resume=True, log=quiet)


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_runs_error_stops_the_batch_with_its_own_one_line_message(tmp_path, engine):
    """A bad value that only a run finds (here a prior directory that does not exist, found when the run builds
    its prior) ends the batch with that run's own error, on either engine."""
    if engine == "ray":
        pytest.importorskip("ray")
    prompts = prompt_file(tmp_path, "a red cone")
    overrides = FAST + ["trainer.steps=2", "prior=/nonexistent/prior"]
    with pytest.raises(ThreeDistillError, match="/nonexistent/prior"):
        run_batch(tmp_path / "b", EngineConfig(engine), prompts, overrides=overrides, log=quiet)


def square(x: int, threads: int) -> tuple[int, int, int]:
    return x, x * x, torch.get_num_threads()


def fail_on_two(x: int, threads: int) -> int:
    if x == 2:
        raise ThreeDistillError("two is not allowed")
    time.sleep(0.2)
    return x


def test_the_local_engine_runs_in_order_on_the_runs_threads_and_restores_its_own():
    before = torch.get_num_threads()
    got = []
    make_engine(EngineConfig("local", cpus_per_run=1)).run(square, [{"x": i} for i in range(4)], got.append)
    assert got == [(0, 0, 1), (1, 1, 1), (2, 4, 1), (3, 9, 1)] and torch.get_num_threads() == before


def test_the_ray_engine_reports_every_result_and_a_tasks_error_as_itself(tmp_path):
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    engine = make_engine(EngineConfig("ray", jobs=2, cpus_per_run=1, work_dir=str(tmp_path)), log=quiet)
    got = []
    engine.run(square, [{"x": i} for i in range(5)], got.append)
    assert sorted(got) == [(i, i * i, 1) for i in range(5)]
    with pytest.raises(ThreeDistillError, match="^two is not allowed$"):
        engine.run(fail_on_two, [{"x": i} for i in range(6)], lambda r: None)


def test_without_ray_the_ray_engine_is_a_one_line_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(
        ThreeDistillError, match=r"needs Ray, which is not installed: pip install 'threedistill\[cluster\]'"
    ):
        make_engine(EngineConfig("ray"))


def test_ray_refuses_runs_no_node_could_take(tmp_path):
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    engine = make_engine(EngineConfig("ray", jobs=1, gpus_per_run=0.5, work_dir=str(tmp_path)), log=quiet)
    with pytest.raises(ThreeDistillError, match=r"--gpus-per-run 0.5, but the Ray cluster has 0 GPU"):
        engine.run(square, [{"x": 1}], lambda r: None)


@pytest.mark.parametrize(
    "lines, fragment",
    [
        ("\n# only a comment\n", "has no prompts (one per line, # for comments)"),
        ("a red cone\n\x1b[31mred\n", "line 2 of"),
    ],
)
def test_bad_prompt_files_are_one_line_errors(tmp_path, lines, fragment):
    path = tmp_path / "prompts.txt"
    path.write_text(lines)
    assert_one_line_error(t3d("batch", "--prompts", str(path), "--out", str(tmp_path / "b")), fragment)


def test_a_bad_override_fails_before_any_run(tmp_path):
    prompts = prompt_file(tmp_path, "a red cone")
    result = t3d("batch", "--prompts", prompts, "--out", str(tmp_path / "b"), "trainer.stepz=3")
    assert_one_line_error(result, "unknown config key 'trainer.stepz'")
    assert not (tmp_path / "b").exists()


def test_bench_engines_runs_the_quick_set_on_both_engines_and_writes_its_report(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "engines.md"
    result = t3d(
        "bench", "engines", "--methods", "sds", "--representation", "gaussians", "--steps", "2", "--jobs", "2",
        "--out", str(out), "--runs-dir", str(tmp_path / "runs"), *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = out.read_text()
    rows = [line for line in report.splitlines() if line.startswith(("| local |", "| ray --jobs 2 |"))]
    assert len(rows) == 2 and all(" | 2 | " in r for r in rows)  # two runs (the quick set's prompts) on each
    assert "**A 100-prompt batch**" in report and "N=16:" in report
    assert len(list((tmp_path / "runs").glob("*/*/sds-gaussians/seed0/*/*/bench_row.json"))) == 4
