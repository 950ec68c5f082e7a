"""The `t3d` command. Each subcommand is a thin layer over the Python API; user errors print one line."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import ThreeDistillError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="threedistill: text to 3D by score distillation, on CPU, measured against ground truth.")
toyworld_app = typer.Typer(no_args_is_help=True, help="Toy world: objects with known 3D ground truth.")
prior_app = typer.Typer(no_args_is_help=True, help="The 2D diffusion prior: train, sample, evaluate, inspect.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: quality against ground truth, speed.")
app.add_typer(toyworld_app, name="toyworld")
app.add_typer(prior_app, name="prior")
app.add_typer(bench_app, name="bench")

EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _prior_phrase(overrides: list[str]) -> str:
    """How a benchmark header names its prior: the last `prior=...` override, else the embedded one."""
    named = [o.partition("=")[2] for o in overrides if o.partition("=")[0].strip() == "prior"]
    return f"prior {named[-1]}" if named else "embedded toy prior"


PriorOption = typer.Option(None, "--prior", help="Local diffusers directory or embedded prior name (toyworld, toyworld-latent, or toyworld-oracle: the exact denoiser of the training set); default: toyworld.")
# The options every optimising command (generate, fit, edit) shares.
StepsOption = typer.Option(None, help="Optimisation steps.")
SeedOption = typer.Option(None, help="Random seed (same seed, same result on CPU).")
OutOption = typer.Option(None, help="Root of run directories (default outputs/).")


def _console():
    from rich.console import Console
    return Console(stderr=True)


# ---------------------------------------------------------------- toyworld
@toyworld_app.command("list")
def toyworld_list():
    """List the catalogue's objects and colours."""
    from .toyworld.catalogue import COLOURS, OBJECTS
    for obj in OBJECTS.values():
        front = " (has a front)" if obj.has_front else ""
        typer.echo(f"{obj.name:10s} {obj.description}{front}")
    typer.echo("colours: " + ", ".join(COLOURS))


@toyworld_app.command("render")
def toyworld_render(
    object: str = typer.Option(..., "--object", help="'<colour> <object>', e.g. 'red duck'."),
    azimuth: float = typer.Option(0.0, help="Degrees; 0 looks at the object's front."),
    elevation: float = typer.Option(15.0, help="Degrees above the horizon."),
    radius: float = typer.Option(2.9, help="Camera distance from the origin."),
    fov: float = typer.Option(40.0, help="Vertical field of view in degrees."),
    resolution: int = typer.Option(256, help="Image height and width in pixels."),
    what: str = typer.Option("rgb", help="rgb, alpha, depth, normal, or all (a strip of the four)."),
    out: Path = typer.Option(Path("toy.png"), "--out", help="Output image file."),
):
    """Render a toy object from one camera."""
    import torch

    from .cameras import orbit_cameras
    from .toyworld.catalogue import parse_subject
    from .toyworld.render import render_toy
    from .utils.images import save_image

    colour, obj = parse_subject(object)
    if not 8 <= resolution <= 2048:
        raise ThreeDistillError(f"--resolution must be between 8 and 2048, got {resolution}")
    if not 0 < fov < 180:
        raise ThreeDistillError(f"--fov must be between 0 and 180 degrees, got {fov}")
    if radius <= 1.0:
        raise ThreeDistillError(f"--radius must exceed 1 (the objects fill the unit sphere), got {radius}")
    views = {"rgb", "alpha", "depth", "normal", "all"}
    if what not in views:
        raise ThreeDistillError(f"--what must be one of {', '.join(sorted(views))}, got {what!r}")
    result = render_toy(obj, colour, orbit_cameras(azimuth, elevation, radius, fov), resolution, resolution)
    panels = {
        "rgb": result["rgb"][0],
        "alpha": result["alpha"][0].expand(3, -1, -1),
        "depth": torch.where(result["alpha"][0] > 0, 1 - (result["depth"][0] - (radius - 1)) / 2, torch.ones(1)).expand(3, -1, -1),
        "normal": torch.where(result["alpha"][0] > 0, result["normal"][0] * 0.5 + 0.5, torch.ones(1)),
    }
    image = torch.cat(list(panels.values()), -1) if what == "all" else panels[what]
    typer.echo(f"wrote {save_image(image.clamp(0, 1), out)}")


