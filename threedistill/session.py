"""One run session for every kind of run (generate, fit, edit and any later kind): the run directory (created
atomically, never shared by two runs), the resolved config and the run's kind saved in it, device, kernels and
seed, resuming from the latest checkpoint, the wall time and metrics merged into metrics.json.

A workflow opens a session (`RunSession.start` for a new run, `RunSession.resume` for a run directory) and, inside
`with session:`, builds its model, objective and views, trains one or more Trainers with `session.train`, writes
its outputs and calls `session.finish`; a new run that fails before its training starts leaves no folder.
`read_run_kind` tells what kind of run a directory holds, so commands that take any run (`t3d export`,
`t3d eval`) can load it."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from . import native as native_kernels
from .config import load_config, packaged_config, save_config
from .errors import ConfigError, ThreeDistillError
from .trainer import Trainer
from .utils.files import read_json, write_json

RUN_FILE = "run.json"  # {"kind": ...}: which workflow wrote the run directory


def resolve_device(name: str) -> torch.device:
    """The torch device for a `device` setting, or a one-line error when that GPU is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            raise ConfigError(
                f"device={name} but torch sees {count} CUDA GPU(s) (torch {torch.__version__}); "
                f"use device=cpu or device=auto"
            )
    return torch.device(name)


def check_device_name(device: str) -> None:
    """A `device` setting's form (availability is checked when it is used)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(device)):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "prompt"


def new_run_dir_at(parent: Path, method: str) -> Path:
    """A new directory parent/<method>@<timestamp> (-k suffixed when that exists: runs started in one second)."""
    base = Path(parent) / f"{method}@{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while True:  # created here, so two runs started in the same second by two processes never share it
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            if not path.is_dir():  # a file stands where a folder must be
                raise ThreeDistillError(f"cannot make the run folder {path}: a file is in the way") from None
            path, k = Path(f"{base}-{k}"), k + 1
        except OSError as err:  # a file as a parent, no permission, a full or read-only disk
            raise ThreeDistillError(
                f"cannot make the run folder {path}: {err.strerror or err}; --out must name a folder you can write"
            ) from None


def option_overrides(**options) -> list[str]:
    """`key=value` overrides for the command-line options that were given (None = not given); strings are quoted
    so prompts and paths survive the parser. Keys use __ for dots: trainer__steps=5 -> trainer.steps=5."""

    def quote(v):
        if isinstance(v, (list, tuple)):  # a list of strings, e.g. drag points
            return json.dumps([str(x) for x in v], ensure_ascii=False)
        return json.dumps(str(v), ensure_ascii=False) if isinstance(v, (str, Path)) else v

    return [f"{key.replace('__', '.')}={quote(value)}" for key, value in options.items() if value is not None]


def peak_memory_gb() -> float:
    """This process's peak resident memory so far, in GB (Linux and macOS; 0 where unknown)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1e9 if sys.platform == "darwin" else 1e6), 2)  # bytes on macOS, kilobytes on Linux


def update_metrics(run_dir: Path, values: dict | None = None, add_seconds: float = 0.0) -> dict:
    """Merge `values` into RUN_DIR/metrics.json (created if missing) and add `add_seconds` to its wall_seconds
    (a resumed run adds its own time); returns the merged metrics."""
    path = Path(run_dir) / "metrics.json"
    metrics = {}
    if path.exists():
        try:
            metrics = read_json(path, "metrics file")
        except ThreeDistillError as err:  # the metrics are recomputed; a damaged file is replaced, with a word
            warnings.warn(f"{err}; writing it afresh", stacklevel=2)
    metrics.update(values or {})
    if add_seconds:
        metrics["wall_seconds"] = round(metrics.get("wall_seconds", 0.0) + add_seconds, 1)
    write_json(path, metrics)
    return metrics


