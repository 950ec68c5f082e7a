"""Child Python processes of the package (xatlas's unwrap, the benchmarks' fits): never importing code from the
user's working directory, and never outliving the process that started them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when its parent dies (even by SIGKILL), so a killed export leaves no xatlas
    behind; a parent that died before the request took effect (the child then belongs to init) is checked for
    right after it; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


TEMP_PREFIX = "t3d-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale_tempdirs(root: str | Path | None = None) -> list[Path]:
    """Remove the `t3d-<purpose>-<pid>-*` folders left in the temp folder by processes that no longer run (a
    killed export cannot clean up after itself); returns what was removed."""
    import shutil

    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*-*"):
        parts = path.name.split("-")
        if len(parts) >= 4 and parts[2].isdigit() and path.is_dir() and not _alive(int(parts[2])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def private_tempdir(purpose: str) -> Iterator[Path]:
    """A temporary folder named after this process (`t3d-<purpose>-<pid>-*`), removed at the end of the block;
    what a killed process leaves is removed by the next one (`sweep_stale_tempdirs`)."""
    sweep_stale_tempdirs()
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{purpose}-{os.getpid()}-") as tmp:
        yield Path(tmp)


def run_module(
    module: str, args: list[str], timeout: float | None = None, cwd: str | Path | None = None, env: dict | None = None
):
    """`python -m module args` with its output captured. `-m` puts the working directory first on `sys.path`, so a
    stray `xatlas.py` there would be imported: the child gets PYTHONSAFEPATH (Python >= 3.11 adds nothing) and,
    unless `cwd` is given (the arguments then may be relative to it), an empty working directory; `env` adds to
    the environment."""
    env = {**os.environ, **(env or {}), "PYTHONSAFEPATH": "1"}
    parent = os.getpid()
    preexec = (lambda: _die_with_parent(parent)) if sys.platform.startswith("linux") else None
    with private_tempdir("child") as empty:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(cwd) if cwd is not None else empty,
            env=env,
            preexec_fn=preexec,
        )
