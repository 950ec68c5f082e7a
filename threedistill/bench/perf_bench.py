"""`t3d bench perf`: the CPU path's speed, native kernels against the PyTorch path, side by side in one run:
the Gaussian rasterizer (and a dense per-pixel reference), the hash-grid encoding, and the default
`t3d generate` end to end (time to the IoU target, where a step's time goes, peak memory)."""

from __future__ import annotations

import json
import resource
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from .. import native
from ..cameras import orbit_cameras
from ..errors import ThreeDistillError
from ..renderers.gaussian_raster import (
    ALPHA_MAX,
    ALPHA_MIN,
    covariances,
    intrinsics,
    opencv_viewmats,
    project,
    rasterize,
    sh_to_rgb,
)
from ..representations.hash_grid import HashGridEncoding
from ..utils.cache import PRIOR_CACHE_ENV
from ..utils.subprocesses import run_module
from .harness import check_positive, report_header

RASTER_SIZES = [(1000, 64), (4000, 64), (16000, 64), (1000, 128), (4000, 128), (16000, 128)]
HASH_POINTS = (65536, 262144)
HASH_GRIDS = {
    "NeRF default (12 levels, 2^15)": dict(levels=12, log2_table_size=15, max_resolution=256),
    "Instant-NGP size (16 levels, 2^19)": dict(levels=16, log2_table_size=19, max_resolution=2048),
}
DENSE_LIMIT = 20e6  # pixels x Gaussians above which the dense reference is skipped (memory)


