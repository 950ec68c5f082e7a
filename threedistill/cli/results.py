"""`t3d export` and `t3d eval`: what to do with any run directory, generate, fit or edit
(`threedistill.workflows.results`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ThreeDistillError
from . import app, command, log

RUN_DIR_HELP = "Any run directory: a t3d generate, t3d fit or t3d edit run."
GROUND_TRUTH_KEYS = (
    "silhouette_iou",
    "colour_error",
    "front_back_correct",
    "mesh_silhouette_iou",
    "mesh_chamfer",
    "mesh_volume_iou",
    "wall_seconds",
)


def evaluate_and_print(run_dir: Path, quiet_if_no_gt: bool = False, run=None) -> dict | None:
    """Evaluate any run (`evaluate_run`) and print a table: ground-truth metrics of a generate run, held-out view
    PSNR / SSIM of a fit or edit run. With `quiet_if_no_gt`, a prompt without ground truth prints why, no error."""
    from rich.console import Console

    from ..workflows.results import evaluate_run

    try:
        metrics = evaluate_run(run_dir, run)
    except ThreeDistillError as err:
        if quiet_if_no_gt and "no ground truth" in str(err):
            typer.echo(str(err))
            return None
        raise
    evaluation = metrics.get("eval")
    if isinstance(evaluation, dict) and evaluation.get("kind") in ("fit", "edit"):
        Console().print(view_table(evaluation))
        typer.echo(f"renders against the {evaluation['against']}")
    else:
        Console().print(ground_truth_table(metrics))
    return metrics


def ground_truth_table(metrics: dict):
    """A generate run's numbers against the toy world's ground truth."""
    from rich.table import Table

    table = Table(title=f"ground-truth evaluation: {metrics['prompt']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in GROUND_TRUTH_KEYS:
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.3f}")
    return table


def view_table(evaluation: dict):
    """A fit or edit run's renders against its captured held-out views: {"kind", "against", "eval_resolution",
    "size", "views", "psnr", "ssim", "psnr_min", "cc_psnr", "cc_ssim", and masked_psnr / masked_ssim with masks}
    (`workflows.results.evaluate_run`)."""
    from rich.table import Table

    table = Table(title=f"{evaluation['kind']} run: held-out views")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("held-out views", str(evaluation.get("views", 0)))
    if evaluation.get("size") is not None:
        h, w = evaluation["size"]
        table.add_row("render size (first view)", f"{w}x{h} px ({evaluation.get('eval_resolution', 'train')})")
    for key, name, digits in (
        ("psnr", "PSNR dB (mean)", 2),
        ("psnr_min", "PSNR dB (worst view)", 2),
        ("ssim", "SSIM (mean)", 4),
        ("cc_psnr", "PSNR dB, colour-corrected (mean)", 2),
        ("cc_ssim", "SSIM, colour-corrected (mean)", 4),
        ("masked_psnr", "PSNR dB inside the masks", 2),
        ("masked_ssim", "SSIM inside the masks", 4),
    ):
        if evaluation.get(key) is not None:
            table.add_row(name, f"{evaluation[key]:.{digits}f}")
    return table


@command(app, "export")
def export_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help=RUN_DIR_HELP),
    fmt: str = typer.Option(
        "glb",
        "--format",
        help="{mesh_formats|default} (a textured mesh, any run); "
        "{splat_formats|default} (the 3D Gaussians of a Gaussians run: "
        "generate, fit or edit).",
    ),
    faces: int = typer.Option(20000, help="Mesh face budget (decimation target)."),
    texture_size: int = typer.Option(1024, help="Baked texture size, a power of two; 0 = per-vertex colours."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default RUN_DIR/export/...)."),
):
    """Write any run's result (generate, fit or edit run) for other tools.

    A textured mesh from any run; the 3D Gaussians (3DGS .ply, .splat, .spz, PlayCanvas .compressed.ply) of a
    Gaussians run. Fit and edit runs write splat formats in the capture's own frame, meshes in the fit's normalised
    frame."""
    from ..workflows.results import export_run

    typer.echo(f"wrote {export_run(run_dir, fmt, out, faces, texture_size, log=log)}")


@command(app, "eval")
def eval_cmd(run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help=RUN_DIR_HELP)):
    """Evaluate any run (generate, fit or edit run); writes metrics.json.

    A generate run: against the toy world's ground truth at 16 fixed views. A fit run: PSNR / SSIM of its
    held-out captured views; an edit run: the same against the unedited captures (what the edit kept)."""
    evaluate_and_print(run_dir)