def saved_run_config(schema: type, run_dir: Path, overrides=()) -> tuple[Path, object]:
    """A run directory and its saved config.yaml (as `schema`, under `overrides`), for --resume; a one-line error
    when it is not a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ThreeDistillError(f"cannot resume: {run_dir} is not a run directory (no config.yaml)")
    return run_dir, load_config(schema, run_dir / "config.yaml", list(overrides))


def run_config(
    schema: type, kind: str, key: str, resume: Path | None, overrides=(), **options
) -> tuple[Path | None, Any]:
    """(run directory or None, config) of a run of `kind`. Resuming: the directory's saved config.yaml under
    `overrides`. New: the dataclass defaults, then the shipped configs/<kind>/<value of `key`>.yaml if there is
    one (e.g. configs/fit/gaussians.yaml), then the options that were given (see `option_overrides`), then
    `overrides`."""
    if resume is not None:
        expect_run_kind(resume, kind)
        return saved_run_config(schema, resume, overrides)
    overrides = list(overrides) + option_overrides(**options)
    probe = load_config(schema, None, [o for o in overrides if o.partition("=")[0].strip() == key])
    shipped = packaged_config(kind, f"{getattr(probe, key)}.yaml")
    return None, load_config(schema, [shipped] if shipped.is_file() else [], overrides)


def read_run_kind(run_dir: Path) -> str:
    """The kind of run in `run_dir` (generate, fit, edit, ...): from its run.json, or, for runs written before
    run.json existed, from the keys of its config.yaml; a one-line error when it is not a run directory."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ThreeDistillError(f"{run_dir} is not a run directory (no config.yaml)")
    marker = run_dir / RUN_FILE
    if marker.is_file():
        kind = read_json(marker, "run marker").get("kind")
        if not isinstance(kind, str) or not kind:
            raise ThreeDistillError(f'{marker}: expected {{"kind": "generate" | "fit" | "edit"}}, found kind {kind!r}')
        return kind
    keys = {line.split(":", 1)[0] for line in config.read_text().splitlines() if line and not line[0].isspace()}
    return "edit" if "source" in keys else "fit" if "scene" in keys else "generate"


def expect_run_kind(run_dir: Path, kind: str) -> None:
    """A one-line error unless `run_dir` is a run directory of `kind` (checked before its config is read, so a
    run of another kind is named as such rather than reported as unknown config keys)."""
    try:
        found = read_run_kind(run_dir)
    except ThreeDistillError as err:
        raise ThreeDistillError(f"cannot resume: {err}") from None
    if found != kind:
        raise ThreeDistillError(
            f"cannot resume: {run_dir} holds a {found} run, not a {kind} run (resume it with t3d {found} --resume)"
        )


@dataclass
class Run:
    """A finished (or interrupted) run: its directory, config, model and trainer (None for a loaded edit of a
    3DGS file without checkpoints); `kind` names the workflow that wrote it."""

    dir: Path
    config: Any
    model: torch.nn.Module
    trainer: Trainer | None
    kind: str = "generate"

    def render(self, cameras, resolution: int = 64, geometry: bool = False) -> dict:
        """Deterministic renders (no sample jitter); depth and normals only when `geometry`."""
        with torch.no_grad():
            out = self.model.render(cameras, resolution, resolution, geometry=geometry, perturb=False)
        return {k: v.cpu() for k, v in out.items()}


LOCK_FILE = ".t3d.lock"


