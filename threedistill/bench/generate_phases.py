"""Where the default `t3d generate` command's time goes, phase by phase, measured in a fresh process (imports
included): `python -m threedistill.bench.generate_phases PROMPT OUT_DIR` prints one JSON line of seconds per phase.
`t3d bench perf` runs it several times and reports the medians (docs/benchmarks/performance.md)."""

from __future__ import annotations

import json
import sys
import time

START = time.perf_counter()

PHASES = (
    "imports",
    "prior, model, trainer",
    "optimisation",
    "turntable",
    "exports (glb, ply)",
    "evaluation",
    "page (viewer.html)",
)


def measure(prompt: str, out: str) -> dict[str, float]:
    """Seconds per phase of the default generate command as the CLI runs it: the run, its evaluation, then its
    page (written once, after the evaluation)."""
    marks: list[tuple[str, float]] = []
    mark = lambda name: marks.append((name, time.perf_counter()))  # noqa: E731

    from ..workflows import generate as workflow
    from ..workflows.results import evaluate_run

    mark("imports")

    def after(name: str, fn):
        def timed(*args, **kwargs):
            result = fn(*args, **kwargs)
            mark(name)
            return result

        return timed

    wrapped = {
        (workflow, "build"): "prior, model, trainer",
        (workflow.RunSession, "train"): "optimisation",
        (workflow, "write_turntable"): "turntable",
        (workflow, "export_finished_run"): "exports (glb, ply)",
    }
    originals = {key: getattr(*key) for key in wrapped}
    for (owner, name), phase in wrapped.items():
        setattr(owner, name, after(phase, originals[owner, name]))
    try:
        run = workflow.generate(prompt=prompt, out=out, progress=False, log=lambda s: None, page=False)
    finally:  # the evaluation builds the run again: that is evaluation time
        for (owner, name), fn in originals.items():
            setattr(owner, name, fn)
    mark("finish")
    evaluate_run(run.dir, run)  # what the command's evaluation does, less printing the table
    mark("evaluation")
    workflow.export_run_page(run.dir, run.model, run.config.representation, log=lambda s: None)
    mark("page (viewer.html)")
    seconds: dict[str, float] = {}
    previous = START
    for name, at in marks:
        seconds[name] = seconds.get(name, 0.0) + at - previous
        previous = at
    seconds["evaluation"] += seconds.pop("finish", 0.0)  # metrics.json and the wall time: part of finishing
    seconds = {name: seconds[name] for name in PHASES if name in seconds}
    seconds["total"] = previous - START
    return seconds


if __name__ == "__main__":
    from ..utils.exiting import exit_now

    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
    exit_now(0)  # as the command ends (cli.entry)
