"""`t3d bench fidelity`: run text-to-3D on a prompt set over seeds and representations, evaluate each run
against ground truth and write a markdown table (per prompt and mean, with wall time per run)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..engines import EngineConfig
from ..errors import ThreeDistillError
from ..workflows.results import evaluate_run
from .harness import (
    check_positive,
    engine_flags,
    engine_note,
    finished_row,
    in_task_order,
    mean_or_none,
    median_step_seconds,
    prior_phrase,
    record,
    report_header,
    run_tasks,
)

BENCH_ROW = "bench_row.json"  # a finished benchmark run's row, kept in its run directory for --resume


def parse_representations(text: str) -> list[str]:
    """`--representation`: both (gaussians and nerf) or a comma-separated list of registered representations."""
    from ..representations import REPRESENTATIONS

    reps = ["gaussians", "nerf"] if text == "both" else [r.strip() for r in text.split(",")]
    if any(rep not in REPRESENTATIONS.names() for rep in reps):
        raise ThreeDistillError(
            f"--representation must be both (gaussians and nerf) or a comma-separated list of "
            f"{', '.join(REPRESENTATIONS.names())}; got {text!r}"
        )
    return reps


def fidelity_header(seeds: int, representation: str, engine: EngineConfig | None = None, overrides=()) -> str:
    """The report's header: what `t3d bench fidelity` ran, where, with which prior."""
    return (
        report_header(
            "Text-to-3D fidelity against toy-world ground truth",
            f"t3d bench fidelity --seeds {seeds} --representation {representation}{engine_flags(engine)}",
            overrides,
        )
        + f", {prior_phrase(overrides)}, each representation's default guidance (configs/generate/) unless "
        f"overridden." + engine_note(engine)
    )


def _task_dir(out_root, rep: str, seed: int, guidance: str | None) -> Path:
    """Where a benchmark task's run goes: one folder per seed, so parallel runs of the same prompt never share a
    timestamped run directory; absolute, so reports find the runs from any working directory."""
    return (Path(out_root) / (f"{guidance}-{rep}" if guidance else "") / f"seed{seed}").resolve()


def _one_run(
    rep: str,
    prompt: str,
    seed: int,
    steps: int | None,
    out_root: str,
    overrides: list[str],
    threads: int | None = None,
    guidance: str | None = None,
) -> dict:
    """Generate and evaluate one benchmark run (the body of an engine's task; a run interrupted by a dead
    worker continues from its checkpoint). Besides the ground-truth metrics: mean step time, teacher evaluations
    per step and the process's peak memory (the run's own when the worker runs one task)."""
    import resource

    from ..workflows.generate import generate_or_resume

    out = _task_dir(out_root, rep, seed, guidance)
    task = {"steps": steps, "overrides": list(overrides)}
    if threads:
        torch.set_num_threads(threads)
    start = time.time()
    run = generate_or_resume(
        out,
        prompt=prompt,
        representation=rep,
        guidance=guidance,
        seed=seed,
        steps=steps,
        overrides=overrides,
        log=lambda s: None,
    )
    metrics = evaluate_run(run.dir, run)
    row = {
        "representation": rep,
        "prompt": prompt,
        "seed": seed,
        "guidance": run.config.guidance_type,
        "run_dir": str(run.dir),
        "wall_seconds": time.time() - start,
        "step_seconds": median_step_seconds(run.dir),
        "teacher_evals_per_step": run.trainer.guidance.teacher_evals * run.config.trainer.batch_size,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **{k: metrics.get(k) for k in ("silhouette_iou", "colour_error", "front_back_correct", "saturation_ratio")},
    }
    (run.dir / BENCH_ROW).write_text(json.dumps({**row, "task": task}))
    return row


def run_fidelity(
    prompts: list[str],
    seeds: int,
    representations: list[str],
    out_root: Path,
    overrides: list[str],
    steps: int | None = None,
    log=print,
    on_row=None,
    engine: EngineConfig | None = None,
    methods: list[str] | None = None,
    reuse: bool = False,
) -> list[dict]:
    """Every (method, representation, prompt, seed) run, evaluated; `on_row(rows)` after each, so a crash loses
    little. `methods` None keeps the configs' guidance. The runs go on `engine` (default local; results depend on
    a run's seed and thread count only; wall times per run grow when runs share the cores); with `methods` every
    run gets a fresh process on Ray, so its peak memory is its own. `reuse` reads finished runs of the same task
    back instead of running them again (a benchmark stopped half-way goes on)."""
    from ..guidance import GUIDANCE
    from ..representations import REPRESENTATIONS

    check_positive("--seeds", seeds)
    for name in representations:  # one-line errors for unknown names, before anything runs
        REPRESENTATIONS.get(name)
    for name in methods or []:
        GUIDANCE.get(name)
    tasks = [
        (rep, prompt, seed, method)
        for rep in representations
        for method in (methods or [None])
        for prompt in prompts
        for seed in range(seeds)
    ]
    rows: list[dict] = []

    def report(row: dict) -> None:
        record(
            rows,
            row,
            f"{row['guidance']:5s} {row['representation']:9s} {row['prompt']:22s} seed {row['seed']}: "
            f"IoU {row['silhouette_iou']:.3f}  colour err {row['colour_error']:.3f}  "
            f"{row['wall_seconds']:.0f}s",
            log,
            on_row,
        )

    task = {"steps": steps, "overrides": list(overrides)}  # what a finished run must have been run with

    def read_back(t: dict) -> dict | None:
        return finished_row(_task_dir(out_root, t["rep"], t["seed"], t["guidance"]), t["prompt"], task, BENCH_ROW)

    run_tasks(
        _one_run,
        [
            dict(
                rep=rep,
                prompt=prompt,
                seed=seed,
                steps=steps,
                out_root=str(out_root),
                overrides=list(overrides),
                guidance=method,
            )
            for rep, prompt, seed, method in tasks
        ],
        report,
        engine,
        read_back if reuse else None,
        fresh_process=bool(methods),
        log=log,
    )
    return in_task_order(  # parallel runs end in any order
        rows, tasks, lambda r: (r["representation"], r["prompt"], r["seed"], r["guidance"] if methods else None)
    )


def _mean(values) -> str:
    value = mean_or_none(values)
    return "-" if value is None else f"{value:.3f}"


def _cells(rs: list[dict], bold_iou: bool = False) -> str:
    iou = _mean(r["silhouette_iou"] for r in rs)
    return (
        f"{len(rs)} | {f'**{iou}**' if bold_iou else iou} | {_mean(r['colour_error'] for r in rs)} | "
        f"{_mean(r['front_back_correct'] for r in rs)} | {_mean(r['wall_seconds'] for r in rs)} |"
    )


def markdown_table(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| representation | prompt | runs | silhouette IoU | colour error | front/back correct | wall s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["representation"], r["prompt"]), []).append(r)
    for rep in dict.fromkeys(r["representation"] for r in rows):
        lines += [f"| {rep} | {prompt} | {_cells(rs)}" for (rp, prompt), rs in groups.items() if rp == rep]
        lines.append(
            f"| **{rep}** | **mean** | {_cells([r for r in rows if r['representation'] == rep], bold_iou=True)}"
        )
    return "\n".join(lines) + "\n"
