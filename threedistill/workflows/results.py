"""What the commands that take any run directory do with it: `t3d export` and `t3d eval` of a generate, fit or
edit run (loaded by `loading.py`)."""

from __future__ import annotations

from pathlib import Path

from ..scenes import load_scene
from ..session import read_run_kind, update_metrics
from .fit import FitConfig, eval_background, evaluate_views, export_scene_format
from .loading import load_generate_run, load_run, representation_of, scene_source


def export_run(
    run_dir: Path,
    fmt: str = "glb",
    out: Path | None = None,
    faces: int = 20000,
    texture_size: int = 1024,
    log=lambda s: None,
) -> Path:
    """Write any run's result as `fmt`. Generate runs: the object's frame. Fit and edit runs: splat formats in
    the capture's frame (as their automatic exports), mesh formats in the fit's normalised frame."""
    from ..export.mesh import check_budget
    from ..export.run_export import MESH_FORMATS, check_format, check_output_file, default_export_path, export_model

    check_format(fmt)  # before loading anything
    if fmt in MESH_FORMATS:
        check_budget(faces, texture_size)
    out = check_output_file(Path(out) if out else default_export_path(run_dir, fmt), fmt)
    run = load_run(run_dir)
    if run.kind == "generate":
        return export_model(run.model, run.config.representation, fmt, out, faces, texture_size, log)
    scene = load_scene(scene_source(run)[1])
    return export_scene_format(run.model, representation_of(run), scene, fmt, out, faces, texture_size, log)


def evaluate_run(run_dir: Path, run=None) -> dict:
    """Evaluate any run and merge the numbers into its metrics.json. Generate runs: against the toy world's
    ground truth (a one-line error for prompts without one). Fit runs: PSNR / SSIM of the held-out views at the
    fit's training size (or the photos' size with eval_resolution=full). Edit runs: the same against the
    unedited captures (the edit region is meant to differ, so this measures what the edit kept). `run`: a finished
    generate Run still in memory (what `generate` returned), evaluated as it is instead of being built again."""
    run_dir = Path(run_dir)
    kind = read_run_kind(run_dir)
    if kind == "generate":
        return evaluate_generate_run(run_dir, run)
    run = load_run(run_dir)
    fit_cfg, scene_path = scene_source(run)
    fit_cfg = fit_cfg or FitConfig()  # an edited 3DGS file: the default fit's height
    scene = load_scene(scene_path)

    result = evaluate_views(run.model, scene, scene.val_indices, fit_cfg.eval_rule(), eval_background(fit_cfg))
    result = {k: v for k, v in result.items() if k not in ("renders", "images")}
    against = (
        "held-out captures" if kind == "fit" else "held-out unedited captures (the edit region is meant to differ)"
    )
    evaluation = {"kind": kind, "against": against, "eval_resolution": fit_cfg.eval_resolution, **result}
    metrics = update_metrics(run_dir, {"eval": evaluation})
    return {**metrics, "eval": evaluation}


def evaluate_generate_run(run_dir: Path, run=None) -> dict:
    """A generate run against the toy world's ground truth at the fixed evaluation views (and its exported
    export/model.glb, if any); the views are saved for benchmarks. `run`: the finished Run in memory (its model on
    the CPU), else it is loaded from its latest checkpoint."""
    from ..evaluation.ground_truth import compare, subject_of
    from ..evaluation.run_eval import EVAL_RESOLUTION, render_eval_views, save_eval_views, write_comparison
    from .generate import read_run_config

    cfg = read_run_config(run_dir)
    colour, obj = subject_of(cfg.prompt)  # before building anything: fails fast on prompts without ground truth
    if run is None or run.trainer.step != run.config.trainer.steps:  # only a finished run is taken as it is
        run = load_generate_run(run_dir, cfg)
    render = render_eval_views(run)
    metrics = {"prompt": cfg.prompt, "object": obj, "colour": colour, "step": run.trainer.step}
    metrics |= compare(render, colour, obj, EVAL_RESOLUTION)
    write_comparison(run_dir / "renders" / "eval_vs_ground_truth.png", render["rgb"], colour, obj)
    save_eval_views(run_dir, render["rgb"])
    mesh_path = run_dir / "export" / "model.glb"
    if mesh_path.is_file():  # the exported mesh too: what a game engine gets
        from ..evaluation.mesh_eval import load_mesh, mesh_metrics

        metrics |= mesh_metrics(load_mesh(mesh_path), colour, obj, EVAL_RESOLUTION)
    return update_metrics(run_dir, metrics)
