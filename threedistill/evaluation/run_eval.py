"""`t3d eval RUN_DIR`: load a run's latest checkpoint, render the fixed evaluation views, compare with
ground truth (and the exported export/model.glb, if any) and merge the numbers into the run's metrics.json."""
from __future__ import annotations

from pathlib import Path

import torch

from .ground_truth import EVAL_AZIMUTHS, compare, eval_cameras, subject_of

EVAL_RESOLUTION = 64


def load_run(run_dir: Path, cfg=None, step: int | None = None):
    """Rebuild a run's model from its config (read from config.yaml unless given) and latest checkpoint (or the one
    at run step `step`, e.g. the end of a coarse stage)."""
    from ..runs import Run, build, read_run_config, stage_configs
    from ..trainer import latest_checkpoint

    run_dir = Path(run_dir)
    cfg = cfg or read_run_config(run_dir)
    cfg = stage_configs(cfg)[int(latest_checkpoint(run_dir, step)[1].get("stage", 0))]  # that checkpoint's stage
    model, trainer = build(cfg, None, log=lambda s: None, device="cpu")
    trainer.load_checkpoint(run_dir, step)
    return Run(run_dir, cfg, model, trainer)


def write_comparison(path: Path, rgb: torch.Tensor, colour: str, obj: str) -> None:
    """One picture to judge a result by eye: the evaluation views (rows: result, then ground truth, per elevation)."""
    from ..toyworld.render import render_toy
    from ..utils.images import make_grid, save_image

    gt = render_toy(obj, colour, eval_cameras(), rgb.shape[-2], rgb.shape[-1])["rgb"]
    n = len(EVAL_AZIMUTHS)
    rows = [block for e in range(0, len(rgb), n) for block in (rgb[e:e + n], gt[e:e + n])]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(torch.cat(rows), nrow=n), path)


def save_eval_views(run_dir: Path, rgb: torch.Tensor) -> None:
    """The evaluation views as uint8 (renders/eval_views.npz), so benchmarks can compare runs (e.g. seed diversity)."""
    import numpy as np

    np.savez_compressed(run_dir / "renders" / "eval_views.npz",
                        rgb=(rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def load_eval_views(run_dir: Path) -> torch.Tensor:
    """The evaluation views saved by `t3d eval`, float (V,3,H,W) in [0, 1]."""
    import numpy as np

    data = np.load(Path(run_dir) / "renders" / "eval_views.npz")["rgb"]
    return torch.from_numpy(data).float() / 255.0


def render_eval_views(run) -> dict:
    """rgb and alpha of a loaded run at the fixed evaluation views (what its metrics are computed from)."""
    cams = eval_cameras()
    renders = [run.render(cams[i:i + 4], EVAL_RESOLUTION) for i in range(0, len(cams), 4)]
    return {k: torch.cat([r[k] for r in renders]) for k in ("rgb", "alpha")}


def evaluate_run(run_dir: Path) -> dict:
    from ..runs import read_run_config

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    colour, obj = subject_of(cfg.prompt)  # before building anything: fails fast on prompts without ground truth
    run = load_run(run_dir, cfg)
    render = render_eval_views(run)
    metrics = {"prompt": cfg.prompt, "object": obj, "colour": colour, "step": run.trainer.step}
    metrics |= compare(render, colour, obj, EVAL_RESOLUTION)
    write_comparison(run_dir / "renders" / "eval_vs_ground_truth.png", render["rgb"], colour, obj)
    save_eval_views(run_dir, render["rgb"])
    mesh_path = run_dir / "export" / "model.glb"
    if mesh_path.is_file():  # the exported mesh too: what a game engine gets
        from .mesh_eval import load_mesh, mesh_metrics

        metrics |= mesh_metrics(load_mesh(mesh_path), colour, obj, EVAL_RESOLUTION)
    from ..runs import update_metrics

    return update_metrics(run_dir, metrics)