@toyworld_app.command("scene")
def toyworld_scene(
    name: str = typer.Argument(..., help="A default scene: three (red cube, yellow torus, orange duck) or four."),
    out: Path = typer.Option(..., "--out", help="Folder to write (nerfstudio + COLMAP layouts, ground truth)."),
    views: int = typer.Option(48, help="Number of posed views (every 8th is held out)."),
    width: int = typer.Option(96, help="Image width."),
    height: int = typer.Option(72, help="Image height."),
    seed: int = typer.Option(0, help="Camera seed."),
):
    """Write a toy captured scene: posed images, COLMAP and nerfstudio files, sparse points, ground truth."""
    from .toyworld.capture import write_captured_scene
    from .toyworld.scene import default_scenes

    scenes = default_scenes()
    if name not in scenes:
        raise ThreeDistillError(f"unknown toy scene {name!r}; known: {', '.join(scenes)}")
    if views < 2 or width < 8 or height < 8:
        raise ThreeDistillError("a captured scene needs at least 2 views of at least 8x8 pixels")
    path = write_captured_scene(name, out, n_views=views, width=width, height=height, seed=seed)
    typer.echo(f"wrote {path} ({views} views {width}x{height}); fit it with: t3d fit --scene {path}")


@toyworld_app.command("dataset")
def toyworld_dataset(
    views: int = typer.Option(500, help="Random views per (colour, object) subject."),
    resolution: int = typer.Option(32, help="Image size in pixels."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("data/toyworld_dataset.npz"), "--out"),
):
    """Render the prior's training set: images, prompts and cameras (.npz)."""
    from .toyworld.dataset import generate_dataset

    if views < 1 or not 8 <= resolution <= 512:
        raise ThreeDistillError(f"--views must be >= 1 and --resolution within 8..512, got {views}, {resolution}")
    data = generate_dataset(views, resolution, seed=seed)
    data.save(out)
    typer.echo(f"wrote {len(data)} images of {len(data.subjects)} subjects to {out}")


# ---------------------------------------------------------------- prior
@prior_app.command("train", context_settings=EXTRA_ARGS)
def prior_train(ctx: typer.Context,
                config: Optional[Path] = typer.Option(None, help="YAML config (default configs/prior/toyworld.yaml); key=value overrides follow.")):
    """Train a toy prior (default config: assets/priors/toyworld; configs/prior/toyworld_latent.yaml: the latent one)."""
    from .config import load_config, packaged_config
    from .priors.train import PriorTrainConfig, train_prior

    cfg = load_config(PriorTrainConfig, config or packaged_config("prior", "toyworld.yaml"), ctx.args)
    train_prior(cfg, log=lambda s: _console().print(s))


def _load(prior: Optional[Path]):
    from .priors import load_prior
    return load_prior(prior)


@prior_app.command("info")
def prior_info(prior: Optional[Path] = PriorOption):
    """Describe a prior: kind, resolution, prediction type, parameter count."""
    p = _load(prior)
    if not hasattr(p, "unet"):
        typer.echo(f"{p}\nno network: the exact denoiser of its image set, {p.native_resolution}px, "
                   f"{p.prediction_type} prediction")
        return
    n = sum(x.numel() for x in p.unet.parameters())
    typer.echo(f"{p}\nunet parameters: {n / 1e6:.2f}M\ntraining info: {json.dumps(p.info.get('trained_steps', 'n/a'))} steps")
    if p.latent:
        psnr = p.info.get("vae", {}).get("holdout_psnr")
        typer.echo(f"vae: {p.vae_scale}x downsampling to {p.channels} latent channels, scaling factor "
                   f"{p.latent_scaling:.4f}" + (f", held-out reconstruction PSNR {psnr} dB" if psnr else ""))


