"""The evaluation views of text-to-3D runs: the fixed cameras' renders, their comparison picture against the
toy world's ground truth, and their saved copy for benchmarks (`t3d eval` itself: workflows/results.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from .ground_truth import EVAL_AZIMUTHS, eval_cameras

EVAL_RESOLUTION = 64


def write_comparison(path: Path, rgb: torch.Tensor, colour: str, obj: str) -> None:
    """One picture to judge a result by eye: the evaluation views (rows: result, then ground truth, per elevation)."""
    from ..utils.images import make_grid, save_image
    from .ground_truth import truth_at_eval_views

    gt = truth_at_eval_views(obj, colour, rgb.shape[-1])["rgb"]
    n = len(EVAL_AZIMUTHS)
    rows = [block for e in range(0, len(rgb), n) for block in (rgb[e : e + n], gt[e : e + n])]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(torch.cat(rows), nrow=n), path)


def save_eval_views(run_dir: Path, rgb: torch.Tensor) -> None:
    """The evaluation views as uint8 (renders/eval_views.npz), so benchmarks can compare runs (e.g. seed diversity)."""
    import numpy as np

    np.savez_compressed(
        run_dir / "renders" / "eval_views.npz", rgb=(rgb.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    )


def load_eval_views(run_dir: Path) -> torch.Tensor:
    """The evaluation views saved by `t3d eval`, float (V,3,H,W) in [0, 1]."""
    import numpy as np

    data = np.load(Path(run_dir) / "renders" / "eval_views.npz")["rgb"]
    return torch.from_numpy(data).float() / 255.0


def render_eval_views(run) -> dict:
    """rgb and alpha of a loaded run at the fixed evaluation views (what its metrics are computed from)."""
    cams = eval_cameras()
    renders = [run.render(cams[i : i + 4], EVAL_RESOLUTION) for i in range(0, len(cams), 4)]
    return {k: torch.cat([r[k] for r in renders]) for k in ("rgb", "alpha")}
