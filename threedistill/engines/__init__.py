"""Engines: what runs many independent runs (a batch of prompts, a benchmark's tasks). `local` runs them one after
the other in this process (for debugging and as the reference the other engine is tested against); `ray` runs them
on a Ray cluster, a local one started on demand or one joined by address, retrying a run whose worker died.

An engine calls `fn(**task, threads=n)` on n torch threads for every task (a dict of plain, picklable values;
`fn` a module-level function) and `report(result)` in this process as each ends, in any order. n is
`cpus_per_run` rounded down (at least 1): a run's floating-point results depend on its thread count, never on
the engine, the worker or a retry. A task that can be interrupted is written to continue from its checkpoint
when it is run again (see `workflows.generate.generate_or_resume`), so a retried run ends as an uninterrupted
one."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError
from ..registry import Registry


@dataclass
class EngineConfig:
    name: str = "local"
    jobs: int = 1  # runs at once; a local Ray instance gets jobs x cpus_per_run CPUs
    address: str | None = None  # join this Ray cluster ("auto", "HOST:PORT", "ray://HOST:PORT") instead of starting one
    cpus_per_run: float | None = None  # None: this machine's cores / jobs (at least 1)
    gpus_per_run: float = 0.0  # fractions share a GPU between runs
    max_retries: int = 3  # times a run whose worker died is run again
    work_dir: str | None = None  # where the engine's temporary files and logs go (a local Ray instance's session)

    def __post_init__(self):
        if self.name not in ENGINES:
            raise ConfigError(f"unknown engine {self.name!r}; known: {', '.join(ENGINES.names())}")
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be positive, got {self.jobs}")
        if self.cpus_per_run is not None and not self.cpus_per_run > 0:
            raise ConfigError(f"--cpus-per-run must be positive, got {self.cpus_per_run}")
        if not (self.gpus_per_run >= 0 and math.isfinite(self.gpus_per_run)):
            raise ConfigError(f"--gpus-per-run must be 0 or more, got {self.gpus_per_run}")
        if self.max_retries < 0:
            raise ConfigError(f"--max-retries must be 0 or more, got {self.max_retries}")
        if self.name == "local":
            if self.jobs > 1:
                raise ConfigError(
                    f"--engine local runs one run at a time; --jobs {self.jobs} needs --engine ray "
                    "(pip install 'threedistill[cluster]')"
                )
            if self.address:
                raise ConfigError("--address joins a Ray cluster: use it with --engine ray")
            if self.gpus_per_run:
                raise ConfigError(
                    "--gpus-per-run shares GPUs between runs of --engine ray; drop it with --engine local"
                )

    @property
    def cpus(self) -> float:
        """CPUs (cores) of one run."""
        return self.cpus_per_run if self.cpus_per_run is not None else max(1, (os.cpu_count() or 1) // self.jobs)

    @property
    def threads(self) -> int:
        """Torch threads of one run."""
        return max(1, int(self.cpus))


class Engine:
    """Runs tasks (see the module docstring); `fresh_process` asks for a new process per task, so each run's peak
    memory is its own (the local engine runs in this process and cannot)."""

    def __init__(self, cfg: EngineConfig, log: Callable[[str], None] = print):
        self.cfg, self.log = cfg, log

    def run(self, fn: Callable[..., Any], tasks: list[dict], report: Callable[[Any], None], fresh_process=False):
        raise NotImplementedError

    def describe(self) -> str:
        """How a report names the engine, e.g. "ray, 2 runs at a time, 1 CPU each"."""
        raise NotImplementedError


ENGINES: Registry[Engine] = Registry("engine")


def make_engine(cfg: EngineConfig, log: Callable[[str], None] = print) -> Engine:
    return ENGINES.build(cfg.name, cfg, log)


from . import local, ray_engine  # noqa: E402,F401  (register the engines)
