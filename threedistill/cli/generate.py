"""`t3d generate`: text to 3D (`threedistill.workflows.generate.generate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import (
    OVERRIDES_EXAMPLE,
    OutOption,
    SeedOption,
    StepsOption,
    ViewerEveryOption,
    ViewerHostOption,
    ViewerOption,
    ViewerPortOption,
    app,
    command,
    config_path,
    log,
    viewer_options,
)


@command(app, "generate", overrides=f"t3d generate --prompt 'a red duck' {OVERRIDES_EXAMPLE}")
def generate_cmd(
    ctx: typer.Context,
    prompt: str = typer.Option("", help="Text prompt, e.g. 'a red duck'."),
    representation: Optional[str] = typer.Option(None, help="{representations|default}."),
    guidance: Optional[str] = typer.Option(None, help="Guidance method: {guidance|default}."),
    prior: Optional[str] = typer.Option(None, help="Local diffusers directory or prior name: {priors|default}."),
    steps: Optional[int] = StepsOption,
    seed: Optional[int] = SeedOption,
    out: Optional[str] = OutOption,
    device: Optional[str] = typer.Option(None, help="auto (default: CUDA when torch sees a GPU), cpu, cuda or cuda:N."),
    config: Optional[str] = typer.Option(
        None,
        help="YAML config laid over configs/generate/<representation>.yaml: a path, or a shipped name ({configs}).",
    ),
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted run in this directory."),
    evaluate: bool = typer.Option(
        True, "--eval/--no-eval", help="Evaluate against ground truth at the end (toy prompts)."
    ),
    visual_prompt: Optional[str] = typer.Option(
        None,
        "--visual-prompt",
        help="An image of the object from the front (RGBA: alpha is the mask), or auto (drawn from the prior): "
        "matched at the front camera (image-to-3D; reference.* keys).",
    ),
    viewer: bool = ViewerOption,
    viewer_port: int = ViewerPortOption,
    viewer_every: int = ViewerEveryOption,
    viewer_host: str = ViewerHostOption,
):
    """Text to 3D: optimise a 3D representation (or a staged run) with score distillation."""
    from ..workflows.generate import RUN_PAGE, export_run_page, generate
    from .results import evaluate_and_print

    run = generate(
        prompt=prompt,
        representation=representation,
        guidance=guidance,
        prior=prior,
        steps=steps,
        seed=seed,
        out=out,
        device=device,
        config=config_path(config) if config else None,
        overrides=list(ctx.args) + ([f"reference.image={visual_prompt}"] if visual_prompt else []),
        resume=resume,
        log=log,
        viewer=viewer_options(viewer, viewer_port, viewer_every, viewer_host),
        page=not evaluate,  # written once below, with the evaluation in its metrics
    )
    typer.echo(f"run directory: {run.dir}")
    if evaluate and run.trainer.step == run.config.trainer.steps:
        log("evaluating against the toy world's ground truth")
        try:
            evaluate_and_print(run.dir, quiet_if_no_gt=True, run=run)
        finally:  # the page, with the evaluation when there is one
            if RUN_PAGE in run.config.export:
                export_run_page(run.dir, run.model, run.config.representation, log)