@contextmanager
def kernel_mode(mode: str):
    previous = native.set_mode(mode)
    try:
        yield
    finally:
        native.set_mode(previous)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (and the native build, if it has not happened)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_scene(n: int, seed: int = 0):
    """Gaussians in a ball of radius ~0.5 seen from 2.8 units: a generate-like scene (scale ~2-5% of the object)."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n, 3, generator=g) * 0.3,
        0.02 + 0.03 * torch.rand(n, 3, generator=g),
        torch.randn(n, 4, generator=g),
        0.1 + 0.8 * torch.rand(n, generator=g),
        torch.randn(n, 1, 3, generator=g) * 0.5,
    ]


def dense_composite(means, scales, quats, opacities, sh, cameras, size: int) -> torch.Tensor:
    """Every pixel against every Gaussian, depth-sorted, vectorised (the obvious differentiable CPU rasterizer)."""
    covs = covariances(scales, quats)
    m2d, conics, depths, radii = project(
        means, covs, opencv_viewmats(cameras)[0], intrinsics(cameras, size, size)[0], size, size
    )
    order = torch.argsort(depths.detach())
    m2d, conics, opac = m2d[order], conics[order], opacities[order]
    rgb = sh_to_rgb(sh[order], torch.nn.functional.normalize(means[order] - cameras.positions[0], dim=-1))
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    d = torch.stack([xs, ys], -1).reshape(-1, 1, 2) - m2d[None]  # (P, N, 2)
    power = (
        -0.5 * (conics[:, 0] * d[..., 0] ** 2 + conics[:, 2] * d[..., 1] ** 2) - conics[:, 1] * d[..., 0] * d[..., 1]
    )
    alpha = (opac * torch.exp(power.clamp_max(0))).clamp_max(ALPHA_MAX) * (radii[order] > 0)
    alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
    return (alpha * trans) @ rgb


def raster_rows(repeats: int, log) -> list[dict]:
    cams = orbit_cameras([30.0], [15.0], 2.8)
    rows = []
    for n, size in RASTER_SIZES:
        scene = [t.requires_grad_() for t in random_scene(n)]

        def ours():
            rasterize(*scene, cams, size, size, geometry=False)["rgb"].sum().backward()

        row = {"gaussians": n, "size": size}
        for mode in ("torch", "native"):
            with kernel_mode(mode):
                row[mode] = median_time(ours, repeats)
        row["dense"] = (
            median_time(lambda: dense_composite(*scene, cams, size).sum().backward(), repeats)
            if n * size * size <= DENSE_LIMIT
            else None
        )
        log(
            f"rasterizer {n:6d} Gaussians {size}x{size}: "
            + "  ".join(f"{k} {row[k] * 1000:.0f} ms" for k in ("torch", "native", "dense") if row[k] is not None)
        )
        rows.append(row)
    return rows


def fit_run_rows(run_dir: Path, repeats: int, log, views: int = 6) -> list[dict]:
    """A fitted capture's Gaussians rendered (forward + backward, rgb only, as a fit step) at `views` of its
    training views, PyTorch path against native: seconds per view. Real fits have far more, larger and fainter
    Gaussians per pixel than the random scenes of `raster_rows`."""
    from ..scenes import load_scene
    from ..scenes.views import SceneViews
    from ..workflows.loading import load_run

    run = load_run(Path(run_dir))
    what = f"{run.kind} run" if run.kind != "fit" else f"fit run of {run.config.representation}"
    if run.kind != "fit" or run.config.representation != "gaussians":
        raise ThreeDistillError(f"--fit-run {run_dir} is a {what}; give a t3d fit run of Gaussians")
    data = load_scene(run.config.scene)
    picked = data.train_indices[:: max(1, len(data.train_indices) // views)][:views]
    scene_views = SceneViews(data, picked, run.config.resolution_rule(), torch.device("cpu"), run.config.background)
    model = run.model

    def one_pass():
        for i, (height, width) in enumerate(scene_views.sizes):
            model.render(scene_views.cameras[i : i + 1], height, width)["rgb"].sum().backward()

    row = {
        "run": Path(run_dir).name,
        "gaussians": len(model),
        "size": "x".join(map(str, scene_views.sizes[0])),
        "views": len(picked),
    }
    for mode in ("torch", "native"):
        with kernel_mode(mode):
            row[mode] = median_time(one_pass, repeats) / len(picked)
    log(
        f"fitted capture {row['run']} ({row['gaussians']} Gaussians, {row['size']}): "
        f"torch {row['torch'] * 1000:.0f} ms, native {row['native'] * 1000:.0f} ms per view"
    )
    return [row]


def hash_rows(repeats: int, log) -> list[dict]:
    rows = []
    for name, kwargs in HASH_GRIDS.items():
        torch.manual_seed(0)
        enc = HashGridEncoding(init_scale=1.0, **kwargs)
        for n in HASH_POINTS:
            x = torch.rand(n, 3, generator=torch.Generator().manual_seed(1))

            def step():
                enc.table.grad = None
                enc(x).square().sum().backward()

            row = {"grid": name, "points": n}
            for mode in ("torch", "native"):
                with kernel_mode(mode):
                    row[mode] = median_time(step, repeats)
            log(
                f"hash grid {name}, {n} points: torch {row['torch'] * 1000:.0f} ms  "
                f"native {row['native'] * 1000:.0f} ms"
            )
            rows.append(row)
    return rows


class StepTimer:
    """Splits trainer steps into the prior's UNet, rendering, the rest of guidance, the optimiser (with
    densification) and the remainder (backward pass and bookkeeping), by wrapping those calls."""

    def __init__(self, trainer):
        self.totals = {k: 0.0 for k in ("prior UNet", "render (forward)", "guidance (rest)", "optimiser + densify")}
        self.steps, self.wall = 0, 0.0
        self._wrap(trainer.guidance.prior, "_unet", "prior UNet")  # the direct call or its graph (priors/graph.py)
        self._wrap(trainer.model, "render", "render (forward)")
        self._wrap(trainer.guidance, "forward", "guidance (rest)")
        self._wrap(trainer.optimizer, "step", "optimiser + densify")
        if trainer.model.strategy is not None:  # densification and pruning, after the optimiser's step
            self._wrap(trainer.model.strategy, "step_post_backward", "optimiser + densify")

    def _wrap(self, obj, name, total):
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.totals[total] += time.perf_counter() - start

        setattr(obj, name, timed)

    def split(self) -> dict[str, float]:
        """Seconds per step of each part; the guidance's own time excludes the UNet it calls."""
        per = {k: v / max(self.steps, 1) for k, v in self.totals.items()}
        per["guidance (rest)"] -= per["prior UNet"]
        per["backward + rest"] = self.wall / max(self.steps, 1) - sum(per.values())
        return per


