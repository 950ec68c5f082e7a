"""`t3d batch`: one text-to-3D run per prompt and seed, run by an engine (`threedistill.engines`: `local`, or
`ray` across cores and machines, retrying runs whose worker died), and a summary table rewritten as runs end.

A batch folder holds:
  batch.json                  what the batch is (prompts, seeds, representation, config, overrides); `--resume`
                              continues it as it was started
  summary.md, summary.json    one row per run: metrics against ground truth where the prompt has one, the run's
                              own wall time, its tries, links to the run and its viewer page
  runs/NNN-<prompt>/seed<k>/  one task: log.txt, worker.pid (the processes that ran it), row.json when finished,
                              and the run itself, <prompt>/<method>-<representation>@<time>/
  ray/                        a local Ray instance's session and logs (--engine ray)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..engines import EngineConfig, make_engine
from ..errors import ThreeDistillError
from ..prompting import read_prompt_file
from ..session import slugify
from ..utils.files import read_json, write_json
from ..utils.stats import mean_or_none
from .generate import generate_or_resume, new_run_config

BATCH_FILE, ROW_FILE, PID_FILE = "batch.json", "row.json", "worker.pid"
METRICS = ("silhouette_iou", "colour_error", "front_back_correct")


def task_dir(out: Path, index: int, prompt: str, seed: int) -> Path:
    """Where the run of the `index`-th prompt and `seed` goes (numbered: two prompts may share a slug)."""
    return Path(out) / "runs" / f"{index:03d}-{slugify(prompt)}" / f"seed{seed}"


def task_key(folder: Path) -> str:
    """A task's name inside its batch, e.g. "000-a-red-duck/seed0" (the batch folder may move)."""
    return f"{Path(folder).parent.name}/{Path(folder).name}"


def batch_run(
    prompt: str,
    seed: int,
    task: str,
    representation: str | None,
    config: str | None,
    overrides: list[str],
    threads: int | None = None,
) -> dict:
    """One run of a batch (the body of an engine's task): generate into the task folder, or continue the run
    found there (a retry after its worker died, or `--resume`), evaluate it against ground truth when the prompt
    has one, and write its row to row.json."""
    import torch

    folder = Path(task)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / PID_FILE, "a") as f:  # which processes ran it: one line per try
        f.write(f"{os.getpid()}\n")
    if threads:
        torch.set_num_threads(threads)
    with open(folder / "log.txt", "a", encoding="utf-8") as log_file:

        def log(message: str) -> None:
            log_file.write(f"{message}\n")
            log_file.flush()

        run = generate_or_resume(
            folder,
            log=log,
            prompt=prompt,
            seed=seed,
            representation=representation,
            config=config,
            overrides=list(overrides),
            progress=False,
        )
        metrics = evaluated(run.dir, log)
    row = {
        "prompt": prompt,
        "seed": seed,
        "representation": run.config.representation,
        "guidance": run.config.guidance_type,
        "steps": run.config.trainer.steps,
        "threads": torch.get_num_threads(),
        "wall_seconds": metrics.get("wall_seconds"),
        "tries": len((folder / PID_FILE).read_text().split()),
        "task": task_key(folder),
        "run_dir": str(run.dir),
        **{k: metrics.get(k) for k in METRICS},
    }
    write_json(folder / ROW_FILE, row)
    return row


def evaluated(run_dir: Path, log) -> dict:
    """A finished run's metrics.json, with the ground-truth metrics when its prompt is a toy-world one."""
    from ..evaluation.ground_truth import subject_of
    from .generate import read_run_config
    from .results import evaluate_run

    try:
        subject_of(read_run_config(run_dir).prompt)
    except ThreeDistillError:
        log("no ground truth for this prompt: not evaluated")
        return read_json(run_dir / "metrics.json", "metrics file")
    return evaluate_run(run_dir)


# ---------------------------------------------------------------- the batch
def batch_spec(prompts_file, seeds, representation, config, overrides) -> dict:
    """What a batch is, as batch.json keeps it; every prompt's config is checked before anything runs."""
    if seeds < 1:
        raise ThreeDistillError(f"--seeds must be positive, got {seeds}")
    prompts = read_prompt_file(Path(prompts_file))
    config = str(Path(config).resolve()) if config else None
    for prompt in prompts:  # a bad key, value or prompt: one line now, not one failed run per prompt later
        new_run_config(prompt, representation=representation, config=config, overrides=list(overrides))
    return {
        "prompts": prompts,
        "seeds": seeds,
        "representation": representation,
        "config": config,
        "overrides": list(overrides),
    }


def open_batch(out: Path, resume: bool, spec: dict | None) -> dict:
    """The batch in `out`: a new one (`spec`, saved to batch.json), or with `resume` the one saved there; a
    one-line error for a folder that holds another batch or none to resume, or a spec that differs."""
    path = Path(out) / BATCH_FILE
    if resume:
        if not path.is_file():
            raise ThreeDistillError(f"cannot resume: {out} holds no batch ({BATCH_FILE} is missing)")
        try:
            saved = json.loads(path.read_text())
            if not isinstance(saved, dict) or not isinstance(saved.get("prompts"), list):
                raise ValueError("no prompt list")
        except ValueError as err:
            raise ThreeDistillError(f"cannot resume: {path} is damaged ({err})") from None
        if spec is not None and spec != saved:
            differ = ", ".join(k for k in saved if spec.get(k) != saved.get(k))
            raise ThreeDistillError(
                f"cannot resume: the batch in {out} was started with other {differ}; --resume continues it as it "
                "was started (give only --out and the engine options), or start a new batch with another --out"
            )
        return saved
    if spec is None:
        raise ThreeDistillError("a new batch needs --prompts FILE (one prompt per line)")
    if path.is_file():
        raise ThreeDistillError(f"{out} already holds a batch: --resume continues it, or choose another --out")
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ThreeDistillError(f"cannot make the batch folder {out}: {err.strerror or err}") from None
    write_json(path, spec)
    return spec


