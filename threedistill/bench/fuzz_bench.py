"""`t3d bench fuzz`: run the bad-input corpus (`fuzz_corpus`), each case as its own `t3d` process, and sort the
outcomes: a clean one-line error, a correct result, or a failure (traceback, crash by signal, hang, garbage
accepted with exit 0, a valid input refused). tests/test_fuzz.py runs the same cases in-process, the fast form."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .fuzz_corpus import Case, Fixtures, build_corpus, build_fixtures

VERDICTS = (
    "clean_error",
    "correct",
    "traceback",
    "crash",
    "hang",
    "accepted",
    "refused",
    "wrong_error",
    "wrong_result",
)


@dataclass
class Outcome:
    case: str
    verdict: str  # clean_error | correct | traceback | crash | hang | accepted | refused | wrong_error | wrong_result
    returncode: int
    message: str  # the error line, or the end of the traceback
    seconds: float

    @property
    def passed(self) -> bool:
        return self.verdict in ("clean_error", "correct")


def mentions(text: str, fragment: str, work: Path | None = None) -> bool:
    """Whether `text` holds one of the `|`-separated alternatives of `fragment` (case-insensitive); `{work}`
    stands for the case's own folder (the error names the file the case damaged)."""
    text = text.lower()
    return any(alt.replace("{work}", str(work)).lower() in text for alt in fragment.split("|"))


def judge(case: Case, returncode: int, stderr: str, seconds: float, work: Path | None = None) -> Outcome:
    """Sort one finished case. An error is clean when stderr ends in one `error: ...` line (warnings before it are
    allowed) or is click's usage error, holds no traceback, and mentions the case's fragment."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    if "Traceback (most recent call last)" in stderr:
        return Outcome(case.name, "traceback", returncode, last[:300], seconds)
    if returncode < 0:
        return Outcome(case.name, "crash", returncode, f"signal {-returncode}", seconds)
    if case.expect == "usage":
        return Outcome(case.name, "clean_error" if returncode in (0, 2) else "wrong_error", returncode, last, seconds)
    if returncode == 0:
        if case.expect != "ok":
            return Outcome(case.name, "accepted", 0, last[:300], seconds)
        warned = [line for line in lines if line.startswith("warning: ")]
        if case.warns and not any(case.warns in line for line in warned):
            return Outcome(case.name, "wrong_result", 0, f"no warning mentioning {case.warns!r}", seconds)
        return Outcome(case.name, "correct", 0, (warned or [last])[0][:300], seconds)
    usage = any("Usage:" in line for line in lines)  # click's own usage error
    one_line = len([line for line in lines if line.startswith("error: ")]) == 1 and last.startswith("error: ")
    if returncode == 2 and (one_line or usage):
        if case.expect == "ok":
            return Outcome(case.name, "refused", 2, last[:300], seconds)
        if case.fragment and not mentions(stderr, case.fragment, work):
            return Outcome(
                case.name, "wrong_error", 2, f"{last[:250]} (expected to mention {case.fragment!r})", seconds
            )
        return Outcome(case.name, "clean_error", 2, last[:300], seconds)
    return Outcome(case.name, "wrong_error", returncode, last[:300], seconds)


def verified(case: Case, outcome: Outcome, work: Path) -> Outcome:
    """A `correct` outcome whose result the case's own check finds wrong becomes `wrong_result`."""
    if outcome.verdict == "correct" and case.verify is not None:
        problem = case.verify(work)
        if problem:
            return Outcome(outcome.case, "wrong_result", 0, problem, outcome.seconds)
    return outcome


def workdir(root: Path, case: Case) -> Path:
    work = root / "cases" / case.name.replace("/", "__").replace("=", "-")[:120]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def run_in_subprocess(case: Case, root: Path, fixtures: Fixtures, timeout: float = 300) -> Outcome:
    work = workdir(root, case)
    argv = case.make(work, fixtures)
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONSAFEPATH": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "threedistill.cli", *argv],
            capture_output=True,
            text=True,
            errors="replace",
            cwd=work,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Outcome(case.name, "hang", -1, f"no exit within {timeout:.0f} s", time.perf_counter() - start)
    except (OSError, ValueError) as err:  # an argument no process can be given (a NUL byte): the case is wrong
        return Outcome(case.name, "wrong_error", -1, f"cannot start: {err}", time.perf_counter() - start)
    return verified(case, judge(case, proc.returncode, proc.stderr, time.perf_counter() - start, work), work)


def fuzz_bench(out: Path, jobs: int = 2, only: str | None = None, log=print) -> list[Outcome]:
    """Run every case (or those whose name starts with `only`) as a process, `jobs` at a time; writes
    out/fuzz.jsonl and returns the outcomes."""
    out = Path(out).resolve()  # each case runs in its own folder: paths must not be relative
    out.mkdir(parents=True, exist_ok=True)
    log("building the valid fixtures (a toy capture, a splat file, a generate run and a fit run) ...")
    fixtures = build_fixtures(out / "fixtures", log=log)
    cases = [c for c in build_corpus() if only is None or c.name.startswith(only)]
    log(f"running {len(cases)} cases, {jobs} at a time")
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool, open(out / "fuzz.jsonl", "w") as f:
        for outcome in pool.map(lambda c: run_in_subprocess(c, out, fixtures), cases):
            outcomes.append(outcome)
            f.write(json.dumps(outcome.__dict__) + "\n")
            f.flush()
            if not outcome.passed:
                log(f"  {outcome.verdict:<11} {outcome.case}: {outcome.message}")
    return outcomes


def summary_table(outcomes: list[Outcome]) -> str:
    groups = sorted({o.case.split("/")[0] for o in outcomes})
    verdicts = [*VERDICTS]
    rows = ["| group | cases | " + " | ".join(verdicts) + " |", "|---" * (len(verdicts) + 2) + "|"]
    for group in [*groups, "all"]:
        sel = [o for o in outcomes if group == "all" or o.case.split("/")[0] == group]
        counts = [sum(o.verdict == v for o in sel) for v in verdicts]
        name = f"**{group}**" if group == "all" else group
        rows.append(f"| {name} | {len(sel)} | " + " | ".join(str(n) for n in counts) + " |")
    return "\n".join(rows)


def markdown_report(outcomes: list[Outcome], jobs: int) -> str:
    """The hardening report: verdicts per group, the slowest cases, every failure."""
    import platform
    import statistics

    import torch

    failed = [o for o in outcomes if not o.passed]
    slow = sorted(outcomes, key=lambda o: -o.seconds)[:5]
    lines = [
        "# Hardening: the bad-input corpus",
        "",
        f"`t3d bench fuzz --jobs {jobs}`: {len(outcomes)} cases, each its own `t3d` process (OMP_NUM_THREADS=1), on "
        f"{platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}. Cases and what each must "
        "give: `threedistill/bench/fuzz_corpus.py`; the test suite runs the same cases in-process "
        "(tests/test_fuzz.py).",
        "",
        "A **clean error** is exit 2 with one `error: ...` line that names the file, key or option at fault; a "
        "**correct** result is exit 0 for a valid but awkward input (with the expected warning where there is one).",
        "",
        summary_table(outcomes),
        "",
        f"Seconds per case: median {statistics.median(o.seconds for o in outcomes):.1f}, slowest "
        + ", ".join(f"{o.case} {o.seconds:.1f}" for o in slow)
        + ".",
        "",
    ]
    if failed:
        lines += ["## Failures", ""] + [f"- `{o.case}`: {o.verdict}: {o.message}" for o in failed] + [""]
    else:
        lines += ["No failures.", ""]
    return "\n".join(lines)
