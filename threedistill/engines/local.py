"""The `local` engine: every task in this process, one after the other (the reference the Ray engine is tested
against, and the one to debug with: a run's traceback is this process's)."""

from __future__ import annotations

import torch

from . import ENGINES, Engine


@ENGINES.register("local")
class LocalEngine(Engine):
    def run(self, fn, tasks, report, fresh_process=False):
        threads = torch.get_num_threads()
        try:
            for task in tasks:
                torch.set_num_threads(self.cfg.threads)
                report(fn(**task, threads=self.cfg.threads))
        finally:
            torch.set_num_threads(threads)

    def describe(self) -> str:
        return f"local, one run at a time in one process, {self.cfg.threads} thread(s) each"
