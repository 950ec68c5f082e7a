"""What every benchmark shares: prompt files, finished runs read back (`--resume`), tasks run on an engine
(`threedistill.engines`: local, or Ray), rows recorded as they come, reports rewritten after every run, and the
report header (the command line, the machine, the prior)."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any, Callable

from ..config import packaged_config
from ..engines import EngineConfig, make_engine
from ..errors import ThreeDistillError
from ..prompting import read_prompt_file
from ..utils.stats import mean_or_none  # noqa: F401  (the benchmarks' import)


def read_prompts(path: Path | None, default: str = "fidelity_prompts.txt") -> list[str]:
    """The prompts of a prompt file (one per line, # for comments), by default configs/bench/`default`; a one-line
    error for a missing or empty file or a prompt without ground truth."""
    from ..evaluation.ground_truth import subject_of

    prompts = read_prompt_file(Path(path) if path else packaged_config("bench", default))
    for p in prompts:
        subject_of(p)  # fail early on prompts without ground truth
    return prompts


def check_positive(name: str, value: int) -> None:
    """A one-line error unless `value` (of the option `name`, e.g. --jobs) is at least 1."""
    if value < 1:
        raise ThreeDistillError(f"{name} must be positive, got {value}")


# ---------------------------------------------------------------- finished runs, workers, rows
def finished_row(out: Path, prompt: str, task: dict, name: str) -> dict | None:
    """The row (file `name` in its run directory) of a finished run under `out` with the same prompt and task, if
    any."""
    for path in sorted(Path(out).glob(f"*/*/{name}")):
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):  # cut short by a crash while writing: run that task again
            continue
        if row.get("prompt") == prompt and row.get("task") == task:
            return row
    return None


def run_tasks(
    fn,
    tasks: list[dict],
    report,
    engine: EngineConfig | None = None,
    read_back: Callable[[dict], dict | None] | None = None,
    fresh_process: bool = False,
    log=print,
) -> None:
    """report(row) for every task (fn's keyword arguments): first the rows `read_back(task)` finds (finished runs,
    read back without running anything), then fn(**task, threads=n) of the others on `engine` (default: local,
    one at a time in this process), reported as they end. `fresh_process` gives every task a new process on
    Ray (its peak memory is its own)."""
    todo = []
    for task in tasks:
        row = read_back(task) if read_back is not None else None
        report(row) if row is not None else todo.append(task)
    make_engine(engine or EngineConfig(), log).run(fn, todo, report, fresh_process=fresh_process)


def engine_flags(engine: EngineConfig | None) -> str:
    """The engine options as a report's command line shows them ("" for the default, local)."""
    engine = engine or EngineConfig()
    if engine.name == "local":
        return "" if engine.cpus_per_run is None else f" --cpus-per-run {engine.cpus_per_run:g}"
    where = f" --address {engine.address}" if engine.address else ""
    return f" --engine {engine.name} --jobs {engine.jobs}{where} --cpus-per-run {engine.cpus:g}"


def engine_note(engine: EngineConfig | None) -> str:
    """How a report says its runs ran (and what that does to its times and peak memory)."""
    engine = engine or EngineConfig()
    if engine.name == "local":
        return (
            f" Runs one at a time in one process on {engine.threads} thread(s) (--engine local): peak memory is the"
            " process's running peak."
        )
    return f" {engine.jobs} run(s) at a time in Ray workers, {engine.cpus:g} CPU each" + (
        ": step and wall times are of shared cores." if engine.jobs > 1 else "."
    )


def median_step_seconds(run_dir: Path) -> float | None:
    """The median step time in a run's log.jsonl (None when no step was logged)."""
    rows = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    seconds = [row["step_seconds"] for row in rows if "step_seconds" in row]
    return statistics.median(seconds) if seconds else None


def in_task_order(rows: list[dict], task_keys: list, row_key: Callable[[dict], Any]) -> list[dict]:
    """Sort `rows` in place by the position of `row_key(row)` in `task_keys` (parallel runs end in any order)."""
    order = {key: i for i, key in enumerate(task_keys)}
    rows.sort(key=lambda r: order[row_key(r)])
    return rows


def record(rows: list[dict], row: dict, message: str, log, on_row) -> None:
    """Append a benchmark row, report it, and let the caller rewrite its table (a crash loses little)."""
    rows.append(row)
    log(message)
    if on_row is not None:
        on_row(rows)


# ---------------------------------------------------------------- reports
def prior_phrase(overrides) -> str:
    """How a benchmark header names its prior: the last `prior=...` override, else the embedded one."""
    named = [o.partition("=")[2] for o in overrides if o.partition("=")[0].strip() == "prior"]
    return f"prior {named[-1]}" if named else "embedded toy prior"


def report_header(title: str, command: str, overrides=(), cores_note: str = "") -> str:
    """A report's title and the command line that wrote it (with its key=value overrides) on this machine:
    "# title\\n\\n`command a=1` on x86_64 (8 cores)"; `cores_note` goes inside the parentheses. The caller goes
    on with the rest of the sentence."""
    extra = "".join(f" {o}" for o in overrides)
    return f"# {title}\n\n`{command}{extra}` on {platform.machine()} ({os.cpu_count()} cores{cores_note})"


def report_writer(out: Path, render: Callable[[Any], str]) -> Callable[[Any], None]:
    """A callback that writes render(result) to `out` (its folder made on the first write): benchmarks call it
    after every run, so a crash loses little, and once more at the end with the rows in task order."""
    out = Path(out)

    def write(result) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(result))

    return write
