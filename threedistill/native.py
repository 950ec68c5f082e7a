"""Native CPU kernels (kernels/*.cpp: Gaussian projection, features and compositing, and the hash-grid encoding),
compiled with OpenMP through torch's C++ extension API on first use into the user cache, never at install time.

Which path runs: `set_mode("auto" | "native" | "torch")` (the run config's `native` key calls it), else the
environment variable THREEDISTILL_NATIVE (same values), else auto. auto builds the kernels when first needed
and falls back to the PyTorch path with a one-line warning if there is no compiler or the build fails; native
makes that failure an error; torch never builds anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
import warnings
from pathlib import Path

import torch

from .errors import ConfigError, ThreeDistillError

MODES = ("auto", "native", "torch")
SOURCES = ("bindings.cpp", "gaussian_project.cpp", "gaussian_raster.cpp", "hash_grid.cpp")
_mode: str | None = None  # set_mode's choice; None = the environment variable's
_module = None
_failed: str | None = None


def kernels_dir() -> Path:
    """The C++ sources: the installed copy (threedistill/kernels) or the source checkout's kernels/."""
    here = Path(__file__).resolve().parent
    installed = here / "kernels"
    return installed if (installed / SOURCES[0]).is_file() else here.parent / "kernels"


def check_mode(mode: str, where: str = "native") -> str:
    if mode not in MODES:
        raise ConfigError(f"{where} must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def set_mode(mode: str | None) -> str | None:
    """Choose the kernels for this process: auto, native or torch (None: $THREEDISTILL_NATIVE, else auto).
    Returns the previous setting, so a caller can restore it."""
    global _mode
    previous, _mode = _mode, None if mode is None else check_mode(mode)
    return previous


def mode() -> str:
    return _mode or check_mode(os.environ.get("THREEDISTILL_NATIVE", "auto"), "THREEDISTILL_NATIVE")


def _cpu_features() -> bytes:
    """This x86-64 Linux machine's instruction-set features (the `flags` line of /proc/cpuinfo), else b""."""
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return b""
    try:
        with open("/proc/cpuinfo", "rb") as info:
            return next((line for line in info if line.startswith(b"flags")), b"")
    except OSError:
        return b""


def compiler_flags() -> list[str]:
    """-O3 with OpenMP; on x86-64 Linux also -march=native (AVX2 / AVX-512 where the CPU has them: compositing
    about 1.4x faster than the baseline SSE2 build), with the CPU's features in the build key so a cache shared
    by different machines never loads a library built for another. -ffp-contract=off: no fused multiply-adds,
    so every instruction set gives the results of the portable build bit for bit."""
    flags = ["-O3", "-fopenmp", "-ffp-contract=off"]
    return flags + ["-march=native"] if _cpu_features() else flags


def build_directory() -> tuple[Path, str]:
    """(folder, module name) of the compiled kernels for these sources, this torch and this checkout."""
    from .utils.cache import cache_dir

    sources = [kernels_dir() / name for name in SOURCES]
    # The sources' folder is part of the key: ninja's build file names the sources by absolute path, so two
    # checkouts sharing one build folder would rebuild it for each other on every first use.
    key = b"".join(p.read_bytes() for p in sources) + torch.__version__.encode() + str(kernels_dir().resolve()).encode()
    key += " ".join(compiler_flags()).encode() + _cpu_features()
    digest = hashlib.sha256(key).hexdigest()[:12]
    return cache_dir("native") / digest, f"threedistill_native_{digest}"


@contextlib.contextmanager
def _build_lock(build_dir: Path):
    """One build at a time, under an OS file lock that dies with its holder. torch's own lock (a `lock` file that
    a build deletes when it ends) outlives a build killed half-way, and every later load then waits for it forever:
    holding our lock, no build of ours is running, so such a file is stale and goes."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's lock alone
        yield
        return
    with open(build_dir / "threedistill.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        (build_dir / "lock").unlink(missing_ok=True)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build():
    from torch.utils.cpp_extension import load

    build_dir, name = build_directory()
    build_dir.mkdir(parents=True, exist_ok=True)
    if not (build_dir / f"{name}.so").is_file():  # say why the first run pauses
        print(
            f"threedistill: building the native CPU kernels (first use only, about a minute) in {build_dir}",
            file=sys.stderr,
            flush=True,
        )
    with _build_lock(build_dir):
        return load(
            name=name,
            sources=[str(kernels_dir() / source) for source in SOURCES],
            extra_cflags=compiler_flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            verbose=False,
        )


def kernels():
    """The compiled kernels module, or None when the PyTorch path should run (mode torch, or a failed build in
    mode auto). Built once per process; the compiled library is cached across processes."""
    global _module, _failed
    chosen = mode()
    if chosen == "torch":
        return None
    if _module is None and _failed is None:
        try:
            _module = _build()
        except Exception as err:  # noqa: BLE001 - no compiler, no ninja, a compile error: all mean the same
            _failed = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[-1][:200]}"
            if chosen == "auto":
                warnings.warn(
                    f"native CPU kernels unavailable ({_failed}); using the PyTorch path "
                    f"(THREEDISTILL_NATIVE=torch silences this)",
                    stacklevel=2,
                )
    if _module is None and chosen == "native":
        raise ThreeDistillError(f"native kernels were required (native=native) but could not be built: {_failed}")
    return _module


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the native kernels apply: CPU float32 tensors and a built (or buildable) module."""
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    return kernels() is not None
