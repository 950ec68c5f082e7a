"""`t3d bench engines`: the guidance benchmark's quick set run twice, on the local engine (one run at a time on
every core) and on a local Ray instance (`--jobs` runs at a time): batch wall time, each run's own time, the
engine's overhead per run, and whether the metrics agree; then what a 100-prompt batch would cost on N machines,
from the measured per-run time."""

from __future__ import annotations

import time
from pathlib import Path

from ..engines import EngineConfig
from .guidance_bench import QUICK_PROMPTS, QUICK_STEPS, run_guidance_bench
from .harness import report_header

METRICS = ("silhouette_iou", "colour_error", "front_back_correct")


def run_engine_bench(
    methods: list[str],
    representations: list[str],
    runs_dir: Path,
    jobs: int = 2,
    overrides=(),
    prompts: list[str] | None = None,
    steps: int = QUICK_STEPS,
    log=print,
) -> list[dict]:
    """One result per engine: {"engine", "runs", "threads", "wall_seconds", "run_seconds" (each run's own wall
    times), "rows"}."""
    engines = [
        ("local", EngineConfig("local", work_dir=str(runs_dir))),
        (f"ray --jobs {jobs}", EngineConfig("ray", jobs=jobs, work_dir=str(runs_dir))),
    ]
    out = []
    for name, engine in engines:
        log(f"--- {name}")
        start = time.perf_counter()
        rows = run_guidance_bench(
            methods,
            prompts or QUICK_PROMPTS,
            1,
            representations,
            Path(runs_dir) / name.split()[0],
            list(overrides),
            steps,
            log=log,
            engine=engine,
        )
        out.append(
            {
                "engine": name,
                "jobs": engine.jobs,
                "threads": engine.threads,
                "runs": len(rows),
                "wall_seconds": time.perf_counter() - start,
                "run_seconds": [r["wall_seconds"] for r in rows],
                "rows": rows,
            }
        )
    return out


def overhead_per_run(result: dict) -> float:
    """Seconds per run the engine adds to the runs' own time: batch wall time x runs at a time, less the runs'
    own wall times, over the runs (Ray: starting the instance and its workers, scheduling, the results' trip)."""
    return (result["wall_seconds"] * result["jobs"] - sum(result["run_seconds"])) / max(result["runs"], 1)


def metric_gap(a: dict, b: dict) -> float:
    """The largest difference of a ground-truth metric between the same runs on two engines."""
    gaps = [
        abs(x[k] - y[k])
        for x, y in zip(a["rows"], b["rows"])
        for k in METRICS
        if x.get(k) is not None and y.get(k) is not None
    ]
    return max(gaps, default=0.0)


def markdown_report(results: list[dict], command: str, overrides=()) -> str:
    local, ray = results
    lines = [
        report_header("Engines: the guidance benchmark's quick set, local against Ray", command, overrides)
        + ". Both engines run the same tasks (seeded); the local engine one run at a time on every core, Ray "
        "`--jobs` runs at a time on cores / jobs threads each. A run's floating-point results depend on its thread "
        "count, so the metric gap below is that of 1 against 2 threads, not of the engine (at equal threads, "
        "tests/test_batch.py and tests/test_stages.py find them bit-identical).",
        "",
        "| engine | runs | threads/run | batch wall s | run s (mean) | overhead s/run | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mean_run = sum(r["run_seconds"]) / max(r["runs"], 1)
        lines.append(
            f"| {r['engine']} | {r['runs']} | {r['threads']} | {r['wall_seconds']:.0f} | {mean_run:.1f} | "
            f"{overhead_per_run(r):.1f} | {local['wall_seconds'] / r['wall_seconds']:.2f}x |"
        )
    per_run = ray["wall_seconds"] * ray["jobs"] / max(ray["runs"], 1)  # core-seconds x cores/jobs per run, measured
    lines += [
        "",
        f"Largest difference of a ground-truth metric (IoU, colour error, front/back) between the engines' runs: "
        f"{metric_gap(local, ray):.2g}.",
        "",
        f"**A 100-prompt batch** of these runs ({per_run:.0f} s each on {ray['threads']} thread(s), overhead "
        f"included, as measured here), on N machines like this one with {ray['jobs']} runs at a time each: "
        + ", ".join(f"N={n}: {100 * per_run / (n * ray['jobs']) / 60:.0f} min" for n in (1, 4, 16))
        + " (runs are independent: the time divides by the machines, plus one instance start per batch).",
    ]
    return "\n".join(lines) + "\n"
