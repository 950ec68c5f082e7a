"""`t3d bench fidelity`: run text-to-3D on a prompt set over seeds and representations, evaluate each run
against ground truth and write a markdown table (per prompt and mean, with wall time per run)."""
from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from ..config import packaged_config
from ..errors import ThreeDistillError
from .ground_truth import subject_of
from .run_eval import evaluate_run


def read_prompts(path: Path | None) -> list[str]:
    path = Path(path) if path else packaged_config("bench", "fidelity_prompts.txt")
    if not path.is_file():
        raise ThreeDistillError(f"prompt file not found: {path}")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ThreeDistillError(f"prompt file {path} has no prompts (one per line, # for comments)")
    for p in prompts:
        subject_of(p)  # fail early on prompts without ground truth
    return prompts


BENCH_ROW = "bench_row.json"  # a finished benchmark run's row, kept in its run directory for --resume


def finished_row(out: Path, prompt: str, task: dict, name: str = BENCH_ROW) -> dict | None:
    """The row (file `name` in its run directory) of a finished run under `out` with the same prompt and task, if any."""
    for path in sorted(Path(out).glob(f"*/*/{name}")):
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):  # cut short by a crash while writing: run that task again
            continue
        if row.get("prompt") == prompt and row.get("task") == task:
            return row
    return None


def _task_dir(out_root, rep: str, seed: int, guidance: str | None) -> Path:
    """Where a benchmark task's run goes: one folder per seed, so parallel runs of the same prompt never share a
    timestamped run directory; absolute, so reports find the runs from any working directory."""
    return (Path(out_root) / (f"{guidance}-{rep}" if guidance else "") / f"seed{seed}").resolve()


def _one_run(rep: str, prompt: str, seed: int, steps: int | None, out_root: str, overrides: list[str],
             threads: int | None = None, guidance: str | None = None) -> dict:
    """Generate and evaluate one benchmark run (also the body of a worker process when runs go in parallel).
    Besides the ground-truth metrics: mean step time, teacher evaluations per step and the process's peak memory
    (the run's own when the worker runs one task)."""
    import resource

    from ..runs import generate

    out = _task_dir(out_root, rep, seed, guidance)
    task = {"steps": steps, "overrides": list(overrides)}
    if threads:
        torch.set_num_threads(threads)
    start = time.time()
    run = generate(prompt=prompt, representation=rep, guidance=guidance, seed=seed, steps=steps, out=str(out),
                   overrides=overrides, progress=False, log=lambda s: None)
    metrics = evaluate_run(run.dir)
    logs = [json.loads(line) for line in (run.dir / "log.jsonl").read_text().splitlines()]
    step_seconds = [row["step_seconds"] for row in logs if "step_seconds" in row]
    row = {"representation": rep, "prompt": prompt, "seed": seed, "guidance": run.config.guidance_type,
           "run_dir": str(run.dir), "wall_seconds": time.time() - start,
           "step_seconds": statistics.median(step_seconds) if step_seconds else None,
           "teacher_evals_per_step": run.trainer.guidance.teacher_evals * run.config.trainer.batch_size,
           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           **{k: metrics.get(k) for k in ("silhouette_iou", "colour_error", "front_back_correct", "saturation_ratio")}}
    (run.dir / BENCH_ROW).write_text(json.dumps({**row, "task": task}))
    return row


