"""`t3d bench guidance`: every guidance method on the benchmark prompts over seeds and representations, measured
against toy-world ground truth: silhouette IoU, colour error, saturation relative to the ground truth, Janus
rate (objects with a front), diversity across seeds, step time, teacher evaluations per step and peak memory.
`--rewards none,critic,...` runs every method again with each reward term (rewards/), one row per method and
reward; the reward only trains, the scores are the ground truth's."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

from ..engines import EngineConfig
from ..evaluation.ground_truth import subject_of
from ..evaluation.run_eval import load_eval_views
from ..toyworld.catalogue import get_object
from .fidelity_bench import run_fidelity
from .harness import check_positive, engine_flags, engine_note, prior_phrase, report_header
from .harness import mean_or_none as _mean

QUICK_PROMPTS = ["a red cone", "a orange duck"]
QUICK_STEPS = 100
SCHEDULE_STEPS = 300  # the configs' schedules are written for this many steps; runs of --steps stretch them


def parse_methods(text: str) -> list[str]:
    """`--methods`: all (every registered guidance method) or a comma-separated list; a one-line error for an
    unknown one, before anything runs."""
    from ..guidance import GUIDANCE

    names = GUIDANCE.names() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    for name in names:
        GUIDANCE.get(name)
    return names


def parse_rewards(text: str, overrides=()) -> list[str]:
    """`--rewards`: a comma-separated list of `none` and reward names (rewards/: clip, critic, vlm); a one-line error
    for an unknown one, or for one that needs `reward.model=DIR` among the overrides and has none, before anything
    runs."""
    from ..config import peek_key
    from ..errors import ConfigError
    from ..rewards import REWARDS, RewardConfig

    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ConfigError(f"--rewards is empty; give none and/or reward names ({', '.join(REWARDS.names())})")
    model = peek_key("reward.model", [], [str(o) for o in overrides])
    for name in names:
        if name != "none":
            if name not in REWARDS:
                raise ConfigError(f"--rewards: unknown reward {name!r}; known: none, {', '.join(REWARDS.names())}")
            RewardConfig(name=name, model=model)  # e.g. "reward vlm needs reward.model=DIR"
    return names


def guidance_header(
    seeds: int,
    representation: str,
    steps: int,
    engine: EngineConfig | None = None,
    quick: bool = False,
    overrides=(),
    rewards=("none",),
    methods: str = "all",
    prompts: Path | None = None,
) -> str:
    """The report's header: what `t3d bench guidance` ran, where, with which prior and schedules."""
    chosen = "" if methods == "all" else f" --methods {methods}"
    chosen += "" if prompts is None else f" --prompts {prompts}"
    command = (
        f"t3d bench guidance{' --quick' if quick else ''}{chosen} --seeds {seeds} --representation {representation}"
        f" --steps {steps}{'' if list(rewards) == ['none'] else ' --rewards ' + ','.join(rewards)}"
        f"{engine_flags(engine)}"
    )
    return (
        report_header("Guidance methods against toy-world ground truth", command, overrides)
        + f", {prior_phrase(overrides)}, each method with its defaults "
        f"(threedistill/guidance/<method>.py, configs/guidance/<method>.yaml) on the representation's config, "
        f"its {SCHEDULE_STEPS}-step schedules stretched to {steps} steps "
        f"(`trainer.schedule_steps={SCHEDULE_STEPS}`), no export." + engine_note(engine)
    )


def run_guidance_bench(
    methods: list[str],
    prompts: list[str],
    seeds: int,
    representations: list[str],
    out_root: Path,
    overrides=(),
    steps: int = 150,
    log=print,
    on_row=None,
    engine: EngineConfig | None = None,
    reuse: bool = False,
    rewards=("none",),
) -> list[dict]:
    """Every (reward, method, representation, prompt, seed) run of `steps` steps (the configs' schedules stretched
    to fit), without export, on `engine` (each in a fresh process on Ray: `fidelity_bench.run_fidelity`); the rows
    in task order, each with its `reward` (`none`: no reward term; the runs of a reward go under
    OUT_ROOT/reward-NAME)."""
    check_positive("--steps", steps)
    rewards = parse_rewards(",".join(rewards), overrides)
    # Bench runs skip the export; the schedules of the 300-step configs are stretched to --steps (README "Generate").
    overrides = ["export=[]", f"trainer.schedule_steps={SCHEDULE_STEPS}", *overrides]
    done: list[dict] = []
    for reward in rewards:
        tag = lambda rows, reward=reward: [{**r, "reward": reward} for r in rows]  # noqa: E731
        rows = run_fidelity(
            prompts,
            seeds,
            representations,
            Path(out_root) if reward == "none" else Path(out_root) / f"reward-{reward}",
            overrides if reward == "none" else [*overrides, f"reward.name={reward}"],
            steps,
            log=log,
            on_row=None if on_row is None else (lambda rows, tag=tag: on_row(done + tag(rows))),
            engine=engine,
            methods=methods,
            reuse=reuse,
        )
        done += tag(rows)
    return done


