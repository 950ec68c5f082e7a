"""`t3d bench stages`: coarse-to-fine runs against toy-world ground truth. Each staged config runs per prompt and
seed; then its coarse stage (the checkpoint at the end of stage 0) is exported as a mesh, which is what a user
would get by exporting the coarse stage directly, and compared with the final stage's export: Chamfer distance,
volume IoU, silhouette IoU and colour error of the meshes, and the representations' own renders."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..engines import EngineConfig
from ..errors import ThreeDistillError
from .harness import (
    engine_flags,
    engine_note,
    finished_row,
    in_task_order,
    mean_or_none,
    prior_phrase,
    record,
    report_header,
    run_tasks,
)

COARSE_EXPORT = "coarse.glb"
STAGE_ROW = "stage_row.json"


def _mesh_row(run, glb: Path, prefix: str) -> dict:
    """Render and mesh metrics of a loaded run whose export is `glb`, keys prefixed (coarse_ / final_)."""
    from ..evaluation.ground_truth import compare, subject_of
    from ..evaluation.mesh_eval import load_mesh, mesh_metrics
    from ..evaluation.run_eval import EVAL_RESOLUTION, render_eval_views

    colour, obj = subject_of(run.config.prompt)
    metrics = compare(render_eval_views(run), colour, obj, EVAL_RESOLUTION)
    metrics |= mesh_metrics(load_mesh(glb), colour, obj, EVAL_RESOLUTION)
    keys = (
        "silhouette_iou",
        "colour_error",
        "mesh_silhouette_iou",
        "mesh_colour_error",
        "mesh_chamfer",
        "mesh_volume_iou",
    )
    return {f"{prefix}{k}": metrics[k] for k in keys} | {f"{prefix}representation": run.config.representation}


def _task_dir_and_key(config: Path, seed: int, out_root: Path, overrides: list[str]) -> tuple[Path, dict]:
    """Where a staged run goes (absolute, as rows record it) and what identifies its task for --resume."""
    out = (Path(out_root) / Path(config).stem / f"seed{seed}").resolve()
    return out, {"config": str(config), "overrides": list(overrides)}


def stage_run(
    config: Path, prompt: str, seed: int, out_root: Path, overrides: list[str], threads: int | None = None
) -> dict:
    """One staged run, its coarse stage exported and both ends measured against ground truth (also the body of a
    worker process when runs go in parallel, on `threads` threads)."""
    import torch

    from ..workflows.generate import generate_or_resume

    out, task = _task_dir_and_key(config, seed, out_root, overrides)
    if threads:
        torch.set_num_threads(threads)
    start = time.time()
    run = generate_or_resume(
        out,
        prompt=prompt,
        seed=seed,
        config=config,
        overrides=list(overrides) + ["export=[glb]"],
        log=lambda s: None,
    )
    row = {
        "config": Path(config).stem,
        "prompt": prompt,
        "seed": seed,
        "run_dir": str(run.dir),
        "wall_seconds": time.time() - start,
        **measure_staged_run(run.dir),
    }
    (run.dir / STAGE_ROW).write_text(json.dumps({**row, "task": task}))
    return row


def measure_staged_run(run_dir: Path) -> dict:
    """A finished staged run (with export/model.glb): its first stage exported to export/coarse.glb, and both ends
    measured against ground truth."""
    from ..export.run_export import default_export_path, export_model
    from ..workflows.generate import read_run_config, stage_configs
    from ..workflows.results import load_run

    stages = stage_configs(read_run_config(run_dir))
    if len(stages) < 2:
        raise ThreeDistillError(
            f"{run_dir} has no stages; `t3d bench stages` compares a coarse stage with the last one"
        )
    coarse = load_run(run_dir, step=stages[0].trainer.steps)
    coarse_glb = Path(run_dir) / "export" / COARSE_EXPORT
    export_model(coarse.model, coarse.config.representation, "glb", coarse_glb)
    return {
        **_mesh_row(coarse, coarse_glb, "coarse_"),
        **_mesh_row(load_run(run_dir), default_export_path(run_dir, "glb"), "final_"),
    }


def check_staged(configs: list[Path]) -> None:
    """A one-line error for a config with fewer than two stages (nothing to compare)."""
    from omegaconf import OmegaConf

    for path in configs:
        if len(OmegaConf.load(path).get("stages") or []) < 2:
            raise ThreeDistillError(
                f"{path} has fewer than two stages; `t3d bench stages` compares a coarse stage "
                f"with the last one (e.g. --configs nerf-then-mesh)"
            )


def stage_header(configs: str, seeds: int, engine: EngineConfig | None = None, overrides=()) -> str:
    """The report's header: what `t3d bench stages --configs CONFIGS` ran, where, and how to read it."""
    return (
        report_header(
            "Coarse-to-fine runs against toy-world ground truth",
            f"t3d bench stages --configs {configs} --seeds {seeds}{engine_flags(engine)}",
            overrides,
        )
        + f", {prior_phrase(overrides)} unless a stage names another. "
        f"coarse: the first stage's result exported as a mesh (glb); final: the last stage's export. Chamfer is "
        f"divided by the object's bounding-box diagonal; lower is better." + engine_note(engine)
    )