def run_fidelity(prompts: list[str], seeds: int, representations: list[str], out_root: Path,
                 overrides: list[str], steps: int | None = None, log=print, on_row=None, jobs: int = 1,
                 methods: list[str] | None = None, reuse: bool = False) -> list[dict]:
    """Every (method, representation, prompt, seed) run, evaluated; `on_row(rows)` after each, so a crash loses
    little. `methods` None keeps the configs' guidance. `jobs` > 1 runs that many at once in worker processes
    sharing the CPU cores (results do not change: every run is seeded; wall times per run grow when the cores
    are shared); with `methods` every run gets a fresh process, so its peak memory is its own. `reuse` reads
    finished runs of the same task back instead of running them again (a benchmark stopped half-way goes on)."""
    tasks = [(rep, prompt, seed, method) for rep in representations for method in (methods or [None])
             for prompt in prompts for seed in range(seeds)]
    rows: list[dict] = []

    def report(row: dict) -> None:
        record(rows, row, f"{row['guidance']:5s} {row['representation']:9s} {row['prompt']:22s} seed {row['seed']}: "
                          f"IoU {row['silhouette_iou']:.3f}  colour err {row['colour_error']:.3f}  "
                          f"{row['wall_seconds']:.0f}s", log, on_row)

    todo = []
    for rep, prompt, seed, method in tasks:  # finished runs are read back here, without a worker process
        task = {"steps": steps, "overrides": list(overrides)}
        row = finished_row(_task_dir(out_root, rep, seed, method), prompt, task) if reuse else None
        report(row) if row is not None else todo.append((rep, prompt, seed, method))
    if jobs <= 1 and not methods:
        for rep, prompt, seed, method in todo:
            report(_one_run(rep, prompt, seed, steps, str(out_root), list(overrides), None, method))
        return rows
    run_in_workers(_one_run, [dict(rep=rep, prompt=prompt, seed=seed, steps=steps, out_root=str(out_root),
                                   overrides=list(overrides), guidance=method) for rep, prompt, seed, method in todo],
                   jobs, report, one_task_per_process=bool(methods))
    order = {task: i for i, task in enumerate(tasks)}
    rows.sort(key=lambda r: order[(r["representation"], r["prompt"], r["seed"], r["guidance"] if methods else None)])
    return rows


def worker_threads(jobs: int) -> int:
    """Torch threads of each of `jobs` worker processes sharing the CPU cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_in_workers(fn, tasks: list[dict], jobs: int, report, one_task_per_process: bool = False) -> None:
    """fn(**task, threads=n) for each task in `jobs` worker processes that split the CPU cores (n each), and
    report(result) as each ends. With `one_task_per_process` every task gets a fresh process (its peak memory is
    its own). On an error the queued tasks are cancelled at once instead of all running before the error shows."""
    threads = worker_threads(jobs)
    fresh = {"max_tasks_per_child": 1} if one_task_per_process else {}
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), **fresh)
    try:
        futures = [pool.submit(fn, **task, threads=threads) for task in tasks]
        for future in as_completed(futures):
            report(future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def record(rows: list[dict], row: dict, message: str, log, on_row) -> None:
    """Append a benchmark row, report it, and let the caller rewrite its table (a crash loses little)."""
    rows.append(row)
    log(message)
    if on_row is not None:
        on_row(rows)


def mean_or_none(values) -> float | None:
    """The mean of the values that are not None (None if there are none)."""
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _mean(values) -> str:
    value = mean_or_none(values)
    return "-" if value is None else f"{value:.3f}"


def _cells(rs: list[dict], bold_iou: bool = False) -> str:
    iou = _mean(r["silhouette_iou"] for r in rs)
    return (f"{len(rs)} | {f'**{iou}**' if bold_iou else iou} | {_mean(r['colour_error'] for r in rs)} | "
            f"{_mean(r['front_back_correct'] for r in rs)} | {_mean(r['wall_seconds'] for r in rs)} |")


def markdown_table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| representation | prompt | runs | silhouette IoU | colour error | front/back correct | wall s/run |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["representation"], r["prompt"]), []).append(r)
    for rep in dict.fromkeys(r["representation"] for r in rows):
        lines += [f"| {rep} | {prompt} | {_cells(rs)}" for (rp, prompt), rs in groups.items() if rp == rep]
        lines.append(f"| **{rep}** | **mean** | {_cells([r for r in rows if r['representation'] == rep], bold_iou=True)}")
    return "\n".join(lines) + "\n"