def seed_diversity(rows: list[dict]) -> float | None:
    """Mean over prompts of the mean pairwise RMS difference between the seeds' evaluation views (0 = identical
    results whatever the seed; mode collapse pushes it down)."""
    per_prompt = []
    for prompt in dict.fromkeys(r["prompt"] for r in rows):
        views = [load_eval_views(r["run_dir"]) for r in rows if r["prompt"] == prompt]
        pairs = [(a - b).pow(2).mean().sqrt().item() for a, b in itertools.combinations(views, 2)]
        if pairs:
            per_prompt.append(statistics.mean(pairs))
    return _mean(per_prompt)


def janus_rate(rows: list[dict]) -> float | None:
    """Share of front/back evaluation views that look like the mirrored object, over prompts with a front."""
    fronts = [
        r["front_back_correct"]
        for r in rows
        if get_object(subject_of(r["prompt"])[1]).has_front and r["front_back_correct"] is not None
    ]
    return 1.0 - statistics.mean(fronts) if fronts else None


def _group(row: dict) -> tuple[str, str, str]:
    return row["representation"], row["guidance"], row.get("reward", "none")


def summarise(rows: list[dict]) -> list[dict]:
    """One row per (representation, method, reward), in the order first seen."""
    out = []
    for rep, method, reward in dict.fromkeys(_group(r) for r in rows):
        rs = [r for r in rows if _group(r) == (rep, method, reward)]
        out.append(
            {
                "representation": rep,
                "guidance": method,
                "reward": reward,
                "runs": len(rs),
                "silhouette_iou": _mean(r["silhouette_iou"] for r in rs),
                "colour_error": _mean(r["colour_error"] for r in rs),
                "saturation_ratio": _mean(r["saturation_ratio"] for r in rs),
                "janus_rate": janus_rate(rs),
                "diversity": seed_diversity(rs),
                "step_seconds": _mean(r["step_seconds"] for r in rs),
                "teacher_evals_per_step": rs[0]["teacher_evals_per_step"],
                "peak_mb": max(r["peak_mb"] for r in rs),
                "wall_seconds": _mean(r["wall_seconds"] for r in rs),
            }
        )
    return out


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_report(rows: list[dict], header: str, reading: str = "") -> str:
    """The summary table (one row per representation, method and reward; the reward column only when a run had
    one), then silhouette IoU per prompt."""
    rewarded = any(r.get("reward", "none") != "none" for r in rows)
    method_col = lambda s: f"{s[1]} | {s[2]}" if rewarded else s[1]  # noqa: E731
    lines = [
        header,
        "",
        f"| representation | method | {'reward | ' if rewarded else ''}runs | silhouette IoU | colour error | "
        "saturation / GT | Janus rate | seed diversity | s/step | teacher evals/step | peak MB | wall s/run |",
        "|---|---|" + ("---|" if rewarded else "") + "---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summarise(rows):
        group = (s["representation"], s["guidance"], s["reward"])
        lines.append(
            f"| {s['representation']} | {method_col(group)} | {s['runs']} | {_fmt(s['silhouette_iou'])} | "
            f"{_fmt(s['colour_error'])} | {_fmt(s['saturation_ratio'], 2)} | {_fmt(s['janus_rate'], 2)} | "
            f"{_fmt(s['diversity'])} | {_fmt(s['step_seconds'], 3)} | {s['teacher_evals_per_step']} | "
            f"{_fmt(s['peak_mb'], 0)} | {_fmt(s['wall_seconds'], 0)} |"
        )
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    lines += [
        "",
        "Silhouette IoU per prompt (mean over seeds):",
        "",
        f"| representation | method | {'reward | ' if rewarded else ''}" + " | ".join(prompts) + " |",
        "|---|---|" + ("---|" if rewarded else "") + "---|" * len(prompts),
    ]
    for group in dict.fromkeys(_group(r) for r in rows):
        cells = [
            _fmt(_mean(r["silhouette_iou"] for r in rows if _group(r) == group and r["prompt"] == p)) for p in prompts
        ]
        lines.append(f"| {group[0]} | {method_col(group)} | " + " | ".join(cells) + " |")
    if reading:
        lines += ["", reading.strip()]
    return "\n".join(lines) + "\n"


def kept_reading(path) -> str:
    """The hand-written "## Reading" section of an existing report, kept when the tables are rewritten."""
    from pathlib import Path

    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    return text[text.index("## Reading") :] if "## Reading" in text else ""
