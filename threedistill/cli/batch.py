"""`t3d batch`: one run per prompt and seed on an engine, and a summary table (`threedistill.workflows.batch`)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from . import (
    AddressOption,
    CpusPerRunOption,
    EngineOption,
    GpusPerRunOption,
    JobsOption,
    MaxRetriesOption,
    app,
    command,
    config_path,
    engine_config,
    log,
)


@command(app, "batch", overrides="t3d batch --prompts prompts.txt --seeds 2 trainer.steps=300")
def batch_cmd(
    ctx: typer.Context,
    prompts: Optional[Path] = typer.Option(None, help="Prompt file: one prompt per line, # for comments."),
    seeds: int = typer.Option(1, help="Seeds per prompt (0 .. N-1)."),
    representation: Optional[str] = typer.Option(None, help="{representations|default}."),
    config: Optional[str] = typer.Option(None, help="YAML config of every run: a path, or a shipped name ({configs})."),
    out: Path = typer.Option(Path("outputs/batch"), "--out", help="The batch folder (runs, summary.md)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the batch in --out: finished runs are kept, interrupted ones continue."
    ),
    engine: str = EngineOption,
    jobs: int = JobsOption,
    address: Optional[str] = AddressOption,
    cpus_per_run: Optional[float] = CpusPerRunOption,
    gpus_per_run: float = GpusPerRunOption,
    max_retries: int = MaxRetriesOption,
):
    """Many prompts: one text-to-3D run per prompt and seed, then a summary table (metrics against ground truth
    where a prompt has one, wall time, links to each run) in OUT/summary.md."""
    from ..workflows.batch import run_batch

    engine_cfg = engine_config(engine, jobs, address, cpus_per_run, gpus_per_run, max_retries)
    rows = run_batch(
        out,
        engine_cfg,
        prompts_file=prompts,
        seeds=seeds,
        representation=representation,
        config=str(config_path(config)) if config else None,
        overrides=list(ctx.args),
        resume=resume,
        command=shlex.join(["t3d", *sys.argv[1:]]) if sys.argv[1:2] == ["batch"] else "t3d batch",
        log=log,
    )
    typer.echo(f"{len(rows)} runs; wrote {out / 'summary.md'}")
