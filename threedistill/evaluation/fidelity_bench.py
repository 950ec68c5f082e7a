"""`t3d bench fidelity`: run text-to-3D on a prompt set over seeds and representations, evaluate each run
against ground truth and write a markdown table (per prompt and mean, with wall time per run)."""
from __future__ import annotations

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


def _one_run(rep: str, prompt: str, seed: int, steps: int | None, out_root: str, overrides: list[str],
             threads: int | None = None) -> dict:
    """Generate and evaluate one benchmark run (also the body of a worker process when runs go in parallel)."""
    from ..runs import generate

    if threads:
        torch.set_num_threads(threads)
    start = time.time()
    # One folder per seed: parallel runs of the same prompt never share a timestamped run directory.
    run = generate(prompt=prompt, representation=rep, seed=seed, steps=steps, out=str(Path(out_root) / f"seed{seed}"),
                   overrides=overrides, progress=False, log=lambda s: None)
    metrics = evaluate_run(run.dir)
    return {"representation": rep, "prompt": prompt, "seed": seed, "wall_seconds": time.time() - start,
            **{k: metrics.get(k) for k in ("silhouette_iou", "colour_error", "front_back_correct")}}


def run_fidelity(prompts: list[str], seeds: int, representations: list[str], out_root: Path,
                 overrides: list[str], steps: int | None = None, log=print, on_row=None, jobs: int = 1) -> list[dict]:
    """Every (representation, prompt, seed) run, evaluated; `on_row(rows)` after each, so a crash loses little.
    `jobs` > 1 runs that many at once in worker processes sharing the CPU cores (results do not change: every
    run is seeded; wall times per run grow when the cores are shared)."""
    tasks = [(rep, prompt, seed) for rep in representations for prompt in prompts for seed in range(seeds)]
    rows: list[dict] = []

    def report(row: dict) -> None:
        record(rows, row, f"{row['representation']:9s} {row['prompt']:22s} seed {row['seed']}: IoU "
                          f"{row['silhouette_iou']:.3f}  colour err {row['colour_error']:.3f}  "
                          f"{row['wall_seconds']:.0f}s", log, on_row)

    if jobs <= 1:
        for task in tasks:
            report(_one_run(*task, steps, str(out_root), list(overrides)))
        return rows
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_one_run, *task, steps, str(out_root), list(overrides), threads) for task in tasks]
        for future in as_completed(futures):
            report(future.result())
    order = {task: i for i, task in enumerate(tasks)}
    rows.sort(key=lambda r: order[(r["representation"], r["prompt"], r["seed"])])
    return rows


def record(rows: list[dict], row: dict, message: str, log, on_row) -> None:
    """Append a benchmark row, report it, and let the caller rewrite its table (a crash loses little)."""
    rows.append(row)
    log(message)
    if on_row is not None:
        on_row(rows)


def _mean(values) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.mean(values):.3f}" if values else "-"


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