def run_batch(
    out: Path,
    engine: EngineConfig,
    prompts_file: Path | None = None,
    seeds: int = 1,
    representation: str | None = None,
    config: str | None = None,
    overrides=(),
    resume: bool = False,
    command: str = "t3d batch",
    log=print,
) -> list[dict]:
    """Run (or with `resume` continue) the batch in `out` on `engine`; returns its rows in prompt and seed order.
    Finished runs are read back, interrupted ones continue from their last checkpoint; summary.md and .json are
    rewritten after every run, so a crash or ^C loses at most the runs in flight (and those resume)."""
    out = Path(out).resolve()
    spec = batch_spec(prompts_file, seeds, representation, config, overrides) if prompts_file else None
    spec = open_batch(out, resume, spec)
    runner = make_engine(EngineConfig(**{**engine.__dict__, "work_dir": str(out)}), log)
    tasks = [
        dict(
            prompt=prompt,
            seed=seed,
            task=str(task_dir(out, i, prompt, seed)),
            representation=spec["representation"],
            config=spec["config"],
            overrides=spec["overrides"],
        )
        for i, prompt in enumerate(spec["prompts"])
        for seed in range(spec["seeds"])
    ]
    order = {task_key(Path(t["task"])): i for i, t in enumerate(tasks)}
    rows: list[dict] = []
    started = time.time()

    def report(row: dict) -> None:
        rows.append(row)
        rows.sort(key=lambda r: order.get(r["task"], len(order)))
        iou = row.get("silhouette_iou")
        log(
            f"[{len(rows)}/{len(tasks)}] {row['prompt']} seed {row['seed']}: "
            + (f"IoU {iou:.3f}, colour error {row['colour_error']:.3f}, " if iou is not None else "")
            + f"{row['wall_seconds'] or 0:.0f} s"
            + (f" ({row['tries']} tries)" if row["tries"] > 1 else "")
        )
        write_summary(out, rows, len(tasks), command, runner.describe(), time.time() - started)

    todo = []
    for task in tasks:
        finished = Path(task["task"]) / ROW_FILE
        row = _read_row(finished) if resume else None
        report(row) if row is not None else todo.append(task)
    if todo:
        log(f"{len(todo)} run(s) to go on {runner.describe()}")
    runner.run(batch_run, todo, report)
    write_summary(out, rows, len(tasks), command, runner.describe(), time.time() - started)
    return rows


def _read_row(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not finished, or cut short while writing: run (or continue) it
        return None


# ---------------------------------------------------------------- the summary
def write_summary(out: Path, rows: list[dict], total: int, command: str, engine: str, seconds: float) -> None:
    """summary.json (the rows) and summary.md (a table with links relative to the batch folder)."""
    write_json(out / "summary.json", rows)
    (out / "summary.md").write_text(summary_table(out, rows, total, command, engine, seconds))


def _cell(value, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def summary_table(out: Path, rows: list[dict], total: int, command: str, engine: str, seconds: float) -> str:
    import platform

    lines = [
        f"# Batch: {len(rows)} of {total} runs finished",
        "",
        f"`{command}` on {platform.machine()} ({os.cpu_count()} cores), engine {engine}; "
        f"{seconds:.0f} s of batch wall time (this session). Metrics against the toy world's ground truth where the "
        "prompt has one (- where not); wall s is the run's own optimisation time, summed over its tries.",
        "",
        "| prompt | seed | representation | method | IoU | colour err | front/back | wall s | tries | run | viewer |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        run = Path(r["run_dir"])
        rel = os.path.relpath(run, out)
        viewer = run / "export" / "viewer.html"
        lines.append(
            f"| {r['prompt']} | {r['seed']} | {r['representation']} | {r['guidance']} | "
            f"{_cell(r.get('silhouette_iou'))} | {_cell(r.get('colour_error'))} | "
            f"{_cell(r.get('front_back_correct'), '.2f')} | {_cell(r.get('wall_seconds'), '.1f')} | {r['tries']} | "
            f"[run]({rel}) | {f'[view]({rel}/export/viewer.html)' if viewer.is_file() else '-'} |"
        )
    measured = [r for r in rows if r.get("silhouette_iou") is not None]
    if measured:
        mean = {k: mean_or_none(r.get(k) for r in measured) for k in METRICS}
        lines.append(
            f"| **mean of {len(measured)}** | | | | {_cell(mean['silhouette_iou'])} | {_cell(mean['colour_error'])} | "
            f"{_cell(mean['front_back_correct'], '.2f')} | | | | |"
        )
    return "\n".join(lines) + "\n"