def generate_variants() -> list[tuple[str, str, list[str]]]:
    """(label, kernels, overrides) of the generate timings: the default (native kernels, the prior in the precision
    `auto` picks here, its UNet through the traced graph of priors/graph.py), the UNet called directly, the prior
    in float32 where that is not the default, and the PyTorch kernels."""
    from ..priors.base import precision_name

    default = precision_name("auto", torch.device("cpu"))
    rows = [(f"native, prior {default} (default)", "native", [])]
    rows.append((f"native, prior {default}, UNet called directly", "native", ["prior_graph=false"]))
    if default != "float32":
        rows.append(("native, prior float32", "native", ["prior_precision=float32"]))
    rows.append((f"torch, prior {default}", "torch", []))
    return rows


def generate_row(mode: str, prompt: str, target: float, chunk: int, log, overrides=(), label: str = "") -> dict:
    """The default generate for `prompt`, evaluated every `chunk` steps (outside the timing)."""
    from ..evaluation.ground_truth import compare, eval_cameras, subject_of
    from ..evaluation.run_eval import EVAL_RESOLUTION
    from ..workflows.generate import build, default_config_path, load_generate_config

    cfg = load_generate_config(
        [default_config_path("gaussians")],
        [f"prompt={json.dumps(prompt, ensure_ascii=False)}", f"native={mode}", *overrides],
    )
    colour, obj = subject_of(prompt)
    model, trainer = build(cfg, None, log=lambda s: None)
    timer = StepTimer(trainer)
    curve, reached = [], None
    while trainer.step < cfg.trainer.steps:
        start = time.perf_counter()
        trainer.fit(progress=False, stop_at=trainer.step + chunk)
        timer.wall += time.perf_counter() - start
        timer.steps = trainer.step
        with torch.no_grad():
            out = model.render(eval_cameras(), EVAL_RESOLUTION, EVAL_RESOLUTION, geometry=False, perturb=False)
        iou = compare(out, colour, obj, EVAL_RESOLUTION)["silhouette_iou"]
        curve.append((trainer.step, round(timer.wall, 1), round(iou, 3)))
        if reached is None and iou >= target:
            reached = timer.wall
    log(
        f"generate ({label or mode}): {timer.wall:.1f} s for {trainer.step} steps, IoU {curve[-1][2]:.3f}, "
        f"target {target} reached at {'-' if reached is None else f'{reached:.1f} s'}"
    )
    return {
        "mode": label or mode,
        "train_seconds": timer.wall,
        "reached_seconds": reached,
        "final_iou": curve[-1][2],
        "curve": curve,
        "split": timer.split(),
    }


