"""Crash safety and silent settings (#26) that the bad-input corpus (test_fuzz.py) cannot reach: atomic writes,
children that die with their parent, temporary folders of killed processes, run locks, the annealed NFSD window."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from threedistill.errors import ThreeDistillError
from threedistill.utils.files import atomic_path, atomic_write, read_json
from threedistill.utils.subprocesses import sweep_stale_tempdirs


def test_an_interrupted_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write(tmp_path / "cache.npz", b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["cache.npz"]


def test_a_broken_dataset_cache_is_a_one_line_error_not_a_badzipfile(tmp_path):
    from threedistill.toyworld.dataset import ToyDataset

    path = tmp_path / "toy.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ThreeDistillError, match="cannot read toy dataset"):
        ToyDataset.load(path)


@pytest.mark.parametrize(
    "text, fragment",
    [("[" * 100000, "nested too deeply"), ('{"a": 1' + "0" * 5000 + "}", "invalid JSON"), ("[]", "JSON object")],
)
def test_read_json_reports_what_json_loads_would_raise_as_one_line(tmp_path, text, fragment):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ThreeDistillError, match=fragment) as err:
        read_json(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_read_json_accepts_a_byte_order_mark(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b'\xef\xbb\xbf{"frames": []}')
    assert read_json(path) == {"frames": []}


def test_a_killed_process_temp_folder_is_swept_and_a_live_ones_is_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"t3d-unwrap-{dead.pid}-abc"
    live = tmp_path / f"t3d-unwrap-{os.getpid()}-def"
    stale.mkdir()
    live.mkdir()
    assert sweep_stale_tempdirs(tmp_path) == [stale]
    assert live.is_dir() and not stale.exists()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in status  # a zombie nobody reaps in a container is dead too


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_started_by_run_module_dies_when_its_parent_is_killed():
    parent_code = textwrap.dedent(
        """
        from threedistill.utils.subprocesses import run_module
        run_module("timeit", ["-n", "1", "-r", "1", "import time; time.sleep(60)"])
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    try:
        deadline = time.time() + 60
        while not _children(parent.pid) and time.time() < deadline:
            time.sleep(0.1)
        children = _children(parent.pid)
        assert children, "the parent never started its child"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while not all(_gone(c) for c in children) and time.time() < deadline:
            time.sleep(0.1)
        assert all(_gone(c) for c in children), "the child outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_whose_parent_died_before_it_asked_to_die_with_it_kills_itself():
    """The race the death signal cannot cover: the parent killed between fork and the child's prctl. The child
    then finds another parent than the one that started it (here: a pid that is not its parent) and ends."""
    from threedistill.utils.subprocesses import _die_with_parent

    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    orphan = subprocess.Popen(sleeper, preexec_fn=lambda: _die_with_parent(os.getpid() + 1_000_000))
    assert orphan.wait(timeout=30) == -signal.SIGKILL
    child = subprocess.Popen(sleeper, preexec_fn=lambda parent=os.getpid(): _die_with_parent(parent))
    try:
        with pytest.raises(subprocess.TimeoutExpired):  # its parent is alive: it runs
            child.wait(timeout=1)
    finally:
        child.kill()
        child.wait()


def test_a_run_locked_by_another_process_cannot_be_locked_again_until_it_is_released(tmp_path):
    from threedistill.session import lock_run

    first = lock_run(tmp_path)
    with pytest.raises(ThreeDistillError, match=f"in use by t3d process {os.getpid()}"):
        lock_run(tmp_path)
    first.close()
    lock_run(tmp_path).close()


def test_nfsd_anneals_its_timestep_window_as_humangaussian_does():
    from threedistill.config import scheduled
    from threedistill.guidance.nfsd import NFSDConfig

    cfg = NFSDConfig()
    assert scheduled(cfg.max_step_percent, 0) == pytest.approx(0.98)
    assert scheduled(cfg.max_step_percent, 124) == pytest.approx(0.98)
    assert scheduled(cfg.max_step_percent, 126) == pytest.approx(0.55)
    assert scheduled(cfg.min_step_percent, 200) == pytest.approx(0.02)


def test_prompt_warnings_name_unknown_words_and_the_cut_off_tail():
    from threedistill.priors import load_prior

    prior = load_prior(None)
    assert prior.prompt_warnings("a red cone") == []
    (unknown,) = prior.prompt_warnings("a red hamburger")
    assert "hamburger" in unknown and "--prior PATH" in unknown and "red" not in unknown.split("words")[1][:12]
    (long,) = prior.prompt_warnings("a red cone " * 10)
    assert "tokens" in long and str(prior.tokenizer.model_max_length) in long


def test_splat_checks_refuse_non_finite_values_zero_rotations_and_linear_scales():
    from threedistill.export.splats import SplatParams

    def params(**change):
        n = 4
        values = dict(
            means=np.zeros((n, 3), np.float32),
            log_scales=np.full((n, 3), -3.0, np.float32),
            quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)),
            opacity_logits=np.zeros(n, np.float32),
            sh=np.zeros((n, 1, 3), np.float32),
        )
        for key, (row, value) in change.items():
            values[key][row] = value
        return SplatParams(**values)

    params().checked("ok")
    for change, fragment in (
        ({"opacity_logits": (2, np.nan)}, "opacity is NaN or inf for 1 of 4 Gaussians (first: Gaussian 2)"),
        ({"sh": (1, np.inf)}, "colour"),
        ({"log_scales": (0, 1e30)}, "linear scale"),
        ({"quats": (3, 0.0)}, "quaternion"),
    ):
        with pytest.raises(ThreeDistillError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            params(**change).checked("x")


def test_the_exact_prior_refuses_an_unknown_prompt_before_its_set_up(monkeypatch):
    from threedistill.errors import PriorLoadError
    from threedistill.priors import load_prior
    from threedistill.toyworld import oracle

    def no_set_up(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the prompt was checked")

    monkeypatch.setattr(oracle, "oracle_dataset", no_set_up)
    with pytest.raises(PriorLoadError, match="knows only toy-world prompts"):
        load_prior("toyworld-oracle", prompts=["a hamburger"])
    oracle.EmpiricalPrior.check_prompt("a red cone, back view")  # a known prompt with a view suffix passes