@prior_app.command("sample")
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
    from .priors.sampling import sample_images
    from .utils.images import save_image

    if not prompt.strip():
        raise ThreeDistillError("--prompt is empty; give a text prompt such as 'a red duck'")
    if n < 1 or steps < 1:
        raise ThreeDistillError(f"--n and --steps must be positive, got {n} and {steps}")
    images = sample_images(_load(prior), [prompt] * n, steps=steps, guidance_scale=guidance, seed=seed, progress=True,
                           sampler=sampler)
    typer.echo(f"wrote {save_image(images, out)}")


@prior_app.command("eval")
def prior_eval(
    n: int = typer.Option(8, help="Samples per catalogue prompt."),
    steps: int = typer.Option(100, help="Sampling steps (ancestral DDPM)."),
    guidance: float = typer.Option(5.0, help="Classifier-free guidance scale (diffusers convention)."),
    seed: int = typer.Option(0),
    prior: Optional[Path] = PriorOption,
    out: Optional[Path] = typer.Option(None, "--out", help="Write the report as JSON (and a grid PNG beside it)."),
):
    """Quality gate: sample every catalogue prompt and judge against toy-world ground truth."""
    from rich.table import Table

    from .evaluation.prior_gate import evaluate_prior
    from .utils.images import save_image

    if n < 1 or steps < 1:
        raise ThreeDistillError(f"--n and --steps must be positive, got {n} and {steps}")
    report = evaluate_prior(_load(prior), samples_per_prompt=n, steps=steps, guidance_scale=guidance, seed=seed)
    images = report.pop("_images")
    table = Table(title="prior quality gate (share of samples judged right)")
    for col in ("prompt", "all", "object", "colour", "background"):
        table.add_column(col, justify="left" if col == "prompt" else "right")
    for prompt, row in report["per_prompt"].items():
        table.add_row(prompt, *(f"{row[k]:.2f}" for k in ("all", "object", "colour", "background")))
    acc = report["accuracy"]
    table.add_row("[b]overall", *(f"[b]{acc[k]:.3f}" for k in ("all", "object", "colour", "background")))
    from rich.console import Console
    Console().print(table)
    verdict = "PASS" if report["passed"] else "FAIL"
    typer.echo(f"{verdict}: {acc['all']:.1%} of {len(images)} samples right (target {report['target']:.0%}); "
               f"{report['seconds_per_image']:.3f}s per image; the judge scores ground-truth renders "
               f"{report['judge_on_ground_truth']:.1%}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        save_image(images, out.with_suffix(".png"))
        typer.echo(f"wrote {out}")


# ---------------------------------------------------------------- generate / eval / bench
@app.command("generate", context_settings=EXTRA_ARGS)
def generate_cmd(
    ctx: typer.Context,
    prompt: str = typer.Option("", help="Text prompt, e.g. 'a red duck'."),
    representation: Optional[str] = typer.Option(None, help="gaussians (default), nerf, triplane or mesh."),
    guidance: Optional[str] = typer.Option(None, help="Guidance method: sds (default), vsd, esd, asd, csd, csm, ism, tsm, bsd, cds, nfsd."),
    prior: Optional[str] = typer.Option(None, help="Local diffusers directory or embedded prior name (toyworld-latent, "
                                                   "toyworld-oracle); default: the embedded toy prior."),
    steps: Optional[int] = StepsOption,
    seed: Optional[int] = SeedOption,
    out: Optional[str] = OutOption,
    device: Optional[str] = typer.Option(None, help="auto (default: CUDA when torch sees a GPU), cpu, cuda or cuda:N."),
    config: Optional[str] = typer.Option(None, help="YAML config laid over configs/generate/<representation>.yaml: a "
                                         "path, or a shipped name (stabledreamer, nerf-then-mesh, gaussians-then-mesh, "
                                         "their -oracle variants, prolificdreamer)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted run in this directory."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate against ground truth at the end (toy prompts)."),
):
    """Text to 3D: optimise a NeRF, triplane, 3D Gaussians or mesh (or a staged run) with score distillation."""
    from .runs import generate

    if resume is None and not prompt.strip():
        raise ThreeDistillError("--prompt is empty; give a text prompt such as --prompt 'a red duck'")
    run = generate(prompt=prompt, representation=representation, guidance=guidance, prior=prior, steps=steps, seed=seed,
                   out=out, device=device, config=_config_path(config) if config else None, overrides=ctx.args, resume=resume, log=lambda s: _console().print(s))
    typer.echo(f"run directory: {run.dir}")
    if evaluate and run.trainer.step == run.config.trainer.steps:
        _evaluate_and_print(run.dir, quiet_if_no_gt=True)


@app.command("fit", context_settings=EXTRA_ARGS)
def fit_cmd(
    ctx: typer.Context,
    scene: Optional[str] = typer.Option(None, help="Captured scene: a nerfstudio (transforms.json), Blender "
                                        "(transforms_train.json) or COLMAP (sparse/0) folder."),
    representation: Optional[str] = typer.Option(None, help="gaussians (default) or nerf."),
    steps: Optional[int] = StepsOption,
    seed: Optional[int] = SeedOption,
    out: Optional[str] = OutOption,
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted fit in this directory."),
):
    """Reconstruct a captured scene from its posed images (L1 + D-SSIM); reports held-out PSNR."""
    from .scenes.fit import fit

    if resume is None and not scene:
        raise ThreeDistillError("--scene is missing; give a captured-scene folder, e.g. --scene data/garden")
    run = fit(scene=scene, representation=representation, steps=steps, seed=seed, out=out, overrides=ctx.args,
              resume=resume, log=lambda s: _console().print(s))
    typer.echo(f"run directory: {run.dir}")
    metrics_path = run.dir / "metrics.json"
    if run.trainer.step == run.config.trainer.steps and metrics_path.is_file():
        m = json.loads(metrics_path.read_text())
        typer.echo(f"held-out views: {m['val'].get('views', 0)}, PSNR {m['val'].get('psnr', '-')} dB, "
                   f"SSIM {m['val'].get('ssim', '-')}; training views PSNR {m['train'].get('psnr', '-')} dB; "
                   f"{m['wall_seconds']} s")


@app.command("edit", context_settings=EXTRA_ARGS)
def edit_cmd(
    ctx: typer.Context,
    scene: Optional[str] = typer.Option(None, help="A t3d fit run, a captured-scene folder (fitted first) or a 3DGS point_cloud.ply."),
    prompt: Optional[str] = typer.Option(None, help="What the edited region should show, e.g. 'a blue cube'."),
    source_prompt: Optional[str] = typer.Option(None, help="What it shows now (dds), e.g. 'a red cube'."),
    method: Optional[str] = typer.Option(None, help="dds (default), sds (with a preservation term) or in2n (iterative dataset update)."),
    region: Optional[str] = typer.Option(None, "--mask", "--region",
                                         help="What may change: box:cx,cy,cz,hx,hy,hz or sphere:cx,cy,cz,r in the "
                                         "scene's coordinates, or view:IMAGE_NAME:MASK.png (a mask drawn on one "
                                         "captured view, lifted to 3D). Default: the whole scene."),
    steps: Optional[int] = StepsOption,
    seed: Optional[int] = SeedOption,
    out: Optional[str] = OutOption,
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted edit in this directory."),
):
    """Edit a reconstructed scene with text inside a 3D region (DDS, SDS + preservation, or IN2N)."""
    from .editing.edit import edit

    if resume is None and not scene:
        raise ThreeDistillError("--scene is missing; give a t3d fit run directory or a captured-scene folder")
    run = edit(source=scene, prompt=prompt, source_prompt=source_prompt, method=method, region=region, steps=steps,
               seed=seed, out=out, overrides=ctx.args, resume=resume, log=lambda s: _console().print(s))
    typer.echo(f"run directory: {run.dir}")


def _evaluate_and_print(run_dir: Path, quiet_if_no_gt: bool = False) -> dict | None:
    from rich.console import Console
    from rich.table import Table

    from .evaluation.run_eval import evaluate_run

    try:
        metrics = evaluate_run(run_dir)
    except ThreeDistillError as err:
        if quiet_if_no_gt and "no ground truth" in str(err):
            typer.echo(str(err))
            return None
        raise
    table = Table(title=f"ground-truth evaluation: {metrics['prompt']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("silhouette_iou", "colour_error", "front_back_correct", "mesh_silhouette_iou", "mesh_chamfer",
                "mesh_volume_iou", "wall_seconds"):
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.3f}")
    Console().print(table)
    return metrics


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory written by t3d generate."),
    fmt: str = typer.Option("glb", "--format", help="glb or obj (textured mesh, any run); ply (3DGS point_cloud.ply), "
                                                    "splat or spz (Gaussians runs)."),
    faces: int = typer.Option(20000, help="Mesh face budget (decimation target)."),
    texture_size: int = typer.Option(1024, help="Baked texture size, a power of two; 0 = per-vertex colours."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default RUN_DIR/export/...)."),
):
    """Write a run's result for other tools: a textured glb/obj mesh, or the Gaussians as .ply/.splat/.spz."""
    from .export.run_export import export_run

    typer.echo(f"wrote {export_run(run_dir, fmt, out, faces, texture_size, log=lambda s: _console().print(s))}")


