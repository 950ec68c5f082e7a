"""`t3d bench ...`: the benchmarks (`threedistill.bench`); each writes a markdown report, rewritten after every run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import ThreeDistillError
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
)

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: quality against ground truth, speed.")
app.add_typer(bench_app, name="bench")

BENCH_OVERRIDES = "prior=toyworld-latent trainer.batch_size=2"  # the example in the help of benchmarks taking overrides
REPRESENTATION_HELP = "both (gaussians and nerf), or a comma-separated list of {representations}."


@command(bench_app, "fidelity", overrides=f"t3d bench fidelity --seeds 1 {BENCH_OVERRIDES}")
def bench_fidelity(
    ctx: typer.Context,
    prompts: Optional[Path] = typer.Option(
        None, help="Prompt file, one per line (default configs/bench/fidelity_prompts.txt)."
    ),
    seeds: int = typer.Option(3, help="Seeds per prompt."),
    representation: str = typer.Option("both", help=REPRESENTATION_HELP),
    steps: Optional[int] = typer.Option(None, help="Override the configs' step count."),
    out: Path = typer.Option(Path("docs/benchmarks/fidelity.md"), "--out", help="Markdown table to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-fidelity"), help="Where the runs go."),
    engine: str = EngineOption,
    jobs: int = JobsOption,
    address: Optional[str] = AddressOption,
    cpus_per_run: Optional[float] = CpusPerRunOption,
    gpus_per_run: float = GpusPerRunOption,
    max_retries: int = MaxRetriesOption,
):
    """Text-to-3D quality against ground truth over a prompt set: IoU, colour error, Janus, wall time."""
    from ..bench.fidelity_bench import fidelity_header, markdown_table, parse_representations, run_fidelity
    from ..bench.harness import read_prompts, report_writer

    engine_cfg = engine_config(engine, jobs, address, cpus_per_run, gpus_per_run, max_retries, runs_dir)
    reps = parse_representations(representation)
    header = fidelity_header(seeds, representation, engine_cfg, ctx.args)
    write = report_writer(out, lambda rows: markdown_table(rows, header))
    write(
        run_fidelity(
            read_prompts(prompts),
            seeds,
            reps,
            runs_dir,
            ctx.args,
            steps,
            log=typer.echo,
            on_row=write,
            engine=engine_cfg,
        )  # fmt: skip
    )  # once more in task order (parallel runs finish in any order)
    typer.echo(f"wrote {out}")


@command(bench_app, "guidance", overrides=f"t3d bench guidance --methods sds,vsd {BENCH_OVERRIDES}")
def bench_guidance(
    ctx: typer.Context,
    methods: str = typer.Option("all", help="Comma-separated guidance methods ({guidance}), or all."),
    prompts: Optional[Path] = typer.Option(
        None, help="Prompt file, one per line (default configs/bench/guidance_prompts.txt)."
    ),
    seeds: int = typer.Option(3, help="Seeds per prompt."),
    representation: str = typer.Option("both", help=REPRESENTATION_HELP),
    steps: int = typer.Option(150, help="Steps per run; the configs' 300-step schedules are stretched to fit."),
    quick: bool = typer.Option(
        False, "--quick", help="Smoke-size run: 2 prompts (unless --prompts), 1 seed, 100 steps."
    ),
    out: Path = typer.Option(Path("docs/benchmarks/guidance.md"), "--out", help="Markdown report to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-guidance"), help="Where the runs go."),
    resume: bool = typer.Option(False, "--resume", help="Read finished runs of the same tasks back from --runs-dir."),
    rewards: str = typer.Option(
        "none",
        help="Comma-separated reward terms to run every method with (none, or {rewards}); one row each. A reward "
        "that needs a model takes it from reward.model=DIR.",
    ),
    engine: str = EngineOption,
    jobs: int = JobsOption,
    address: Optional[str] = AddressOption,
    cpus_per_run: Optional[float] = CpusPerRunOption,
    gpus_per_run: float = GpusPerRunOption,
    max_retries: int = MaxRetriesOption,
):
    """Every guidance method against ground truth: IoU, colour, saturation, Janus rate, seed diversity, cost."""
    from ..bench.fidelity_bench import parse_representations
    from ..bench.guidance_bench import (
        QUICK_PROMPTS,
        QUICK_STEPS,
        guidance_header,
        kept_reading,
        markdown_report,
        parse_methods,
        parse_rewards,
        run_guidance_bench,
    )
    from ..bench.harness import read_prompts, report_writer

    engine_cfg = engine_config(engine, jobs, address, cpus_per_run, gpus_per_run, max_retries, runs_dir)
    names = parse_methods(methods)
    reward_names = parse_rewards(rewards, ctx.args)
    reps = parse_representations(representation)
    prompt_list = read_prompts(prompts, "guidance_prompts.txt")
    if quick:
        prompt_list, seeds, steps = (prompt_list if prompts else QUICK_PROMPTS), 1, QUICK_STEPS
    header = guidance_header(seeds, representation, steps, engine_cfg, quick, ctx.args, reward_names, methods, prompts)
    reading = kept_reading(out)
    write = report_writer(out, lambda rows: markdown_report(rows, header, reading))
    write(
        run_guidance_bench(
            names,
            prompt_list,
            seeds,
            reps,
            runs_dir,
            ctx.args,
            steps,
            log=typer.echo,
            on_row=write,
            engine=engine_cfg,
            reuse=resume,
            rewards=reward_names,
        )
    )  # once more in task order
    typer.echo(f"wrote {out}")


@command(bench_app, "stages", overrides=f"t3d bench stages --configs nerf-then-mesh {BENCH_OVERRIDES}")
def bench_stages(
    ctx: typer.Context,
    configs: str = typer.Option(
        "nerf-then-mesh,gaussians-then-mesh",
        help="Comma-separated staged configs: shipped names ({staged_configs}) or YAML paths.",
    ),
    prompts: Optional[Path] = typer.Option(
        None, help="Prompt file, one per line (default configs/bench/stage_prompts.txt)."
    ),
    seeds: int = typer.Option(1, help="Seeds per prompt."),
    out: Path = typer.Option(Path("docs/benchmarks/stages.md"), "--out", help="Markdown table to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-stages"), help="Where the runs go."),
    resume: bool = typer.Option(False, "--resume", help="Read finished runs of the same tasks back from --runs-dir."),
    engine: str = EngineOption,
    jobs: int = JobsOption,
    address: Optional[str] = AddressOption,
    cpus_per_run: Optional[float] = CpusPerRunOption,
    gpus_per_run: float = GpusPerRunOption,
    max_retries: int = MaxRetriesOption,
):
    """Coarse-to-fine runs: the mesh stage's export against exporting the coarse stage directly (Chamfer, volume
    IoU, silhouette IoU, colour error)."""
    from ..bench.harness import read_prompts, report_writer
    from ..bench.stage_bench import markdown_table, run_stage_bench, stage_header

    paths = [config_path(name.strip()) for name in configs.split(",") if name.strip()]
    prompt_list = read_prompts(prompts, "stage_prompts.txt")
    engine_cfg = engine_config(engine, jobs, address, cpus_per_run, gpus_per_run, max_retries, runs_dir)
    header = stage_header(configs, seeds, engine_cfg, ctx.args)
    write = report_writer(out, lambda rows: markdown_table(rows, header))
    write(
        run_stage_bench(
            paths,
            prompt_list,
            seeds,
            runs_dir,
            list(ctx.args),
            log=typer.echo,
            reuse=resume,
            engine=engine_cfg,
            on_row=write,
        )
    )  # once more in task order (parallel runs finish in any order)
    typer.echo(f"wrote {out}")


@command(bench_app, "engines", overrides=f"t3d bench engines --methods sds {BENCH_OVERRIDES}")
def bench_engines(
    ctx: typer.Context,
    methods: str = typer.Option("sds,nfsd", help="Comma-separated guidance methods ({guidance}), or all."),
    representation: str = typer.Option("both", help=REPRESENTATION_HELP),
    steps: int = typer.Option(100, help="Steps per run (the quick set's)."),
    jobs: int = typer.Option(2, help="Runs at once on Ray."),
    out: Path = typer.Option(Path("docs/benchmarks/engines.md"), "--out", help="Markdown report to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-engines"), help="Where the runs go (a new folder per call)."),
):
    """The guidance benchmark's quick set on the local engine and on a local Ray instance: wall time, overhead
    per run, agreement, and what a 100-prompt batch would cost on N machines."""
    import time

    from ..bench.engine_bench import markdown_report, run_engine_bench
    from ..bench.fidelity_bench import parse_representations
    from ..bench.guidance_bench import parse_methods
    from ..engines import EngineConfig

    EngineConfig("ray", jobs=jobs)  # one-line errors (and no Ray) before anything runs
    from ..engines.ray_engine import import_ray

    import_ray()
    names, reps = parse_methods(methods), parse_representations(representation)
    runs_dir = runs_dir / time.strftime("%Y%m%d-%H%M%S")  # both engines run every task afresh
    results = run_engine_bench(names, reps, runs_dir, jobs, ctx.args, steps=steps, log=typer.echo)
    command = f"t3d bench engines --methods {methods} --representation {representation} --steps {steps} --jobs {jobs}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown_report(results, command, ctx.args))
    typer.echo(f"wrote {out}")


@command(bench_app, "reward", overrides=f"t3d bench reward --quick {BENCH_OVERRIDES}")
def bench_reward(
    ctx: typer.Context,
    variants: str = typer.Option(
        "none,visual-auto,visual-gt",
        help="Comma-separated: none, visual-auto, visual-gt (an oracle), clip, vlm, critic, critic+visual-auto, "
        "orient (the orientation check at the last step), orient-reward (its judge as a reward; measured worse).",
    ),
    objects: str = typer.Option("snowman,duck,house,robot", help="Comma-separated toy objects with a front."),
    colours: str = typer.Option("red,blue,green", help="Comma-separated colours of each object."),
    seeds: int = typer.Option(3, help="Seeds per object and colour."),
    methods: str = typer.Option("sds,nfsd", help="Comma-separated guidance methods ({guidance})."),
    representation: str = typer.Option("both", help=REPRESENTATION_HELP),
    steps: Optional[int] = typer.Option(None, help="Override the configs' step count."),
    quick: bool = typer.Option(False, "--quick", help="Smoke-size run: red only, 1 seed, sds on gaussians."),
    clip_model: Optional[str] = typer.Option(None, help="A local CLIP directory (variant clip)."),
    vlm_model: Optional[str] = typer.Option(None, help="A local Qwen2-VL directory (variant vlm)."),
    out: Path = typer.Option(Path("docs/benchmarks/reward.md"), "--out", help="Markdown report to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-reward"), help="Where the runs go."),
    resume: bool = typer.Option(False, "--resume", help="Read finished runs of the same tasks back from --runs-dir."),
    engine: str = EngineOption,
    jobs: int = JobsOption,
    address: Optional[str] = AddressOption,
    cpus_per_run: Optional[float] = CpusPerRunOption,
    gpus_per_run: float = GpusPerRunOption,
    max_retries: int = MaxRetriesOption,
):
    """The Janus failure over the toy objects with a front, with and without reward guidance and a visual
    prompt: IoU, colour error, Janus rate, s/step (scored against ground truth)."""
    from ..bench.fidelity_bench import parse_representations
    from ..bench.guidance_bench import parse_methods
    from ..bench.harness import report_writer
    from ..bench.reward_bench import FRONTED, markdown_report, parse_variants, run_reward_bench
    from ..toyworld.catalogue import parse_subject

    engine_cfg = engine_config(engine, jobs, address, cpus_per_run, gpus_per_run, max_retries, runs_dir)
    models = {"clip": clip_model, "vlm": vlm_model}
    names = parse_variants(variants, models)
    if quick:
        colours, seeds, methods, representation = "red", 1, "sds", "gaussians"
    subjects = [f"{c.strip()} {o.strip()}" for o in objects.split(",") for c in colours.split(",")]
    for subject in subjects:
        if parse_subject(subject)[1] not in FRONTED:
            raise ThreeDistillError(f"--objects: {subject.split()[-1]} has no front; use {', '.join(FRONTED)}")
    if seeds < 1:
        raise ThreeDistillError(f"--seeds must be positive, got {seeds}")
    command = (
        f"t3d bench reward --variants {variants} --objects {objects} --colours {colours} --seeds {seeds} "
        f"--methods {methods} --representation {representation}" + (f" --steps {steps}" if steps else "")
    )
    write = report_writer(out, lambda rows: markdown_report(rows, command, engine_cfg, ctx.args))
    rows = run_reward_bench(
        names, subjects, seeds, parse_representations(representation), parse_methods(methods), runs_dir, ctx.args,
        steps, models, engine_cfg, log=typer.echo, on_row=write, reuse=resume,
    )  # fmt: skip
    write(rows)
    typer.echo(f"wrote {out}")


@command(bench_app, "edit", overrides="t3d bench edit --quick trainer.resolution=48 lambda_preserve=0.1")
def bench_edit(
    ctx: typer.Context,
    methods: str = typer.Option("dds,sds,in2n", help="Comma-separated edit methods ({edit_methods})."),
    quick: bool = typer.Option(False, "--quick", help="Smoke-size run: 2 edits, 100 fit steps, 60 edit steps."),
    fit_steps: Optional[int] = typer.Option(None, help="Override the fit config's steps."),
    steps: Optional[int] = typer.Option(None, help="Override the edit configs' steps."),
    seed: int = typer.Option(0, help="Edit seed."),
    out: Path = typer.Option(Path("docs/benchmarks/editing.md"), "--out", help="Markdown report to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-edit"), help="Where scenes, fits and edits go (reused)."),
):
    """Text edits of toy captured scenes: reconstruction PSNR, edit success against the edited ground truth,
    preservation PSNR of the rest of the scene, per method."""
    from ..bench.edit_bench import edit_header, markdown_report, run_edit_bench
    from ..bench.harness import report_writer
    from ..toyworld.scene import default_edits

    names = [m.strip() for m in methods.split(",") if m.strip()]
    edits = default_edits()[:2] if quick else default_edits()
    fit_steps, steps = (fit_steps or 100, steps or 60) if quick else (fit_steps, steps)
    header = edit_header(methods, seed, quick, ctx.args)
    write = report_writer(out, lambda result: markdown_report(result, header))
    write(run_edit_bench(names, edits, runs_dir, fit_steps, steps, seed, ctx.args, log=typer.echo, on_row=write))
    typer.echo(f"wrote {out}")


@command(bench_app, "fit", overrides="t3d bench fit --scene data/mouse --toy three trainer.steps=2000")
def bench_fit(
    ctx: typer.Context,
    scene: list[str] = typer.Option([], "--scene", help="A captured scene folder to fit (repeatable)."),
    toy: str = typer.Option("three", help="Comma-separated toy captured scenes to fit too ('' for none)."),
    representations: str = typer.Option("gaussians", help="Comma-separated: {fit_representations}."),
    steps: Optional[int] = typer.Option(None, help="Override the fit config's steps."),
    seed: int = typer.Option(0, help="Fit seed (the first one, with --seeds)."),
    seeds: int = typer.Option(1, help="Fit each capture with this many seeds (seed, seed+1, ...) and report the mean."),
    out: Path = typer.Option(Path("docs/benchmarks/fit.md"), "--out", help="Markdown report to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-fit"), help="Where toy scenes and fits go."),
):
    """t3d fit on real and toy captures: held-out PSNR / SSIM (masked too), PSNR over steps, Gaussians, time, peak
    memory, object presence, side-by-side images."""
    from ..bench.fit_bench import fit_header, markdown_report, run_fit_bench, toy_capture
    from ..bench.harness import report_writer
    from ..errors import ConfigError
    from ..workflows.fit import FIT_REPRESENTATIONS

    if seeds < 1:
        raise ConfigError(f"--seeds must be 1 or more, got {seeds}")
    kinds = [r.strip() for r in representations.split(",") if r.strip()]
    unknown = [r for r in kinds if r not in FIT_REPRESENTATIONS]
    if unknown or not kinds:
        raise ConfigError(
            f"--representations: expected some of {', '.join(FIT_REPRESENTATIONS)}, got {representations!r}"
        )
    captures = []
    for folder in scene:
        if not Path(folder).is_dir():
            raise ConfigError(f"--scene {folder}: no such folder")
        captures.append((Path(folder).resolve().name, Path(folder)))
    captures += [(name, toy_capture(name, runs_dir, log=typer.echo)) for name in toy.split(",") if name.strip()]
    if not captures:
        raise ConfigError("nothing to fit: give --scene FOLDER and/or --toy NAME")
    image_dir = out.parent / out.stem
    command = "t3d bench fit" + "".join(f" --scene {s}" for s in scene) + f" --toy {toy!r}"
    command += f" --representations {representations}" + (f" --seed {seed} --seeds {seeds}" if seeds > 1 else "")
    header = fit_header(command, ctx.args)
    write = report_writer(out, lambda rows: markdown_report(rows, header, out.parent))
    rows = run_fit_bench(captures, kinds, runs_dir, image_dir, steps, seed, ctx.args, typer.echo, write, seeds)
    write(rows)
    typer.echo(f"wrote {out}")


@command(bench_app, "lift", overrides="t3d bench lift --scene tests/data/skull_capture gaussians.sh_degree=1")
def bench_lift(
    ctx: typer.Context,
    scene: Path = typer.Option(..., "--scene", help="A captured scene of an object on a plain background."),
    run: Optional[Path] = typer.Option(None, "--run", help="A finished `t3d fit` run of the scene (default: fit it)."),
    steps: int = typer.Option(600, help="Steps of the fit (without --run)."),
    max_side: int = typer.Option(200, help="Longer side of the fit's views in pixels (without --run)."),
    views: int = typer.Option(7, help="Training views whose object mask is lifted, one at a time."),
    out: Path = typer.Option(Path("docs/benchmarks/lift_real.md"), "--out", help="Markdown report to write."),
    runs_dir: Path = typer.Option(Path("outputs/bench-lift"), help="Where the fit and the masks go."),
):
    """Mask lifting on a real capture: each view's object mask lifted to Gaussians, the selection rendered from the
    held-out views and scored against their object masks (precision, coverage)."""
    from ..bench.harness import report_header, report_writer
    from ..bench.lift_bench import markdown_report, measure_lifting
    from ..errors import ConfigError
    from ..workflows.fit import fit

    if not scene.is_dir():
        raise ConfigError(f"--scene {scene}: give a capture folder (photos with poses) to draw masks on")
    if views < 1 or steps < 1 or max_side < 8:
        raise ConfigError(
            f"--views, --steps and --max-side must be at least 1, 1 and 8; got {views}, {steps}, {max_side}"
        )
    if run is not None and not (run / "config.yaml").is_file():
        raise ConfigError(f"--run {run}: not a run directory (no config.yaml)")
    start, given = time.time(), run is not None
    if run is None:
        run = fit(
            str(scene), steps=steps, seed=0, out=str(runs_dir / "fits"), overrides=list(ctx.args),
            progress=False, log=lambda s: None, max_side=max_side,
        ).dir  # fmt: skip
        fit_line = f"Fit: `t3d fit --scene {scene} --steps {steps} --max-side {max_side}`, {time.time() - start:.0f} s."
    else:
        fit_line = f"Fit: the finished run {run}."
    command = f"t3d bench lift --scene {scene} --views {views}" + (f" --run {run}" if given else "")
    header = report_header("Mask lifting on a real capture (`t3d bench lift`)", command, ctx.args) + (
        ". Each mask view's object mask is lifted alone; the selection is scored on the held-out views "
        "(threedistill/bench/lift_bench.py)."
    )
    picture = out.parent / f"{out.stem}.png"
    rows = measure_lifting(scene, run, views, runs_dir / "masks", picture=picture, log=typer.echo)
    report_writer(out, lambda r: markdown_report(r, header, fit_line, picture.name))(rows)
    typer.echo(f"wrote {out}")


@command(bench_app, "perf")
def bench_perf(
    repeats: int = typer.Option(5, help="Timed repetitions per measurement (the median is reported)."),
    generate: bool = typer.Option(True, "--generate/--no-generate", help="Also time the default generate end to end."),
    target: float = typer.Option(0.8, help="Silhouette IoU the generate timing waits for."),
    out: Path = typer.Option(Path("docs/benchmarks/performance.md"), "--out", help="Markdown report to write."),
    fit_run: Optional[Path] = typer.Option(
        None, "--fit-run", help="A t3d fit run of Gaussians: also time its renders at its training views."
    ),
):
    """CPU speed, native kernels vs PyTorch: rasterizer, hash grid, and the default generate (time, step split,
    memory)."""
    from ..bench.harness import report_writer
    from ..bench.perf_bench import markdown_report, perf_header, run_perf_bench

    header = perf_header(repeats)
    report_writer(out, lambda result: markdown_report(header, **result))(
        run_perf_bench(repeats, generate, target, log=typer.echo, fit_run=fit_run)
    )
    typer.echo(f"wrote {out}")


@command(bench_app, "export")
def bench_export(
    runs_dir: Path = typer.Option(Path("outputs/bench-fidelity"), help="Directory holding finished runs."),
    faces: int = typer.Option(20000, help="Mesh face budget."),
    texture_size: int = typer.Option(1024, help="Baked texture size (0 = per-vertex colours)."),
    out: Path = typer.Option(Path("docs/benchmarks/export.md"), "--out", help="Markdown table to write."),
):
    """Mesh export quality and speed: every finished run exported as glb and compared with ground truth."""
    from ..bench.export_bench import export_header, finished_runs, markdown_table, run_export_bench
    from ..bench.harness import report_writer

    runs = finished_runs(runs_dir)
    header = export_header(runs_dir, faces, texture_size, len(runs))
    run_export_bench(
        runs, faces, texture_size, log=typer.echo, on_row=report_writer(out, lambda rows: markdown_table(rows, header))
    )
    typer.echo(f"wrote {out}")


@command(bench_app, "fuzz")
def bench_fuzz(
    jobs: int = typer.Option(2, help="Cases run at once (each is its own t3d process)."),
    only: Optional[str] = typer.Option(None, help="Only the cases whose name starts with this (e.g. ply/, run/)."),
    work: Path = typer.Option(Path("outputs/bench-fuzz"), help="Folder for the fixtures and each case's files."),
    out: Path = typer.Option(Path("docs/benchmarks/hardening.md"), "--out", help="Markdown report to write."),
):
    """Bad input, as a careless or hostile user gives it: every case of the corpus (corrupted splat files, scene
    files, COLMAP models, configs, options, output paths, damaged runs) as its own process, sorted into clean
    one-line errors, correct results and failures (tracebacks, crashes, hangs, garbage accepted)."""
    from ..bench.fuzz_bench import fuzz_bench, markdown_report

    if jobs < 1:
        raise ThreeDistillError(f"--jobs must be at least 1, got {jobs}")
    outcomes = fuzz_bench(work, jobs=jobs, only=only, log=typer.echo)
    if not outcomes:
        raise ThreeDistillError(f"no fuzz case name starts with {only!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown_report(outcomes, jobs))
    failed = [o for o in outcomes if not o.passed]
    typer.echo(f"{len(outcomes) - len(failed)} of {len(outcomes)} cases passed; wrote {out}")


@command(bench_app, "drag", overrides="t3d bench drag --quick trainer.resolution=48")
def bench_drag(
    ctx: typer.Context,
    methods: str = typer.Option(
        "none,warp,joint,dds,drag", help="Comma-separated: none, warp, joint (no prior), {edit_methods}."
    ),
    drags: Optional[str] = typer.Option(None, help="Comma-separated toy drags ({drags}); default: all."),
    quick: bool = typer.Option(False, "--quick", help="Smoke-size run: 3 drags, 1000 fit steps, 60 edit steps."),
    fit_steps: Optional[int] = typer.Option(None, help="Override the fit config's steps."),
    steps: Optional[int] = typer.Option(None, help="Override the text edits' steps."),
    drag_steps: Optional[int] = typer.Option(None, help="Override Drag-SDS's steps (configs/edit/drag.yaml)."),
    seed: int = typer.Option(0, help="Edit seed."),
    out: Path = typer.Option(Path("docs/benchmarks/drag.md"), "--out", help="Markdown report to write."),
    runs_dir: Path = typer.Option(
        Path("outputs/bench-drag"),
        help="Where drag scenes, fits and edits go (reused; a run with KEY=VALUE overrides or other steps keeps "
        "its edits apart).",
    ),
):
    """Drag edits of toy objects against the exact dragged object: handle error, object IoU, PSNR against the
    dragged capture and outside the region, time, memory; the geometric drag and text edits as baselines."""
    from ..bench.drag_bench import drag_header, markdown_report, run_drag_bench
    from ..bench.harness import report_writer
    from ..toyworld.drags import DRAGS

    names = [m.strip() for m in methods.split(",") if m.strip()]
    chosen = [d.strip() for d in drags.split(",") if d.strip()] if drags else list(DRAGS)
    if quick and not drags:
        chosen = ["robot-left_arm_up", "duck-head_raise", "house-roof_up"]
    given = (None, None) if quick else (fit_steps, steps)
    fit_steps, steps = (fit_steps or 1000, steps or 60) if quick else (fit_steps, steps)
    header = drag_header(methods, chosen, quick, ctx.args, *given)
    write = report_writer(out, lambda result: markdown_report(result, header))
    images = out.with_suffix("")  # docs/benchmarks/drag/
    result = run_drag_bench(
        names, chosen, runs_dir, images, fit_steps, steps, seed, ctx.args, typer.echo, write, drag_steps=drag_steps
    )
    write(result)
    typer.echo(f"wrote {out}")
