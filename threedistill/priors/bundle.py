"""A small CPU prior started without diffusers and transformers: what a run needs from them, kept in the user cache.

Importing diffusers (it imports torch._dynamo, peft and transformers' CLIP) and building the pipeline's components
takes about 3 s of a default `t3d generate`, longer than anything else but the optimisation (2 cores; issue #26,
docs/benchmarks/performance.md). For a prior small enough for the traced UNet (priors/graph.py), without a VAE,
2D, on the CPU, with a `tokenizers` tokenizer.json, the first process that loads it in full also writes a bundle:
- `meta.json`: the noise schedule (alphas_cumprod, as float32 values), the prediction type, the UNet's sample size,
  channels and parameter count;
- `text-<n>.pt`: the text encoder traced for batches of n prompts, kept only when it gives the eager encoder's
  output bit for bit on the prompts it was traced with.
Its traced UNet graphs go to the graph cache (priors/graph.py) under the same identity. A later process finds the
bundle by the identity of the prior's files (their names and bytes) and of the installed torch, diffusers,
transformers and tokenizers, and starts from it: the tokenizer from tokenizer.json, the text encoder and the UNet
from their graphs. Whatever the bundle does not hold (a batch size never traced, a call with gradient, a method that
adapts the UNet) loads the full component then, the same as without a bundle; results are the same bits either way.
Caches are written atomically; a damaged or foreign file is ignored and written again."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from ..utils.cache import cache_dir, cache_key, installed_version
from ..utils.files import atomic_path, atomic_write, read_json

# Priors whose files add up to more than this are not hashed at every load (a real model's gigabytes).
MAX_BUNDLE_BYTES = 200_000_000
META_VERSION = 1


def prior_identity(root: Path) -> str | None:
    """A hash of the prior folder's files (relative names and bytes) and of the libraries that read them; None for a
    folder too large to hash at every load."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if sum(p.stat().st_size for p in files) > MAX_BUNDLE_BYTES:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    versions = {d: installed_version(d) for d in ("torch", "diffusers", "transformers", "tokenizers")}
    return cache_key(files=h.hexdigest(), versions=versions, meta=META_VERSION)


def eligible(root: Path, index: dict, device: torch.device, multiview: bool) -> bool:
    """Whether a bundle can stand in for this prior's components: CPU, no VAE, 2D, a tokenizers tokenizer.json."""
    return (
        device.type == "cpu"
        and "vae" not in index
        and not multiview
        and (root / "tokenizer" / "tokenizer.json").is_file()
        and index.get("text_encoder", [None, None])[1] == "CLIPTextModel"
    )


class LeanTokenizer:
    """The part of a transformers tokenizer the prior uses, read from tokenizer.json with `tokenizers` alone: ids
    padded and cut to `model_max_length`, the unknown token, and decoding."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        config = (
            read_json(folder / "tokenizer_config.json", "tokenizer_config.json")
            if (folder / "tokenizer_config.json").is_file()
            else {}
        )
        self._plain = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._plain.no_padding()
        self._plain.no_truncation()
        self.model_max_length = int(config.get("model_max_length", 77))
        pad = config.get("pad_token")
        self.pad_token_id = self._plain.token_to_id(pad) if isinstance(pad, str) else None
        unk = config.get("unk_token")
        self.unk_token_id = self._plain.token_to_id(unk) if isinstance(unk, str) else None
        self.valid = isinstance(self.pad_token_id, int)
        self._fixed = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._fixed.enable_truncation(max_length=self.model_max_length)  # keeps the special tokens, as transformers
        if self.valid:
            self._fixed.enable_padding(length=self.model_max_length, pad_id=self.pad_token_id, pad_token=pad)

    def ids(self, texts: list[str]) -> torch.Tensor:
        """(B, model_max_length) token ids, as `tokenizer(texts, padding="max_length", truncation=True)` gives."""
        return torch.tensor([e.ids for e in self._fixed.encode_batch(texts)], dtype=torch.long)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._plain.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._plain.decode(ids, skip_special_tokens=skip_special_tokens)


class PriorBundle:
    """The cached stand-ins of one prior's components (see the module's notes)."""

    def __init__(self, identity: str):
        """Raises OSError where the cache folder cannot be made (a read-only home): the prior then loads in full."""
        self.identity = identity
        self.folder = cache_dir("prior-bundles") / identity
        self._text_graphs: dict[int, torch.jit.ScriptModule] = {}

    def meta(self) -> dict | None:
        """The bundle's meta.json, or None when it is missing or not this bundle's."""
        path = self.folder / "meta.json"
        if not path.is_file():
            return None
        try:
            meta = read_json(path, "prior bundle meta.json")
        except Exception:  # noqa: BLE001 - a damaged cache file is written again by the next full load
            return None
        counts = ("num_train_timesteps", "sample_size", "in_channels", "unet_parameters")
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        ok = (
            isinstance(meta, dict)
            and meta.get("identity") == self.identity
            and all(isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool) and meta[k] > 0 for k in counts)
            and meta.get("prediction_type") in ("epsilon", "v_prediction", "sample")
            and isinstance(meta.get("alphas_cumprod"), list)
            and len(meta["alphas_cumprod"]) == meta.get("num_train_timesteps")
            and all(number(a) for a in meta["alphas_cumprod"])
        )
        return meta if ok else None

    def write_meta(self, values: dict) -> None:
        """Record what a fully loaded prior gives its users without its components: the values `meta` checks
        (alphas_cumprod as a list of floats, num_train_timesteps, prediction_type, sample_size, in_channels,
        unet_parameters)."""
        try:
            atomic_write(self.folder / "meta.json", json.dumps({"identity": self.identity, **values}) + "\n")
        except OSError:  # a read-only or full cache: every process loads in full
            pass

    def text_file(self, batch: int) -> Path:
        return self.folder / f"text-{batch}.pt"

    def text_graph(self, batch: int):
        """The text encoder traced for `batch` prompts, or None."""
        if batch in self._text_graphs:
            return self._text_graphs[batch]
        path = self.text_file(batch)
        if not path.is_file():
            return None
        try:
            self._text_graphs[batch] = torch.jit.load(str(path), map_location="cpu")
        except Exception:  # noqa: BLE001 - a damaged cache file: the full encoder runs and writes it again
            return None
        return self._text_graphs[batch]

    def save_text_graph(self, text_encoder, ids: torch.Tensor, expected: torch.Tensor) -> None:
        """Trace `text_encoder` on `ids` and keep the graph if it gives `expected` (its eager output) bit for bit."""

        class _Hidden(torch.nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder

            def forward(self, ids):
                return self.encoder(ids).last_hidden_state

        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shape checks it keeps as constants
                graph = torch.jit.trace(_Hidden(text_encoder).eval(), (ids,), check_trace=False, strict=False)
                if not torch.equal(graph(ids), expected):
                    return
            with atomic_path(self.text_file(ids.shape[0])) as tmp:
                torch.jit.save(graph, str(tmp))
        except (OSError, RuntimeError):  # a read-only cache, or a model the tracer cannot follow: no graph kept
            pass
