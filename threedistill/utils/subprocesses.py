"""Child Python processes of the package (xatlas's unwrap, the benchmarks' fits): never importing code from the
user's working directory, and never outliving the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when its parent dies (even by SIGKILL), so a killed export leaves no xatlas
    behind; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_module(module: str, args: list[str], timeout: float | None = None, cwd: str | Path | None = None):
    """`python -m module args` with its output captured. `-m` puts the working directory first on `sys.path`, so a
    stray `xatlas.py` there would be imported: the child gets PYTHONSAFEPATH (Python >= 3.11 adds nothing) and,
    unless `cwd` is given (the arguments then may be relative to it), an empty working directory."""
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    with tempfile.TemporaryDirectory(prefix="t3d-child-") as empty:
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(cwd) if cwd is not None else empty,
            env=env,
            preexec_fn=preexec,
        )
