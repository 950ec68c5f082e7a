"""`t3d fit` and `t3d edit`: captured scenes, reconstructed and edited with text (`threedistill.workflows.fit`,
`threedistill.workflows.edit`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import (
    OutOption,
    SeedOption,
    StepsOption,
    ViewerEveryOption,
    ViewerHostOption,
    ViewerOption,
    ViewerPortOption,
    app,
    command,
    log,
    viewer_options,
)


@command(app, "fit", overrides="t3d fit --scene data/garden trainer.steps=3000 resolution=96")
def fit_cmd(
    ctx: typer.Context,
    scene: Optional[str] = typer.Option(
        None,
        help="Captured scene: a nerfstudio (transforms.json), Blender "
        "(transforms_train.json), COLMAP (sparse/0) or LLFF (poses_bounds.npy) folder.",
    ),
    representation: Optional[str] = typer.Option(None, help="{fit_representations|default}."),
    steps: Optional[int] = StepsOption,
    seed: Optional[int] = SeedOption,
    out: Optional[str] = OutOption,
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted fit in this directory."),
    max_side: Optional[int] = typer.Option(
        None, help="Fit each view with its longer side at most this many pixels (default 320, the CPU default)."
    ),
    downscale: Optional[float] = typer.Option(None, help="Fit at the photos' size divided by this (beats --max-side)."),
    resolution: Optional[int] = typer.Option(None, help="Fit at this height, each view keeping its aspect ratio."),
    eval_resolution: Optional[str] = typer.Option(
        None, help="Held-out metrics at the training size (train, default) or the photos' own size (full)."
    ),
    background: Optional[str] = typer.Option(None, help="Render background while fitting: white, black or random."),
    mask_loss: Optional[bool] = typer.Option(
        None, "--mask-loss/--no-mask-loss", help="Ignore pixels outside the views' masks (default: off)."
    ),
    viewer: bool = ViewerOption,
    viewer_port: int = ViewerPortOption,
    viewer_every: int = ViewerEveryOption,
    viewer_host: str = ViewerHostOption,
):
    """Reconstruct a captured scene from its posed images (L1 + D-SSIM); reports held-out PSNR."""
    from ..workflows.fit import fit

    run = fit(
        scene=scene,
        representation=representation,
        steps=steps,
        seed=seed,
        out=out,
        overrides=ctx.args,
        resume=resume,
        log=log,
        viewer=viewer_options(viewer, viewer_port, viewer_every, viewer_host),
        max_side=max_side,
        downscale=downscale,
        resolution=resolution,
        eval_resolution=eval_resolution,
        background=background,
        mask_loss=mask_loss,
    )
    typer.echo(f"run directory: {run.dir}")
    metrics_path = run.dir / "metrics.json"
    if run.trainer.step == run.config.trainer.steps and metrics_path.is_file():
        m = json.loads(metrics_path.read_text())
        typer.echo(
            f"held-out views: {m['val'].get('views', 0)}, PSNR {m['val'].get('psnr', '-')} dB, "
            f"SSIM {m['val'].get('ssim', '-')}; training views PSNR {m['train'].get('psnr', '-')} dB; "
            f"{m['wall_seconds']} s"
        )


@command(app, "edit", overrides="t3d edit --scene RUN_DIR --prompt 'a blue cube' trainer.steps=200 lambda_preserve=0.1")
def edit_cmd(
    ctx: typer.Context,
    scene: Optional[str] = typer.Option(
        None, help="A t3d fit run, a captured-scene folder (fitted first) or a 3DGS point_cloud.ply."
    ),
    prompt: Optional[str] = typer.Option(None, help="What the edited region should show, e.g. 'a blue cube'."),
    source_prompt: Optional[str] = typer.Option(None, help="What it shows now (dds), e.g. 'a red cube'."),
    method: Optional[str] = typer.Option(None, help="Edit method: {edit_methods|default}."),
    region: list[str] = typer.Option(
        [],
        "--mask",
        "--region",
        help="What may change: box:cx,cy,cz,hx,hy,hz or sphere:cx,cy,cz,r in the "
        "scene's coordinates, or view:IMAGE_NAME:MASK.png (a mask drawn on one "
        "captured view, lifted to 3D; repeat --mask for masks on more views, "
        "or join them with ';'). Method drag also takes DYG's gaussian_mask.pt or a .npy (one bool per "
        "Gaussian). Default: the whole scene.",
    ),
    drag: list[str] = typer.Option(
        [],
        "--drag",
        help="Method drag: a handle point and its target, 'hx,hy,hz>tx,ty,tz' in the scene's coordinates "
        "(repeat for more pairs).",
    ),
    drag_file: Optional[str] = typer.Option(
        None, help="Method drag: DYG's drag_points.json (handle_points, target_points) instead of --drag."
    ),
    steps: Optional[int] = StepsOption,
    seed: Optional[int] = SeedOption,
    out: Optional[str] = OutOption,
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted edit in this directory."),
    viewer: bool = ViewerOption,
    viewer_port: int = ViewerPortOption,
    viewer_every: int = ViewerEveryOption,
    viewer_host: str = ViewerHostOption,
):
    """Edit a reconstructed scene with text inside a 3D region, or drag part of it (--method drag: --drag
    points, the part given by --mask, which also takes DYG's gaussian_mask.pt or a .npy)."""
    from ..errors import ConfigError
    from ..workflows.edit import edit

    masks = [r for r in region if r.endswith((".pt", ".npy")) and not r.startswith(("box:", "sphere:", "view:"))]
    if masks and len(region) > 1:
        raise ConfigError("--mask: a Gaussian mask file (.pt, .npy) is given alone")
    region = [] if masks else region
    if len(region) > 1 and not all(r.startswith("view:") for r in region):
        raise ConfigError("--mask: only view:IMAGE_NAME:MASK.png masks can be given more than once (one per view)")

    run = edit(
        source=scene,
        prompt=prompt,
        source_prompt=source_prompt,
        method=method,
        region=";".join(region) if region else None,
        steps=steps,
        seed=seed,
        out=out,
        overrides=ctx.args,
        resume=resume,
        log=log,
        viewer=viewer_options(viewer, viewer_port, viewer_every, viewer_host),
        drag=drag or None,
        drag_file=drag_file,
        gaussian_mask=masks[0] if masks else None,
    )
    typer.echo(f"run directory: {run.dir}")
