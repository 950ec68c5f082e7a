"""`t3d bench reward`: the Janus (two-faced) failure over the toy objects with a front, per guidance method,
representation and variant of reward guidance, scored against toy ground truth (never with a reward model):
silhouette IoU, colour error, Janus rate (share of front/back views that look mirrored), s/step and wall time;
for the variants that draw their reference from the prior, whether that reference shows the front (`reference_front`).

Variants: `none`; `visual-auto` (a front view drawn from the run's prior as the reference image, VP3D);
`visual-gt` (the toy world's true front view as the reference: an oracle, reported as such); `clip` and `vlm`
(a reward model given by directory, when one is); `critic` (the embedded toy critic, reward.name=critic) and
`critic+visual-auto` (both); `orient` (the orientation check at the last step: orientation.check_at=[1.0], turning
the object round when the embedded judge finds it faces backwards; `turned` counts the runs it turned; halfway,
[0.5], measured worse: docs/benchmarks/reward_orient.md); `orient-reward` (the same judge as a differentiable
reward, reward.name=orient: each reward view pushed toward the look of its camera's azimuth)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..engines import EngineConfig
from ..errors import ThreeDistillError
from .harness import (
    engine_flags,
    engine_note,
    finished_row,
    in_task_order,
    mean_or_none,
    median_step_seconds,
    record,
    report_header,
    run_tasks,
)

FRONTED = ("snowman", "duck", "house", "robot")
VARIANTS = (
    "none",
    "visual-auto",
    "visual-gt",
    "clip",
    "vlm",
    "critic",
    "critic+visual-auto",
    "orient",
    "orient-reward",
)
ROW = "reward_row.json"


def parse_variants(text: str, models: dict[str, str | None]) -> list[str]:
    """`--variants`: a comma-separated list of VARIANTS; clip and vlm need their model directory."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    for name in names:
        if name not in VARIANTS:
            raise ThreeDistillError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        if name in models and not models[name]:
            raise ThreeDistillError(f"variant {name} needs --{name}-model DIR (a local {name} model directory)")
    return names


