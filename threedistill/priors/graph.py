"""A faster way to run a small frozen UNet on the CPU, with the same numbers as running it directly.

A toy-sized UNet on the CPU spends much of each call in Python (hundreds of module calls) and uses the second
core poorly (2 threads run it only ~1.2x faster than 1). So, for calls without gradient:
- the UNet is traced once per input signature under the prior's autocast and frozen (TorchScript): the autocast
  casts are recorded in the graph, so its output is bitwise the eager output (tested);
- the batch is cut into one chunk per thread (at multiples of the views of a multi-view set, so a set is never
  cut), each chunk runs its graph on one thread, and the chunks run at the same time (a frozen graph releases
  the GIL while it runs).
Same input, same threads, same output: in bfloat16 (the default) the direct call's bits, on any thread count; in
float32 the direct call's up to the last bits (float32 convolutions round differently with the batch they get and
the threads they run on, directly too).
`t3d bench perf` times it against the direct call; `DiffusersPrior` uses it where `use_graph` says so."""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

# UNets above this many parameters run directly: their convolutions use the threads well already, and tracing
# a large model costs seconds of set-up for little gain.
GRAPH_MAX_PARAMETERS = 50_000_000


def use_graph(unet: torch.nn.Module, device: torch.device) -> bool:
    """Whether `GraphUNet` should run this UNet: a small model on the CPU."""
    return device.type == "cpu" and sum(p.numel() for p in unet.parameters()) <= GRAPH_MAX_PARAMETERS


class _Call(torch.nn.Module):
    """The UNet with positional inputs and a tensor output (what tracing needs)."""

    def __init__(self, unet: torch.nn.Module, cond_names: tuple[str, ...]):
        super().__init__()
        self.unet, self.cond_names = unet, cond_names

    def forward(self, x, t, embeddings, *cond):
        return self.unet(x, t, encoder_hidden_states=embeddings, return_dict=False, **dict(zip(self.cond_names, cond)))[
            0
        ]


def _chunks(batch: int, parts: int, group: int) -> list[tuple[int, int]]:
    """Up to `parts` (start, stop) ranges covering `batch`, each a multiple of `group` long."""
    sets = batch // group
    parts = max(1, min(parts, sets))
    bounds = [round(i * sets / parts) * group for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class GraphUNet:
    """Runs a frozen UNet through traced, frozen graphs, one per input signature, over the batch split across
    threads (traced again if its weights change). `__call__` returns the UNet's raw output tensor."""

    # Tracing costs about 0.7 s and saves about 6 ms a call (the toy prior, 2 cores): a signature is traced only
    # after this many direct calls, so short runs (tests, a few sampling steps) never pay for it.
    warmup_calls = 20

    def __init__(self, unet: torch.nn.Module, autocast, group: int = 1):
        self.unet, self.autocast, self.group = unet, autocast, group
        self._graphs: dict[tuple, torch.jit.ScriptModule] = {}
        self._calls: dict[tuple, int] = {}
        self._state = self._weights_state()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def applies(self, x: torch.Tensor, embeddings: torch.Tensor, cond: dict) -> bool:
        """Only calls without gradient whose text embeddings and extra conditions are tensors with one row per
        image (what the batch can be cut along), once their signature has been called `warmup_calls` times."""
        batch = x.shape[0]
        if not (
            not torch.is_grad_enabled()
            and batch % self.group == 0
            and embeddings.shape[0] == batch
            and all(isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == batch for v in cond.values())
        ):
            return False
        key = (tuple(x.shape), tuple(embeddings.shape), tuple(sorted((k, tuple(v.shape)) for k, v in cond.items())))
        self._calls[key] = self._calls.get(key, 0) + 1
        return self._calls[key] > self.warmup_calls

    def _weights_state(self) -> tuple[int, int]:
        """Changes when the UNet's weights are written in place or parameters are added (e.g. an adapter): a frozen
        graph holds the weights it was traced with, so it is traced again then."""
        params = list(self.unet.parameters())
        return len(params), sum(p._version for p in params)

    def _graph(self, x, t, embeddings, cond_names, cond):
        key = (tuple(x.shape), x.dtype, tuple(embeddings.shape), embeddings.dtype, cond_names)
        key += tuple((tuple(c.shape), c.dtype) for c in cond)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                call = _Call(self.unet, cond_names).eval()
                previous = torch._C._jit_set_autocast_mode(False)  # record autocast's casts, do not re-apply them
                try:
                    with torch.no_grad(), self.autocast(), warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # the tracer's notes on shape checks it keeps as constants
                        graph = torch.jit.freeze(
                            torch.jit.trace(call, (x, t, embeddings, *cond), check_trace=False), optimize_numerics=False
                        )
                finally:
                    torch._C._jit_set_autocast_mode(previous)
                self._graphs[key] = graph
        return graph

    def __call__(self, x: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, **cond) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.ndim == 0 or t.numel() == 1 else t
        names = tuple(sorted(cond))
        values = [cond[n] for n in names]
        threads = torch.get_num_threads()
        state = self._weights_state()  # once a call: a frozen graph holds the weights it was traced with
        with self._lock:
            if state != self._state:
                self._graphs.clear()
                self._state = state
        ranges = _chunks(x.shape[0], threads, self.group)
        pieces = [(x[a:b], t[a:b], embeddings[a:b], *[v[a:b] for v in values]) for a, b in ranges]
        graphs = [self._graph(p[0], p[1], p[2], names, p[3:]) for p in pieces]
        if len(pieces) == 1:
            return graphs[0](*pieces[0])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="t3d-unet")

        def run(graph, args):
            torch.set_num_threads(1)
            with torch.no_grad():
                return graph(*args)

        try:
            futures = [self._pool.submit(run, g, p) for g, p in zip(graphs, pieces)]
            return torch.cat([f.result() for f in futures])
        finally:
            torch.set_num_threads(threads)
