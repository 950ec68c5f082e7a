"""`t3d bench fidelity`: run text-to-3D on a prompt set over seeds and representations, evaluate each run
against ground truth and write a markdown table (per prompt and mean, with wall time per run)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

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


def run_fidelity(prompts: list[str], seeds: int, representations: list[str], out_root: Path,
                 overrides: list[str], steps: int | None = None, log=print, on_row=None) -> list[dict]:
    """Every (representation, prompt, seed) run, evaluated; `on_row(rows)` after each, so a crash loses little."""
    from ..runs import generate

    rows = []
    for rep in representations:
        for prompt in prompts:
            for seed in range(seeds):
                start = time.time()
                run = generate(prompt=prompt, representation=rep, seed=seed, steps=steps, out=str(out_root),
                               overrides=overrides, progress=False, log=lambda s: None)
                metrics = evaluate_run(run.dir)
                row = {"representation": rep, "prompt": prompt, "seed": seed, "wall_seconds": time.time() - start,
                       **{k: metrics.get(k) for k in ("silhouette_iou", "colour_error", "front_back_correct")}}
                record(rows, row, f"{rep:9s} {prompt:22s} seed {seed}: IoU {row['silhouette_iou']:.3f}  "
                                  f"colour err {row['colour_error']:.3f}  {row['wall_seconds']:.0f}s", log, on_row)
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
