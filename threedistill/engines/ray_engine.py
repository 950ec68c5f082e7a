"""The `ray` engine: every task a Ray task on a cluster, a local one started on demand (its session, logs
included, under the engine's work_dir/ray) or one joined by `address`. A run whose worker process dies (killed,
out of memory, a lost node) is run again up to `max_retries` times; tasks continue from their checkpoints, so the
retried run ends as an uninterrupted one. Ray is an optional extra: `pip install 'threedistill[cluster]'`."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path

from ..errors import ThreeDistillError
from . import ENGINES, Engine

EXTRA = "pip install 'threedistill[cluster]' (or pip install ray)"


def import_ray():
    """The ray module, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise ThreeDistillError(f"--engine ray needs Ray, which is not installed: {EXTRA}") from None
    return ray


def _call(fn, task: dict, threads: int):
    """The body of a Ray task: fn(**task) on `threads` torch threads."""
    import torch

    torch.set_num_threads(threads)
    return fn(**task, threads=threads)


def short_link(target: Path) -> Path:
    """A short path (in the system's temp folder) linking to `target`: Ray's Unix sockets live in its temp folder
    and a socket's path may not exceed 107 bytes, which a batch folder's path easily does."""
    target.mkdir(parents=True, exist_ok=True)
    link = Path(tempfile.mkdtemp(prefix="t3d-ray-"))
    link.rmdir()
    link.symlink_to(target.resolve(), target_is_directory=True)
    return link


@ENGINES.register("ray")
class RayEngine(Engine):
    def __init__(self, cfg, log=print):
        super().__init__(cfg, log)
        import_ray()  # fail before anything runs

    def describe(self) -> str:
        where = f"Ray cluster at {self.cfg.address}" if self.cfg.address else "a local Ray instance"
        gpus = f", {self.cfg.gpus_per_run:g} GPU" if self.cfg.gpus_per_run else ""
        return (
            f"ray ({where}), {self.cfg.jobs} run(s) at a time, {self.cfg.cpus:g} CPU{gpus} and "
            f"{self.cfg.threads} thread(s) each, up to {self.cfg.max_retries} retries"
        )

    def _start(self, ray):
        """Connect to Ray; returns (started here, the temp link to remove)."""
        if ray.is_initialized():  # the caller's own Ray session
            return False, None
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        try:
            if self.cfg.address:
                ray.init(address=self.cfg.address, **common)
                return True, None
            work = Path(self.cfg.work_dir or ".") / "ray"
            link = short_link(work)
            ray.init(
                num_cpus=max(1, math.ceil(self.cfg.jobs * self.cfg.cpus)),
                object_store_memory=100 * 1024**2,  # results are small rows; the default takes 30% of the RAM
                _node_ip_address="127.0.0.1",  # a local instance listens on this machine only
                _temp_dir=str(link),
                **common,
            )
            self.log(f"started a local Ray instance; its logs are in {work}")
            return True, link
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {self.cfg.address}" if self.cfg.address else "a local Ray instance"
            raise ThreeDistillError(f"cannot start {where}: {str(err).splitlines()[0]}") from None

    def _check_resources(self, ray) -> None:
        """A one-line error, instead of runs waiting forever, when no node could take one run."""
        have = ray.cluster_resources()
        if self.cfg.gpus_per_run and have.get("GPU", 0) < self.cfg.gpus_per_run:
            raise ThreeDistillError(
                f"--gpus-per-run {self.cfg.gpus_per_run:g}, but the Ray cluster has {have.get('GPU', 0):g} GPU(s)"
            )
        if have.get("CPU", 0) < self.cfg.cpus:
            raise ThreeDistillError(
                f"--cpus-per-run {self.cfg.cpus:g}, but the Ray cluster has {have.get('CPU', 0):g} CPU(s)"
            )

    def run(self, fn, tasks, report, fresh_process=False):
        ray = import_ray()
        if not tasks:
            return
        started, link = self._start(ray)
        try:
            self._check_resources(ray)
            remote = ray.remote(
                num_cpus=self.cfg.cpus,
                num_gpus=self.cfg.gpus_per_run,
                max_retries=self.cfg.max_retries,
                retry_exceptions=False,  # an error of the run itself (bad input, a bug) is not retried
                max_calls=1 if fresh_process else 0,
            )(_call)
            threads = self.cfg.threads
            pending = {remote.remote(fn, task, threads): i for i, task in enumerate(tasks)}
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        index = pending.pop(ref)
                        report(self._result(ray, ref, tasks[index]))
            finally:
                for ref in pending:  # an error (or ^C): the queued runs are cancelled, not all run first
                    ray.cancel(ref, force=True)
        finally:
            if started:
                ray.shutdown()
            if link is not None:
                link.unlink(missing_ok=True)

    def _result(self, ray, ref, task: dict):
        errors = ray.exceptions
        try:
            return ray.get(ref)
        except errors.RayTaskError as err:  # the run raised: its own error, as if it ran here
            cause = err.cause
            if isinstance(cause, Exception) and not isinstance(cause, errors.RayError):
                raise cause from None
            raise ThreeDistillError(f"a run failed on Ray: {_first_line(cause or err)}") from None
        except (errors.WorkerCrashedError, errors.NodeDiedError) as err:
            summary = ", ".join(f"{k}={v}" for k, v in task.items() if isinstance(v, (str, int, float)))
            raise ThreeDistillError(
                f"a run's worker died {self.cfg.max_retries + 1} time(s) ({type(err).__name__}; task {summary}); "
                "see the Ray logs, or raise --max-retries"
            ) from None
        except errors.RayError as err:
            raise ThreeDistillError(f"Ray failed: {_first_line(err)}") from None


def _first_line(err) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
