"""Ending a command's process quickly. Freeing the modules of torch, diffusers and transformers one by one at
interpreter exit takes 1.3-1.5 s on 2 cores after every command (docs/benchmarks/performance.md); `exit_now`
does what a normal exit does first, then ends the process without that teardown."""

from __future__ import annotations

import atexit
import os
import sys
import threading


def exit_now(code: int | str | None = 0) -> None:
    """End the process as `sys.exit(code)` would, less the interpreter's teardown: the other non-daemon threads
    are joined (a live viewer's server, a thread pool's workers), the at-exit handlers run (log files,
    temporary folders, child processes), the output is flushed; then os._exit. Only for a process's last act:
    never returns."""
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter's exit runs to join the threads
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