def command_wall_and_memory(
    prompt: str, workdir: Path, repeats: int = 1, log=print, env: dict | None = None, label: str = "cli"
) -> dict:
    """The whole default `t3d generate --prompt PROMPT` command (export, evaluation and page included) `repeats`
    times, each in a fresh child process (with `env` added to its environment): the median wall time, every wall
    time, and the peak resident memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    walls = []
    for i in range(repeats):
        start = time.perf_counter()
        args = ["generate", "--prompt", prompt, "--out", str(workdir / f"{label}{i}")]
        result = run_module("threedistill.cli", args, cwd=Path.cwd(), env=env)
        walls.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"t3d generate failed: {result.stderr.strip().splitlines()[-1:]}")
        log(f"t3d generate, run {i + 1}/{repeats}: {walls[-1]:.1f} s")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_seconds": statistics.median(walls), "walls": walls, "peak_mb": max(peak_kb, before) / 1024}


def command_phases(prompt: str, workdir: Path, repeats: int, log=print) -> dict:
    """The whole default command `repeats` times in fresh processes (`generate_phases`): the phases of the run
    with the median total (so they add up to it; from interpreter start, so imports count)."""
    runs = []
    for i in range(repeats):
        start = time.perf_counter()
        result = run_module("threedistill.bench.generate_phases", [prompt, str(workdir / str(i))], cwd=Path.cwd())
        if result.returncode != 0:
            raise RuntimeError(f"t3d generate failed: {result.stderr.strip().splitlines()[-1:]}")
        phases = json.loads(result.stdout.strip().splitlines()[-1])
        phases["process"] = time.perf_counter() - start
        runs.append(phases)
        log(f"whole command, run {i + 1}/{repeats}: {phases['process']:.1f} s")
    return sorted(runs, key=lambda r: r["total"])[(len(runs) - 1) // 2]


PERF_PROMPT = "a red cone"  # the default generate that is timed end to end
PERF_CHUNK = 25  # steps between the (untimed) evaluations of the generate timing


def perf_header(repeats: int) -> str:
    """The report's header: the command, the machine, torch's threads and version."""
    return (
        report_header(
            "CPU performance: native kernels vs the PyTorch path",
            f"t3d bench perf --repeats {repeats}",
            cores_note=f", {torch.get_num_threads()} torch threads",
        )
        + f", torch {torch.__version__}; medians of {repeats} runs after a warm-up."
    )


def run_perf_bench(
    repeats: int = 5, with_generate: bool = True, target: float = 0.8, log=print, fit_run: Path | None = None
) -> dict:
    """Everything `t3d bench perf` measures, as the arguments of `markdown_report`: raster and hash rows (and a
    fitted capture's renders with `fit_run`), the default generate timed with native kernels and with the PyTorch
    path, and the whole command in a child process (the last two only `with_generate`)."""
    import tempfile

    check_positive("--repeats", repeats)
    if native.kernels() is None:
        raise ThreeDistillError(
            "the native kernels are unavailable here (no C++ compiler, or "
            "THREEDISTILL_NATIVE=torch); nothing to compare"
        )
    fitted = fit_run_rows(fit_run, repeats, log) if fit_run is not None else []
    raster = raster_rows(repeats, log)
    hashing = hash_rows(repeats, log)
    runs, command = [], None
    if with_generate:
        runs = [
            generate_row(mode, PERF_PROMPT, target, PERF_CHUNK, log, overrides, label)
            for label, mode, overrides in generate_variants()
        ]
        with tempfile.TemporaryDirectory() as tmp:
            # a first run on a machine: the prior loaded in full and its UNet traced (no prior cache)
            first = command_wall_and_memory(PERF_PROMPT, Path(tmp), repeats, log, {PRIOR_CACHE_ENV: "0"}, "first")
            command_wall_and_memory(PERF_PROMPT, Path(tmp), 1, log, label="fill")  # fills the cache if it is empty
            command = command_wall_and_memory(PERF_PROMPT, Path(tmp), repeats, log)
            command["first_run"] = first
            command["phases"] = command_phases(PERF_PROMPT, Path(tmp), repeats, log)
        log(f"whole command: {command['wall_seconds']:.1f} s (median), peak {command['peak_mb']:.0f} MB")
    return {"raster": raster, "hashing": hashing, "runs": runs, "command": command, "target": target, "fitted": fitted}


def markdown_report(
    header: str,
    raster: list[dict],
    hashing: list[dict],
    runs: list[dict],
    command: dict | None,
    target: float,
    fitted: list[dict] = (),
) -> str:
    ms = lambda s: "-" if s is None else f"{s * 1000:.0f} ms"  # noqa: E731
    lines = [
        header,
        "",
        "## Gaussian rasterizer, forward + backward, one camera",
        "",
        "| Gaussians | image | PyTorch path | native | dense reference | native vs PyTorch | native vs dense |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in raster:
        dense_ratio = "-" if r["dense"] is None else f"{r['dense'] / r['native']:.1f}x"
        lines.append(
            f"| {r['gaussians']} | {r['size']}x{r['size']} | {ms(r['torch'])} | {ms(r['native'])} | "
            f"{ms(r['dense'])} | **{r['torch'] / r['native']:.1f}x** | {dense_ratio} |"
        )
    if fitted:
        lines += [
            "",
            "## Gaussian rasterizer on a fitted capture (`--fit-run`), forward + backward per training view",
            "",
            "| fit run | Gaussians | image | views | PyTorch path | native | native vs PyTorch |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in fitted:
            lines.append(
                f"| {r['run']} | {r['gaussians']} | {r['size']} | {r['views']} | {ms(r['torch'])} | "
                f"{ms(r['native'])} | **{r['torch'] / r['native']:.1f}x** |"
            )
    lines += [
        "",
        "## Hash-grid encoding, forward + backward",
        "",
        "| grid | points | PyTorch path | native | native vs PyTorch |",
        "|---|---|---|---|---|",
    ]
    for r in hashing:
        lines.append(
            f"| {r['grid']} | {r['points']} | {ms(r['torch'])} | {ms(r['native'])} | "
            f"**{r['torch'] / r['native']:.1f}x** |"
        )
    if runs:
        lines += [
            "",
            '## Default `t3d generate --prompt "a red cone"` (Gaussians), optimisation only',
            "",
            f"| kernels, prior precision | {runs[0]['curve'][-1][0]} steps | time to IoU >= {target} | final IoU "
            "| s/step |",
            "|---|---|---|---|---|",
        ]
        for r in runs:
            reached = "not reached" if r["reached_seconds"] is None else f"{r['reached_seconds']:.1f} s"
            lines.append(
                f"| {r['mode']} | {r['train_seconds']:.1f} s | {reached} | {r['final_iou']:.3f} | "
                f"{r['train_seconds'] / r['curve'][-1][0]:.3f} |"
            )
        lines += [
            "",
            "Where a step's time goes (seconds per step, share):",
            "",
            "| part | " + " | ".join(r["mode"] for r in runs) + " |",
            "|---|" + "---|" * len(runs),
        ]
        for part in runs[0]["split"]:
            cells = []
            for r in runs:
                total = sum(r["split"].values())
                cells.append(f"{r['split'][part]:.3f} ({100 * r['split'][part] / total:.0f}%)")
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    if command:
        lines += [
            "",
            f'Whole default command (`t3d generate --prompt "a red cone"`: prior loading, the steps, turntable, '
            f"glb + ply export, evaluation, viewer.html), each run in a fresh child process: **"
            f"{command['wall_seconds']:.1f} s** wall (median of "
            f"{', '.join(f'{w:.1f}' for w in command.get('walls', [command['wall_seconds']]))} s), peak resident "
            f"memory **{command['peak_mb']:.0f} MB**. These start the prior from its cached bundle and traced UNet "
            f"(`priors/bundle.py`); a machine's first run, which loads it in full through diffusers and traces the "
            f"UNet (`{PRIOR_CACHE_ENV}=0`), takes",
        ]
        first = command.get("first_run")
        if first:
            lines[-1] += (
                f" **{first['wall_seconds']:.1f} s** (median of {', '.join(f'{w:.1f}' for w in first['walls'])} s)."
            )
        else:
            lines[-1] += " longer (not measured in this report)."
        phases = command.get("phases")
        if phases:
            lines += [
                "",
                f"Where the whole command's time goes (fresh processes; the phases of the run with the median total "
                f"of {len(command.get('walls', [])) or 'several'}):",
                "",
                "| phase | seconds | share |",
                "|---|---|---|",
            ]
            shown = [k for k in phases if k not in ("total", "process")]
            for name in shown:
                lines.append(f"| {name} | {phases[name]:.2f} | {100 * phases[name] / phases['total']:.0f}% |")
            lines.append(f"| **total** (from interpreter start) | **{phases['total']:.2f}** | 100% |")
            lines.append(f"| process wall time (interpreter start and exit too) | {phases['process']:.2f} | |")
    return "\n".join(lines) + "\n"