def front_view_file(subject: str, folder: Path) -> Path:
    """The toy world's true front view of '<colour> <object>' as an RGBA file (the visual-gt oracle)."""
    import imageio.v3 as iio
    import numpy as np
    import torch

    from ..toyworld.render import render_toy_view

    path = folder / f"{subject.replace(' ', '_')}_front.png"
    if not path.is_file():
        rgb = render_toy_view(subject, 0.0, 15.0, resolution=128)
        alpha = render_toy_view(subject, 0.0, 15.0, resolution=128, what="alpha")[:1]
        folder.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, (torch.cat([rgb, alpha]).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return path


def reference_front(run_dir: Path, subject: str) -> float | None:
    """1.0 when the run's auto reference (RUN_DIR/reference.png, drawn from the prior) is closer to the toy world's
    true front view than to its true back view (mean squared colour difference on white, at the reference's
    size), 0.0 when closer to the back; None for runs without an auto reference."""
    import torch

    from ..rewards.reference import REFERENCE_FILE, read_rgba
    from ..toyworld.render import render_toy_view

    path = Path(run_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    image = read_rgba(path)[0]
    size = image.shape[-1]
    front, back = (render_toy_view(subject, azimuth, 15.0, resolution=size) for azimuth in (0.0, 180.0))
    return float(torch.mean((image - front) ** 2) < torch.mean((image - back) ** 2))


def variant_overrides(variant: str, subject: str, out_root: Path, models: dict[str, str | None]) -> list[str]:
    if variant == "visual-auto":
        return ["reference.image=auto"]
    if variant == "visual-gt":
        return [f"reference.image={front_view_file(subject, out_root / 'references')}"]
    if variant in ("clip", "vlm"):
        return [f"reward.name={variant}", f"reward.model={models[variant]}"]
    if variant == "critic":
        return ["reward.name=critic"]
    if variant == "critic+visual-auto":
        return ["reward.name=critic", "reference.image=auto"]
    if variant == "orient":
        return ["orientation.check_at=[1.0]"]
    if variant == "orient-reward":
        return ["reward.name=orient"]
    return []


def turned(run_dir: Path) -> int | None:
    """How many times the orientation check turned the run round (None: it ran no check)."""
    path = Path(run_dir) / "log.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    checks = [r["orientation_turned"] for r in rows if "orientation_turned" in r]
    return sum(checks) if checks else None


def reward_run(
    variant: str,
    subject: str,
    seed: int,
    rep: str,
    method: str,
    steps: int | None,
    out_root: str,
    overrides: list[str],
    threads: int | None = None,
) -> dict:
    """One benchmark run (an engine's task): generate, evaluate against ground truth, write its row."""
    from ..workflows.generate import generate_or_resume
    from ..workflows.results import evaluate_run

    out, prompt = task_dir(out_root, method, rep, variant, seed), f"a {subject}"
    start = time.time()
    run = generate_or_resume(
        out, prompt=prompt, representation=rep, guidance=method, seed=seed, steps=steps,
        overrides=overrides, log=lambda s: None,
    )  # fmt: skip
    metrics = evaluate_run(run.dir, run)
    row = {
        "variant": variant,
        "subject": subject,
        "prompt": prompt,
        "task": task_record(steps, overrides),
        "seed": seed,
        "representation": rep,
        "guidance": method,
        "run_dir": str(run.dir),
        "silhouette_iou": metrics["silhouette_iou"],
        "colour_error": metrics["colour_error"],
        "front_back_correct": metrics.get("front_back_correct"),
        "reference_front": reference_front(run.dir, subject),
        "turned": turned(run.dir),
        "step_seconds": median_step_seconds(run.dir),
        "wall_seconds": time.time() - start,
    }
    (run.dir / ROW).write_text(json.dumps(row))
    return row


def task_record(steps: int | None, overrides) -> dict:
    """What a row records of its task and --resume compares: the step count and the overrides."""
    return {"steps": steps, "overrides": list(overrides)}


def task_dir(out_root: str | Path, method: str, rep: str, variant: str, seed: int) -> Path:
    """Where a task's run goes: OUT_ROOT/METHOD-REP/VARIANT/seedK (one folder per prompt below it)."""
    return Path(out_root) / f"{method}-{rep}" / variant / f"seed{seed}"


def run_reward_bench(
    variants: list[str],
    subjects: list[str],
    seeds: int,
    representations: list[str],
    methods: list[str],
    out_root: Path,
    overrides=(),
    steps: int | None = None,
    models: dict[str, str | None] | None = None,
    engine: EngineConfig | None = None,
    log=print,
    on_row=None,
    reuse: bool = False,
) -> list[dict]:
    """Every (method, representation, variant, subject, seed) run, evaluated against ground truth; `on_row(rows)`
    after each. `reuse` reads finished runs of the same task (same steps and overrides) back from `out_root`
    instead of running them again (a benchmark stopped half-way, or given more seeds, goes on)."""
    out_root = Path(out_root).resolve()
    models = models or {}
    tasks = [
        dict(
            variant=v, subject=s, seed=k, rep=r, method=m, steps=steps, out_root=str(out_root),
            overrides=["export=[]", "trainer.preview_every=0", *variant_overrides(v, s, out_root, models),
                       *overrides],
        )
        for m in methods for r in representations for v in variants for s in subjects for k in range(seeds)
    ]  # fmt: skip
    rows: list[dict] = []

    def report(row: dict) -> None:
        fb = row["front_back_correct"]
        record(
            rows,
            row,
            f"{row['guidance']:5s} {row['representation']:9s} {row['variant']:11s} {row['subject']:14s} seed "
            f"{row['seed']}: IoU {row['silhouette_iou']:.3f}  Janus {'-' if fb is None else f'{1 - fb:.2f}'}  "
            f"{row['wall_seconds']:.0f}s",
            log,
            on_row,
        )

    def read_back(t: dict) -> dict | None:
        where = task_dir(t["out_root"], t["method"], t["rep"], t["variant"], t["seed"])
        return finished_row(where, f"a {t['subject']}", task_record(t["steps"], t["overrides"]), ROW)

    run_tasks(reward_run, tasks, report, engine, read_back if reuse else None, log=log)
    key = lambda t: (t["method"], t["rep"], t["variant"], t["subject"], t["seed"])  # noqa: E731
    return in_task_order(
        rows,
        [key(t) for t in tasks],
        lambda r: (r["guidance"], r["representation"], r["variant"], r["subject"], r["seed"]),
    )


def turned_cell(rows: list[dict]) -> str:
    """How many of the rows' runs the orientation check turned; '-' when none of them ran the check."""
    checked = [r for r in rows if r.get("turned") is not None]
    return str(sum(bool(r["turned"]) for r in checked)) if checked else "-"


def janus(rows: list[dict]) -> float | None:
    """The share of front/back views that look mirrored, over the rows that have any."""
    return mean_or_none(None if r["front_back_correct"] is None else 1 - r["front_back_correct"] for r in rows)


def markdown_report(rows: list[dict], command: str, engine: EngineConfig | None, overrides=()) -> str:
    has_ref = any(r.get("reference_front") is not None for r in rows)
    has_turn = any(r.get("turned") is not None for r in rows)
    lines = [
        report_header("Reward guidance against the Janus failure", command + engine_flags(engine), overrides)
        + ". Scored against the toy world's ground truth, never with a reward model. Janus rate: the share of "
        "front/back evaluation views that look like the mirrored object (0.5 is chance). visual-gt uses the true "
        "front view: an oracle, not something a user has."
        + (
            " Reference front: the share of runs whose reference image, drawn from the prior, is closer to the "
            "true front view than to the true back view."
            if has_ref
            else ""
        )
        + (" Turned: the runs the orientation check turned round." if has_turn else "")
        + engine_note(engine),
        "",
        "| method | representation | variant | runs | IoU | colour error | Janus rate | "
        + ("reference front | " if has_ref else "")
        + ("turned | " if has_turn else "")
        + "s/step | wall s/run |",
        "|---|---|---|---|---|---|---|" + ("---|" if has_ref else "") + ("---|" if has_turn else "") + "---|---|",
    ]

    def cell(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    groups = dict.fromkeys((r["guidance"], r["representation"], r["variant"]) for r in rows)
    for method, rep, variant in groups:
        rs = [r for r in rows if (r["guidance"], r["representation"], r["variant"]) == (method, rep, variant)]
        lines.append(
            f"| {method} | {rep} | {variant} | {len(rs)} | {cell(mean_or_none(r['silhouette_iou'] for r in rs))} | "
            f"{cell(mean_or_none(r['colour_error'] for r in rs))} | {cell(janus(rs), 2)} | "
            + (f"{cell(mean_or_none(r.get('reference_front') for r in rs), 2)} | " if has_ref else "")
            + (f"{turned_cell(rs)} | " if has_turn else "")
            + f"{cell(mean_or_none(r['step_seconds'] for r in rs), 3)} | "
            f"{cell(mean_or_none(r['wall_seconds'] for r in rs), 0)} |"
        )
    subjects = list(dict.fromkeys(r["subject"] for r in rows))
    lines += ["", "Janus rate per object (mean over seeds):", ""]
    lines += ["| method | representation | variant | " + " | ".join(subjects) + " |"]
    lines += ["|---|---|---|" + "---|" * len(subjects)]
    for method, rep, variant in groups:
        cells = [
            cell(janus([r for r in rows if (r["guidance"], r["representation"], r["variant"], r["subject"])
                        == (method, rep, variant, s)]), 2)
            for s in subjects
        ]  # fmt: skip
        lines.append(f"| {method} | {rep} | {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