def run_stage_bench(
    configs: list[Path],
    prompts: list[str],
    seeds: int,
    out_root: Path,
    overrides: list[str],
    log=print,
    on_row=None,
    reuse: bool = False,
    engine: EngineConfig | None = None,
) -> list[dict]:
    """Every (config, prompt, seed) staged run, measured; `on_row(rows)` after each. The runs go on `engine`
    (default local; seeded, so the results depend on a run's thread count only; wall times grow when runs share
    the cores)."""
    check_staged(configs)  # before anything runs
    if seeds < 1:
        raise ThreeDistillError(f"--seeds must be positive, got {seeds}")
    tasks = [
        dict(config=config, prompt=prompt, seed=seed, out_root=out_root, overrides=list(overrides))
        for config in configs
        for prompt in prompts
        for seed in range(seeds)
    ]
    rows: list[dict] = []

    def report(row: dict) -> None:
        record(
            rows,
            row,
            f"{row['config']:20s} {row['prompt']:22s} seed {row['seed']}: Chamfer "
            f"{row['coarse_mesh_chamfer']:.4f} -> {row['final_mesh_chamfer']:.4f}  mesh colour err "
            f"{row['coarse_mesh_colour_error']:.3f} -> {row['final_mesh_colour_error']:.3f}  "
            f"{row['wall_seconds']:.0f}s",
            log,
            on_row,
        )

    def read_back(task: dict) -> dict | None:
        out, key = _task_dir_and_key(task["config"], task["seed"], out_root, overrides)
        return finished_row(out, task["prompt"], key, STAGE_ROW)

    run_tasks(stage_run, tasks, report, engine, read_back if reuse else None, log=log)
    return in_task_order(
        rows,
        [(Path(t["config"]).stem, t["prompt"], t["seed"]) for t in tasks],
        lambda r: (r["config"], r["prompt"], r["seed"]),
    )


COLUMNS = (
    ("mesh_chamfer", "Chamfer / size"),
    ("mesh_volume_iou", "volume IoU"),
    ("mesh_silhouette_iou", "mesh IoU"),
    ("mesh_colour_error", "mesh colour err"),
    ("silhouette_iou", "render IoU"),
    ("colour_error", "render colour err"),
)


def markdown_table(rows: list[dict], header: str) -> str:
    """Per config and prompt, coarse -> final for every metric, and the Chamfer reduction."""
    head = " | ".join(f"{name} coarse -> final" for _, name in COLUMNS)
    lines = [
        header,
        "",
        f"| config | prompt | runs | {head} | Chamfer reduction | wall s/run |",
        "|---|---|---|" + "---|" * (len(COLUMNS) + 2),
    ]

    def cells(rs: list[dict]) -> str:
        def mean(key):
            return mean_or_none(r[key] for r in rs)

        parts = [f"{mean('coarse_' + k):.3f} -> {mean('final_' + k):.3f}" for k, _ in COLUMNS]
        reduction = 1 - mean("final_mesh_chamfer") / max(mean("coarse_mesh_chamfer"), 1e-9)
        return f"{len(rs)} | {' | '.join(parts)} | {100 * reduction:+.0f}% | {mean('wall_seconds'):.0f} |"

    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        for prompt in dict.fromkeys(r["prompt"] for r in mine):
            lines.append(f"| {config} | {prompt} | {cells([r for r in mine if r['prompt'] == prompt])}")
        lines.append(f"| **{config}** | **mean** | {cells(mine)}")
    return "\n".join(lines) + "\n"