@app.command("eval")
def eval_cmd(run_dir: Path = typer.Argument(..., help="A run directory written by t3d generate.")):
    """Compare a run with the toy world's ground truth at 16 fixed views; writes metrics.json."""
    _evaluate_and_print(run_dir)


def _bench_representations(representation: str, seeds: int, jobs: int) -> list[str]:
    """The representations a benchmark runs (one-line errors for bad --representation, --seeds or --jobs)."""
    from .runs import REPRESENTATIONS

    reps = ["gaussians", "nerf"] if representation == "both" else [r.strip() for r in representation.split(",")]
    if any(rep not in REPRESENTATIONS.names() for rep in reps):
        raise ThreeDistillError(f"--representation must be both (gaussians and nerf) or a comma-separated list of "
                                f"{', '.join(REPRESENTATIONS.names())}; got {representation!r}")
    for name, value in (("--seeds", seeds), ("--jobs", jobs)):
        if value < 1:
            raise ThreeDistillError(f"{name} must be positive, got {value}")
    return reps


@bench_app.command("fidelity", context_settings=EXTRA_ARGS)
def bench_fidelity(
    ctx: typer.Context,
    prompts: Optional[Path] = typer.Option(None, help="Prompt file, one per line (default configs/bench/fidelity_prompts.txt)."),
    seeds: int = typer.Option(3, help="Seeds per prompt."),
    representation: str = typer.Option("both", help="both (gaussians and nerf), or a comma-separated list of representations."),
    steps: Optional[int] = typer.Option(None, help="Override the configs' step count."),
    out: Path = typer.Option(Path("docs/benchmarks/fidelity.md"), "--out", help="Markdown table to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-fidelity"), help="Where the runs go."),
    jobs: int = typer.Option(1, help="Runs at once (worker processes sharing the cores; results do not change)."),
):
    """Text-to-3D quality against ground truth over a prompt set: IoU, colour error, Janus, wall time."""
    import os
    import platform

    from .evaluation.fidelity_bench import markdown_table, read_prompts, run_fidelity

    reps = _bench_representations(representation, seeds, jobs)
    extra = " " + " ".join(ctx.args) if ctx.args else ""
    header = (f"# Text-to-3D fidelity against toy-world ground truth\n\n`t3d bench fidelity --seeds {seeds} "
              f"--representation {representation} --jobs {jobs}{extra}` on {platform.machine()} ({os.cpu_count()} "
              f"cores), {_prior_phrase(ctx.args)}, each representation's default guidance (configs/generate/) unless "
              f"overridden." + (f" {jobs} runs shared the cores at a time, so the wall time of a run is longer than "
                                f"alone." if jobs > 1 else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    write = lambda rows: out.write_text(markdown_table(rows, header))  # noqa: E731  (rewritten after every run)
    write(run_fidelity(read_prompts(prompts), seeds, reps, runs_dir, ctx.args, steps, log=typer.echo, on_row=write,
                       jobs=jobs))  # once more in task order (parallel runs finish in any order)
    typer.echo(f"wrote {out}")


@bench_app.command("guidance", context_settings=EXTRA_ARGS)
def bench_guidance(
    ctx: typer.Context,
    methods: str = typer.Option("all", help="Comma-separated guidance methods, or all."),
    prompts: Optional[Path] = typer.Option(None, help="Prompt file, one per line (default configs/bench/guidance_prompts.txt)."),
    seeds: int = typer.Option(3, help="Seeds per prompt."),
    representation: str = typer.Option("both", help="both (gaussians and nerf), or a comma-separated list of representations."),
    steps: int = typer.Option(150, help="Steps per run; the configs' 300-step schedules are stretched to fit."),
    quick: bool = typer.Option(False, "--quick", help="Smoke-size run: 2 prompts (unless --prompts), 1 seed, 100 steps."),
    out: Path = typer.Option(Path("docs/benchmarks/guidance.md"), "--out", help="Markdown report to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-guidance"), help="Where the runs go."),
    jobs: int = typer.Option(2, help="Runs at once (fresh worker processes sharing the cores; results do not change)."),
    resume: bool = typer.Option(False, "--resume", help="Read finished runs of the same tasks back from --runs-dir."),
):
    """Every guidance method against ground truth: IoU, colour, saturation, Janus rate, seed diversity, cost."""
    import os
    import platform

    from .evaluation.fidelity_bench import read_prompts, run_fidelity
    from .config import packaged_config
    from .evaluation.guidance_bench import QUICK_PROMPTS, QUICK_STEPS, kept_reading, markdown_report
    from .guidance import GUIDANCE

    names = GUIDANCE.names() if methods == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    for name in names:
        GUIDANCE.get(name)  # one-line error for an unknown method, before anything runs
    reps = _bench_representations(representation, seeds, jobs)
    prompt_list = read_prompts(prompts or packaged_config("bench", "guidance_prompts.txt"))
    if quick:
        prompt_list, seeds, steps = (prompt_list if prompts else QUICK_PROMPTS), 1, QUICK_STEPS
    if steps < 1:
        raise ThreeDistillError(f"--steps must be positive, got {steps}")
    extra = " " + " ".join(ctx.args) if ctx.args else ""
    command = (f"t3d bench guidance{' --quick' if quick else ''} --seeds {seeds} --representation {representation}"
               f" --steps {steps} --jobs {jobs}{extra}")
    header = (f"# Guidance methods against toy-world ground truth\n\n`{command}` on {platform.machine()} "
              f"({os.cpu_count()} cores), {_prior_phrase(ctx.args)}, each method with its defaults "
              f"(threedistill/guidance/<method>.py, configs/guidance/<method>.yaml) on the representation's config, "
              f"its 300-step schedules stretched to {steps} steps (`trainer.schedule_steps=300`), no export. "
              f"{jobs} run(s) at a time in fresh processes: step and wall times are of shared cores.")
    reading = kept_reading(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write = lambda rows: out.write_text(markdown_report(rows, header, reading))  # noqa: E731
    # Bench runs skip the export; the schedules of the 300-step configs are stretched to --steps (README "Generate").
    overrides = ["export=[]", "trainer.schedule_steps=300", *ctx.args]
    write(run_fidelity(prompt_list, seeds, reps, runs_dir, overrides, steps, log=typer.echo, on_row=write,
                       jobs=jobs, methods=names, reuse=resume))  # once more in task order
    typer.echo(f"wrote {out}")


@bench_app.command("stages", context_settings=EXTRA_ARGS)
def bench_stages(
    ctx: typer.Context,
    configs: str = typer.Option("nerf-then-mesh,gaussians-then-mesh",
                                help="Comma-separated staged configs: names under configs/generate/ or YAML paths."),
    prompts: Optional[Path] = typer.Option(None, help="Prompt file, one per line (default configs/bench/stage_prompts.txt)."),
    seeds: int = typer.Option(1, help="Seeds per prompt."),
    out: Path = typer.Option(Path("docs/benchmarks/stages.md"), "--out", help="Markdown table to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-stages"), help="Where the runs go."),
    resume: bool = typer.Option(False, "--resume", help="Read finished runs of the same tasks back from --runs-dir."),
    jobs: int = typer.Option(1, help="Runs at once, in worker processes sharing the cores (results do not change)."),
):
    """Coarse-to-fine runs: the mesh stage's export against exporting the coarse stage directly (Chamfer, volume
    IoU, silhouette IoU, colour error)."""
    import os
    import platform

    from .config import packaged_config
    from .evaluation.fidelity_bench import read_prompts
    from .evaluation.stage_bench import markdown_table, run_stage_bench

    paths = [_config_path(name.strip()) for name in configs.split(",") if name.strip()]
    for path in paths:  # before anything runs
        from omegaconf import OmegaConf

        if len(OmegaConf.load(path).get("stages") or []) < 2:
            raise ThreeDistillError(f"{path} has fewer than two stages; `t3d bench stages` compares a coarse stage with "
                                    f"the last one (e.g. --configs nerf-then-mesh)")
    if seeds < 1 or jobs < 1:
        raise ThreeDistillError(f"--seeds and --jobs must be positive, got {seeds} and {jobs}")
    prompt_list = read_prompts(prompts or packaged_config("bench", "stage_prompts.txt"))
    extra = " " + " ".join(ctx.args) if ctx.args else ""
    header = (f"# Coarse-to-fine runs against toy-world ground truth\n\n`t3d bench stages --configs {configs} --seeds "
              f"{seeds} --jobs {jobs}{extra}` on {platform.machine()} ({os.cpu_count()} cores), "
              f"{_prior_phrase(ctx.args)} unless a stage names another. "
              f"coarse: the first stage's result exported as a mesh (glb); final: the last stage's export. Chamfer is "
              f"divided by the object's bounding-box diagonal; lower is better."
              + (f" {jobs} runs shared the cores at a time, so a run's wall time is longer than alone." if jobs > 1 else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    write = lambda rows: out.write_text(markdown_table(rows, header))  # noqa: E731
    write(run_stage_bench(paths, prompt_list, seeds, runs_dir, list(ctx.args), log=typer.echo, reuse=resume,
                          jobs=jobs, on_row=write))  # once more in task order (parallel runs finish in any order)
    typer.echo(f"wrote {out}")


def _config_path(name: str) -> Path:
    """A config given by name (configs/generate/NAME.yaml) or path, or a one-line error listing the shipped ones."""
    from .config import packaged_config

    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ThreeDistillError(f"config file not found: {path}")
        return path
    shipped = packaged_config("generate", f"{name}.yaml")
    if not shipped.is_file():
        known = sorted(p.stem for p in shipped.parent.glob("*.yaml"))
        raise ThreeDistillError(f"unknown config {name!r}; shipped: {', '.join(known)} (or give a YAML path)")
    return shipped


@bench_app.command("edit", context_settings=EXTRA_ARGS)
def bench_edit(
    ctx: typer.Context,
    methods: str = typer.Option("dds,sds,in2n", help="Comma-separated edit methods."),
    quick: bool = typer.Option(False, "--quick", help="Smoke-size run: 2 edits, 100 fit steps, 60 edit steps."),
    fit_steps: Optional[int] = typer.Option(None, help="Override the fit config's steps."),
    steps: Optional[int] = typer.Option(None, help="Override the edit configs' steps."),
    seed: int = typer.Option(0, help="Edit seed."),
    out: Path = typer.Option(Path("docs/benchmarks/editing.md"), "--out", help="Markdown report to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-edit"), help="Where scenes, fits and edits go (reused)."),
):
    """Text edits of toy captured scenes: reconstruction PSNR, edit success against the edited ground truth,
    preservation PSNR of the rest of the scene, per method."""
    import os
    import platform

    from .evaluation.edit_bench import check_methods, markdown_report, run_edit_bench
    from .toyworld.scene import default_edits

    names = [m.strip() for m in methods.split(",") if m.strip()]
    check_methods(names)
    edits = default_edits()[:2] if quick else default_edits()
    fit_steps, steps = (fit_steps or 100, steps or 60) if quick else (fit_steps, steps)
    extra = " " + " ".join(ctx.args) if ctx.args else ""
    header = (f"# Editing captured toy scenes\n\n`t3d bench edit --methods {methods}{' --quick' if quick else ''}{extra}` "
              f"on {platform.machine()} ({os.cpu_count()} cores), {_prior_phrase(ctx.args)}, edit seed {seed}. Scenes are "
              f"written by the toy world (96x72 views, every 8th held out) and fitted once with `t3d fit`; each edit "
              f"is scored on the held-out views (see threedistill/evaluation/edit_bench.py).")
    out.parent.mkdir(parents=True, exist_ok=True)
    write = lambda result: out.write_text(markdown_report(result, header))  # noqa: E731
    write(run_edit_bench(names, edits, runs_dir, fit_steps, steps, seed, ctx.args, log=typer.echo, on_row=write))
    typer.echo(f"wrote {out}")


@bench_app.command("perf")
def bench_perf(
    repeats: int = typer.Option(5, help="Timed repetitions per measurement (the median is reported)."),
    generate: bool = typer.Option(True, "--generate/--no-generate", help="Also time the default generate end to end."),
    target: float = typer.Option(0.8, help="Silhouette IoU the generate timing waits for."),
    out: Path = typer.Option(Path("docs/benchmarks/performance.md"), "--out", help="Markdown report to write."),
):
    """CPU speed, native kernels vs PyTorch: rasterizer, hash grid, and the default generate (time, step split, memory)."""
    import os
    import platform
    import tempfile

    import torch

    from . import native
    from .evaluation.perf_bench import command_peak_memory, generate_row, hash_rows, markdown_report, raster_rows

    if repeats < 1:
        raise ThreeDistillError(f"--repeats must be positive, got {repeats}")
    if native.kernels() is None:
        raise ThreeDistillError("the native kernels are unavailable here (no C++ compiler, or THREEDISTILL_NATIVE=torch); "
                                "nothing to compare")
    header = (f"# CPU performance: native kernels vs the PyTorch path\n\n`t3d bench perf --repeats {repeats}` on "
              f"{platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), torch "
              f"{torch.__version__}; medians of {repeats} runs after a warm-up.")
    raster = raster_rows(repeats, typer.echo)
    hashing = hash_rows(repeats, typer.echo)
    runs, command = [], None
    if generate:
        runs = [generate_row(mode, "a red cone", target, 25, typer.echo) for mode in ("native", "torch")]
        with tempfile.TemporaryDirectory() as tmp:
            command = command_peak_memory("a red cone", Path(tmp))
        typer.echo(f"whole command: {command['wall_seconds']:.1f} s, peak {command['peak_mb']:.0f} MB")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown_report(header, raster, hashing, runs, command, target))
    typer.echo(f"wrote {out}")


@bench_app.command("export")
def bench_export(
    runs_dir: Path = typer.Option(Path("outputs/bench-fidelity"), help="Directory holding finished runs."),
    faces: int = typer.Option(20000, help="Mesh face budget."),
    texture_size: int = typer.Option(1024, help="Baked texture size (0 = per-vertex colours)."),
    out: Path = typer.Option(Path("docs/benchmarks/export.md"), "--out", help="Markdown table to write."),
):
    """Mesh export quality and speed: every finished run exported as glb and compared with ground truth."""
    import os
    import platform

    from .evaluation.export_bench import finished_runs, markdown_table, run_export_bench
    from .export.mesh import check_budget

    check_budget(faces, texture_size)
    runs = finished_runs(runs_dir)
    header = (f"# Mesh export against toy-world ground truth\n\n`t3d bench export --runs-dir {runs_dir} --faces {faces} "
              f"--texture-size {texture_size}` on {platform.machine()} ({os.cpu_count()} cores): {len(runs)} runs. "
              "render IoU: the representation's own renders; mesh IoU: the exported glb, rendered.")
    out.parent.mkdir(parents=True, exist_ok=True)
    run_export_bench(runs, faces, texture_size, log=typer.echo, on_row=lambda rows: out.write_text(markdown_table(rows, header)))
    typer.echo(f"wrote {out}")


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run the app and turn user errors into one line on stderr with exit code 2."""
    try:
        app(args=argv, standalone_mode=True)
    except ThreeDistillError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
