"""`t3d prior ...`: the diffusion prior: train a toy one, sample, evaluate, inspect, convert MVDream's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import ThreeDistillError
from . import PriorOption, app, command, log

prior_app = typer.Typer(no_args_is_help=True, help="The 2D diffusion prior: train, sample, evaluate, inspect.")
app.add_typer(prior_app, name="prior")


@command(prior_app, "train", overrides="t3d prior train steps=4000 batch_size=128")
def prior_train(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, help="YAML config (default configs/prior/toyworld.yaml); key=value overrides follow."
    ),
):
    """Train a toy prior (default config: assets/priors/toyworld; configs/prior/toyworld_latent.yaml: the latent
    one)."""
    from ..config import load_config, packaged_config
    from ..toyworld.training import PriorTrainConfig, train_prior

    cfg = load_config(PriorTrainConfig, config or packaged_config("prior", "toyworld.yaml"), ctx.args)
    train_prior(cfg, log=log)


@command(prior_app, "train-drag", overrides="t3d prior train-drag steps=400 drags=200")
def prior_train_drag(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, help="YAML config (default configs/prior/toyworld_drag.yaml); key=value overrides follow."
    ),
):
    """Train the toy drag teacher of Drag-SDS on random toy drags and gate it on the named ones (the default config
    writes the shipped assets/priors/toyworld-drag: give out=DIR to keep it)."""
    from ..config import load_config, packaged_config
    from ..toyworld.training.drag_teacher import DragTeacherTrainConfig, train_drag_teacher

    cfg = load_config(DragTeacherTrainConfig, config or packaged_config("prior", "toyworld_drag.yaml"), ctx.args)
    train_drag_teacher(cfg, log=log)


def _load(prior: Optional[Path]):
    from ..priors import load_prior

    return load_prior(prior)


@command(prior_app, "info")
def prior_info(prior: Optional[Path] = PriorOption):
    """Describe a prior: kind, resolution, prediction type, parameter count."""
    p = _load(prior)
    if not hasattr(p, "unet"):
        typer.echo(
            f"{p}\nno network: the exact denoiser of its image set, {p.native_resolution}px, "
            f"{p.prediction_type} prediction"
        )
        return
    n = sum(x.numel() for x in p.unet.parameters())
    steps = json.dumps(p.info.get("trained_steps", "n/a"))
    typer.echo(f"{p}\nunet parameters: {n / 1e6:.2f}M\ntraining info: {steps} steps")
    if p.latent:
        psnr = p.info.get("vae", {}).get("holdout_psnr")
        typer.echo(
            f"vae: {p.vae_scale}x downsampling to {p.channels} latent channels, scaling factor "
            f"{p.latent_scaling:.4f}" + (f", held-out reconstruction PSNR {psnr} dB" if psnr else "")
        )


@command(prior_app, "sample")
def prior_sample(
    prompt: str = typer.Option(..., help="Text prompt, e.g. 'a blue cone, side view'."),
    n: int = typer.Option(8, help="Number of images."),
    out: Path = typer.Option(Path("samples.png"), "--out", help="Grid image to write."),
    steps: int = typer.Option(100, help="Sampling steps."),
    guidance: float = typer.Option(5.0, help="Classifier-free guidance scale (diffusers convention; 1 = none)."),
    sampler: str = typer.Option("ddpm", help="ddpm (ancestral, default) or ddim."),
    seed: int = typer.Option(0),
    prior: Optional[Path] = PriorOption,
):
    """Draw images from the prior for a prompt."""
    from ..priors.sampling import sample_images
    from ..prompting import check_prompt
    from ..utils.images import save_image

    check_prompt(
        prompt, "--prompt"
    )  # the Python API samples unconditionally from an empty prompt; the command wants one
    images = sample_images(
        _load(prior), [prompt] * n, steps=steps, guidance_scale=guidance, seed=seed, progress=True, sampler=sampler
    )
    typer.echo(f"wrote {save_image(images, out)}")


@command(prior_app, "eval")
def prior_eval(
    n: int = typer.Option(8, help="Samples per catalogue prompt."),
    steps: int = typer.Option(100, help="Sampling steps (ancestral DDPM)."),
    guidance: float = typer.Option(5.0, help="Classifier-free guidance scale (diffusers convention)."),
    seed: int = typer.Option(0),
    prior: Optional[Path] = PriorOption,
    out: Optional[Path] = typer.Option(None, "--out", help="Write the report as JSON (and a grid PNG beside it)."),
    objects: Optional[str] = typer.Option(None, help="Comma-separated toy objects to judge (default: all)."),
    view_prompts: bool = typer.Option(
        False, "--view-prompts", help="2D prior: sample at random cameras with view-suffixed prompts, judge the front."
    ),
):
    """Quality gate: sample every catalogue prompt and judge against toy-world ground truth. A multi-view prior is
    sampled in sets of views at random cameras and judged on the front each camera should see as well."""
    from rich.console import Console
    from rich.table import Table

    from ..evaluation.prior_gate import evaluate_prior
    from ..utils.images import save_image

    subjects = None
    if objects:
        from ..toyworld.catalogue import OBJECTS, catalogue_subjects

        wanted = [o.strip() for o in objects.split(",") if o.strip()]
        unknown = [o for o in wanted if o not in OBJECTS]
        if unknown or not wanted:
            bad = ", ".join(unknown) or repr(objects)
            raise ThreeDistillError(f"--objects: unknown {bad}; known: {', '.join(OBJECTS)}")
        subjects = [s for s in catalogue_subjects() if s[1] in wanted]
    report = evaluate_prior(
        _load(prior),
        samples_per_prompt=n,
        steps=steps,
        guidance_scale=guidance,
        seed=seed,
        subjects=subjects,
        view_prompts=view_prompts,
    )
    images = report.pop("_images")
    table = Table(title="prior quality gate (share of samples judged right)")
    acc = report["accuracy"]
    columns = list(acc)  # all, object, colour, background [, front, set: a multi-view prior's]
    for col in ["prompt"] + columns:
        table.add_column(col, justify="left" if col == "prompt" else "right")
    for prompt, row in report["per_prompt"].items():
        table.add_row(prompt, *(f"{row[k]:.2f}" if k in row else "-" for k in columns))
    table.add_row("[b]overall", *(f"[b]{acc[k]:.3f}" for k in columns))
    Console().print(table)
    verdict = "PASS" if report["passed"] else "FAIL"
    typer.echo(
        f"{verdict}: {acc['all']:.1%} of {len(images)} samples right (target {report['target']:.0%}"
        + (f"; front where the camera says front: {acc['front']:.1%}" if "front" in acc else "")
        + "); "
        f"{report['seconds_per_image']:.3f}s per image; the judge scores ground-truth renders "
        f"{report['judge_on_ground_truth']:.1%}"
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        save_image(images, out.with_suffix(".png"))
        typer.echo(f"wrote {out}")


@command(prior_app, "convert-mvdream")
def prior_convert_mvdream(
    checkpoint: Path = typer.Argument(
        ..., metavar="CHECKPOINT", help="MVDream's UNet checkpoint: sd-v2.1-base-4view.pt (or .safetensors)."
    ),
    base: Path = typer.Option(
        ..., "--base", help="Local diffusers Stable Diffusion 2.1-base directory (scheduler, text encoder, VAE)."
    ),
    out: Path = typer.Option(..., "--out", help="Directory to write (new or empty); then use it as --prior DIR."),
    num_views: int = typer.Option(4, "--num-views", help="Views the prior denoises together (MVDream: 4)."),
):
    """Convert the official MVDream checkpoint into a multi-view prior directory (diffusers layout) for --prior."""
    from ..priors.mvdream_convert import convert_mvdream

    out_dir = convert_mvdream(checkpoint, base, out, num_views=num_views, log=log)
    typer.echo(f"wrote {out_dir}; use it with --prior {out_dir} (a GPU with about 10 GB)")