def lock_run(run_dir: Path):
    """An OS lock on `run_dir` (an open file; the lock goes when it is closed or the process dies, even by kill
    -9), so two processes cannot resume one run at once; a one-line error naming the holder when it is taken."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    handle = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ThreeDistillError(
            f"{run_dir} is in use by {holder}; wait for it to finish (or stop it) before resuming"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"t3d process {os.getpid()}")
    handle.flush()
    return handle


class RunSession:
    """The run directory and bookkeeping of one run of `kind` (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        cfg,
        run_dir: Path,
        resuming: bool,
        log: Callable[[str], None] = print,
        made: Iterable[Path] = (),
    ):
        self.kind, self.cfg, self.dir, self.resuming, self.log = kind, cfg, Path(run_dir), resuming, log
        self._lock = lock_run(self.dir)  # released when the session ends (`with`), is dropped or its process dies
        self.started = time.time()
        self.training = False  # set when `train` first runs: from then on the folder is the run's, whatever happens
        self.made = list(made)  # the folders above a new run's that `start` made (removed with a failed run)

    def __enter__(self) -> "RunSession":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """A new run that fails (or is stopped) before its training starts leaves no folder behind: it holds only
        the config and would show up among the runs as one that never ran (a bad prior, an unreadable model).
        A resumed run, or one that reached its training, is kept whatever happens, so it can be resumed."""
        if self._lock is not None:  # the session ends here: another process may resume the run from now on
            self._lock.close()
            self._lock = None
        if error is None or self.resuming or self.training:  # a new run's checkpoints come from its training
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        for folder in self.made:  # e.g. --out's <prompt> folder, unless another run has appeared in it meanwhile
            try:
                folder.rmdir()
            except OSError:
                break

    @classmethod
    def start(cls, kind: str, cfg, parent: Path, method: str, log=print) -> "RunSession":
        """A new run: parent/<method>@<timestamp>/ with config.yaml (the resolved config) and run.json. A config
        with a `resolve_paths()` method has it called first: the files it names by relative paths are saved as
        absolute ones, so the run can be resumed, edited or exported from any folder."""
        if callable(getattr(cfg, "resolve_paths", None)):
            cfg.resolve_paths()
        made = [p for p in [Path(parent), *Path(parent).parents] if not p.exists()]  # deepest first
        run_dir = new_run_dir_at(parent, method)
        save_config(cfg, run_dir / "config.yaml")
        write_json(run_dir / RUN_FILE, {"kind": kind}, indent=None)
        return cls(kind, cfg, run_dir, resuming=False, log=log, made=made)

    @classmethod
    def resume(cls, kind: str, cfg, run_dir: Path, log=print) -> "RunSession":
        """An existing run directory of `kind` (see `expect_run_kind`) whose saved config is `cfg`."""
        return cls(kind, cfg, run_dir, resuming=True, log=log)

    def setup(self, device: str, native: str | None, seed: int) -> tuple[torch.device, torch.Generator]:
        """Device, native-kernel mode and global seed of the run; returns the device and a generator seeded with
        `seed` for building the model."""
        resolved = resolve_device(device)
        native_kernels.set_mode(native)
        torch.manual_seed(seed)
        return resolved, torch.Generator().manual_seed(seed)

    def has_checkpoint(self) -> bool:
        """Whether the run wrote a checkpoint (a run killed before its first one restarts from step 0)."""
        return (self.dir / "checkpoints" / "latest.json").is_file()

    def restore(self, trainer: Trainer, step_offset: int = 0) -> None:
        """Resume `trainer` from the run's latest checkpoint (nothing for a new run)."""
        if self.resuming and not self.has_checkpoint():
            self.log(f"{self.dir} stopped before its first checkpoint: starting it again from step 0")
        elif self.resuming:
            trainer.load_checkpoint(self.dir)
            self.log(f"resuming {self.dir} at step {step_offset + trainer.step}")

    def train(
        self,
        trainer: Trainer,
        progress: bool = True,
        stop_at: int | None = None,
        preview: Callable[[int], None] | None = None,
        on_step: Callable[[int, dict], None] | None = None,
    ) -> bool:
        """Run `trainer` to its end (or `stop_at`); True when it reached its last step."""
        self.training = True
        trainer.fit(progress=progress, stop_at=stop_at, preview=preview, on_step=on_step)
        return trainer.step == trainer.cfg.steps

    def finish(self, metrics: dict | None = None) -> dict:
        """Merge `metrics` and the session's wall time (added to a resumed run's) into metrics.json."""
        return update_metrics(self.dir, metrics, add_seconds=time.time() - self.started)
