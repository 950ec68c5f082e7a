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
Tracing and freezing cost about 0.75 s (the toy prior, 2 cores), so a frozen graph is kept in the user cache
(`utils/cache.py`, folder `unet-graphs`), named by the UNet's identity (its prior's files, priors/bundle.py, or a
hash of its weights), its input signature, the autocast type and the torch and diffusers versions; a later process
loads it in about 0.05 s and gets the same bits. A file that cannot be loaded is traced again and replaced. Where
the graph gives the direct call's bits (`exact`: bfloat16), a signature already on disk skips the direct warm-up
calls, and the UNet module itself is not needed (nor loaded) until a call the graph does not take.
`t3d bench perf` times it against the direct call; `DiffusersPrior` uses it where `use_graph` says so."""

from __future__ import annotations

import hashlib
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..utils.cache import cache_dir, cache_key, installed_version, prior_cache_enabled
from ..utils.files import atomic_path

# UNets above this many parameters run directly: their convolutions use the threads well already, and tracing
# a large model costs seconds of set-up for little gain.
GRAPH_MAX_PARAMETERS = 50_000_000


def use_graph(unet: torch.nn.Module | int, device: torch.device) -> bool:
    """Whether `GraphUNet` should run this UNet (or a UNet of this many parameters): a small model on the CPU."""
    count = unet if isinstance(unet, int) else sum(p.numel() for p in unet.parameters())
    return device.type == "cpu" and count <= GRAPH_MAX_PARAMETERS


def weights_state(unet: torch.nn.Module) -> tuple[int, int]:
    """Changes when the UNet's weights are written in place or parameters are added (e.g. an adapter): a frozen
    graph holds the weights it was traced with, so it is traced again then."""
    params = list(unet.parameters())
    return len(params), sum(p._version for p in params)


class LazyUNet:
    """A UNet that may not be loaded yet: `loaded()` gives (the module, its `weights_state` when it was loaded) or
    None; `load()` loads it and returns the module."""

    def __init__(self, loaded, load):
        self.loaded, self.load = loaded, load


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

    def __init__(
        self,
        unet,
        autocast,
        group: int = 1,
        disk_cache: bool = True,
        identity: str | None = None,
        exact: bool = False,
    ):
        """`unet`: the module, or a `LazyUNet` (loaded the first time a graph must be traced or a direct call made);
        `identity`: names its weights as loaded in the disk cache (default: a hash of them); `exact`: the graph gives
        the direct call's bits, so a signature found on disk needs no warm-up."""
        if isinstance(unet, torch.nn.Module):
            loaded = (unet, weights_state(unet))
            self._source = LazyUNet(lambda: loaded, lambda: unet)
        else:
            self._source = unet
        self.autocast, self.group, self.disk_cache, self.identity = autocast, group, disk_cache, identity
        self.exact = exact
        self._graphs: dict[tuple, torch.jit.ScriptModule] = {}
        self._calls: dict[tuple, int] = {}
        self._on_disk: dict[tuple, bool] = {}
        self._state = None  # the weights the graphs hold, where they differ from the UNet's as loaded
        self._weights_digest: str | None = None
        self._lock = threading.RLock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def unet(self) -> torch.nn.Module:
        got = self._source.loaded()
        return got[0] if got is not None else self._source.load()

    @property
    def _changed(self) -> bool:
        """Whether the weights were written since loading (the identity no longer names them)."""
        return self._state is not None

    def applies(self, x: torch.Tensor, embeddings: torch.Tensor, cond: dict) -> bool:
        """Only calls without gradient whose text embeddings and extra conditions are tensors with one row per
        image (what the batch can be cut along), once their signature has been called `warmup_calls` times (at
        once where the graph is exact and its every chunk is on disk)."""
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
        if self._calls[key] > self.warmup_calls:
            return True
        if not (self.exact and not self._changed):
            return False
        names = tuple(sorted(cond))
        pieces = [
            (x[a:b], embeddings[a:b], [cond[n][a:b] for n in names])
            for a, b in _chunks(batch, torch.get_num_threads(), self.group)
        ]
        return all(self._stored(self._key(px, pe, names, pc)) for px, pe, pc in pieces)

    @staticmethod
    def _key(x, embeddings, cond_names, cond) -> tuple:
        key = (tuple(x.shape), x.dtype, tuple(embeddings.shape), embeddings.dtype, cond_names)
        return key + tuple((tuple(c.shape), c.dtype) for c in cond)

    def _stored(self, key: tuple) -> bool:
        if key not in self._on_disk:
            path = self._cache_path(key)
            self._on_disk[key] = path is not None and (key in self._graphs or path.is_file())
        return self._on_disk[key]

    def _digest(self) -> str:
        """A hash of the UNet's parameters and buffers (names, types, shapes and bytes)."""
        if self._weights_digest is None:
            h = hashlib.sha256()
            for name, value in self.unet.state_dict().items():
                value = value.detach().cpu().contiguous()
                h.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
                h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._weights_digest = h.hexdigest()
        return self._weights_digest

    def _cache_path(self, key: tuple) -> Path | None:
        """Where the frozen graph for the input signature `key` is kept across processes; None where the disk cache
        is off (`disk_cache`, $THREEDISTILL_PRIOR_CACHE) or its folder cannot be made (a read-only home)."""
        if not (self.disk_cache and prior_cache_enabled()):
            return None
        with torch.no_grad(), self.autocast():  # the type autocast computes in (None: no autocast)
            computes = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        weights = self.identity if self.identity is not None and not self._changed else self._digest()
        name = cache_key(
            weights=weights,
            signature=repr(key),
            autocast=str(computes),
            torch=torch.__version__,
            diffusers=installed_version("diffusers"),
        )
        try:
            return cache_dir("unet-graphs") / f"{name}.pt"
        except OSError:
            return None

    def _trace(self, x, t, embeddings, cond_names, cond) -> torch.jit.ScriptModule:
        call = _Call(self.unet, cond_names).eval()
        previous = torch._C._jit_set_autocast_mode(False)  # record autocast's casts, do not re-apply them
        try:
            with torch.no_grad(), self.autocast(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shape checks it keeps as constants
                return torch.jit.freeze(
                    torch.jit.trace(call, (x, t, embeddings, *cond), check_trace=False), optimize_numerics=False
                )
        finally:
            torch._C._jit_set_autocast_mode(previous)

    def _graph(self, x, t, embeddings, cond_names, cond):
        key = self._key(x, embeddings, cond_names, cond)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                path = self._cache_path(key)
                if path is not None and path.is_file():
                    try:
                        graph = torch.jit.load(str(path), map_location=x.device)
                    except Exception:  # noqa: BLE001 - a damaged cache file: trace again and replace it
                        graph = None
                if graph is None:
                    graph = self._trace(x, t, embeddings, cond_names, cond)
                    if path is not None:
                        try:
                            with atomic_path(path) as tmp:
                                torch.jit.save(graph, str(tmp))
                        except OSError:  # a read-only or full cache: this process keeps its graph
                            pass
                self._graphs[key] = graph
        return graph

    def __call__(self, x: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, **cond) -> torch.Tensor:
        t = t.expand(x.shape[0]) if t.ndim == 0 or t.numel() == 1 else t
        names = tuple(sorted(cond))
        values = [cond[n] for n in names]
        threads = torch.get_num_threads()
        # once a call: a frozen graph holds the weights it was traced with (a UNet not loaded yet is as loaded)
        got = self._source.loaded()
        state = None if got is None else weights_state(got[0])
        state = None if got is None or state == got[1] else state
        with self._lock:
            if state != self._state:
                self._graphs.clear()
                self._on_disk.clear()
                self._state, self._weights_digest = state, None
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
