"""Loads any local diffusers pipeline directory (Stable Diffusion 1.x/2.x, DeepFloyd IF stage I, the embedded
toy prior) behind the Prior interface. Only classes from diffusers and transformers are instantiated, and
nothing is fetched from a hub: the directory must hold every component."""

from __future__ import annotations

import importlib
import os
import pickle
import re
from pathlib import Path

import torch

from ..config import packaged_asset
from ..errors import PriorLoadError, ThreeDistillError
from ..utils.cache import prior_cache_enabled
from ..utils.files import read_json
from .base import Prior, resize_to_native
from .bundle import LeanTokenizer, PriorBundle, eligible, prior_identity
from .graph import GraphUNet, LazyUNet, use_graph, weights_state
from .multiview import camera_embedding, check_camera_convention, check_multiview_unet, make_multiview

REQUIRED = ("unet", "scheduler", "text_encoder", "tokenizer")
LAYOUT_HINT = "a diffusers directory: model_index.json, unet/, scheduler/, text_encoder/, tokenizer/ [, vae/]"


EMBEDDED = ("toyworld", "toyworld-latent", "toyworld-mv")  # shipped under assets/priors (pixel, latent, multi-view)


def embedded_prior_path(name: str = "toyworld") -> Path:
    """An embedded prior by name: the copy installed with the package, else the source checkout's."""
    return packaged_asset("priors", name)


def default_prior_path() -> Path:
    """The embedded toy prior: $THREEDISTILL_PRIOR if set, else the copy installed with the package, else the
    source checkout's assets/priors/toyworld."""
    if os.environ.get("THREEDISTILL_PRIOR"):
        return Path(os.environ["THREEDISTILL_PRIOR"])
    return embedded_prior_path("toyworld")


def resolve_prior_path(path: str | Path | None) -> Path:
    """`path` if it exists; else, when it names an embedded prior ("toyworld-latent" or
    "assets/priors/toyworld-latent", so the source checkout's spelling works from an installed package too),
    that prior; None gives the default prior."""
    if path is None:
        return default_prior_path()
    path = Path(path)
    if path.exists():
        return path
    if path.name in EMBEDDED and path.parts[:-1] in ((), ("assets", "priors")):
        return embedded_prior_path(path.name)
    return path


def multiview_entry(info) -> dict | None:
    """model_index.json's `threedistill.multiview` entry as a dict (a bare number is its `num_views`), or None for
    a 2D prior; the values are checked where they are used."""
    entry = info.get("multiview") if isinstance(info, dict) else None
    return None if entry is None else entry if isinstance(entry, dict) else {"num_views": entry}


def prior_views(path: str | Path | None) -> int:
    """How many views the prior at `path` denoises jointly (its model_index.json's multiview entry; 1 for a 2D
    prior or anything unreadable, which loading then reports), read without loading a network."""
    root = resolve_prior_path(path)
    try:
        entry = multiview_entry(read_json(root / "model_index.json", "model_index.json").get("threedistill"))
    except (ThreeDistillError, AttributeError):
        return 1
    views = None if entry is None else entry.get("num_views")
    return views if isinstance(views, int) and not isinstance(views, bool) and views > 1 else 1


def load_scheduler(path: str | Path | None = None):
    """Only the noise scheduler of the prior at `path` (default: the embedded one), without its networks."""
    root = resolve_prior_path(path)
    return _load_component(root, "scheduler", _read_index(root)["scheduler"])


def _read_index(root: Path) -> dict:
    if not root.is_dir():
        raise PriorLoadError(f"prior directory not found: {root} (expected {LAYOUT_HINT})")
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise PriorLoadError(f"{index_path} is missing; a prior must be {LAYOUT_HINT}")
    index = read_json(index_path, "model_index.json", error=PriorLoadError)
    for name in REQUIRED + (("vae",) if "vae" in index else ()):
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2):
            raise PriorLoadError(f"{index_path} has no [library, class] entry for {name!r}")
        if not (root / name).is_dir():
            raise PriorLoadError(f"prior component folder {root / name} is missing ({LAYOUT_HINT})")
    return index


def _load_component(root: Path, name: str, entry: list):
    library, class_name = entry
    if library not in ("diffusers", "transformers"):
        raise PriorLoadError(f"component {name!r} comes from {library!r}; only diffusers and transformers are loaded")
    cls = getattr(importlib.import_module(library), class_name, None)
    if cls is None:
        raise PriorLoadError(f"component {name!r}: {library} has no class {class_name!r}")
    try:
        if name == "scheduler":
            return cls.from_pretrained(root, subfolder=name)
        return cls.from_pretrained(root / name, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - the libraries raise many types for a damaged component
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err):
            first = "its weights are a pickle that would run code when loaded; refused (give .safetensors weights)"
        raise PriorLoadError(f"cannot load prior component {root / name}: {first}") from None


def _quiet_libraries() -> None:
    """Silence per-load progress bars and advice (e.g. to install accelerate) from transformers/diffusers."""
    import diffusers
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()


def _token_ids(tok, text: str, add_special_tokens: bool) -> list[int]:
    """The token ids of `text`, unpadded, from a transformers tokenizer or a LeanTokenizer."""
    if isinstance(tok, LeanTokenizer):
        return tok.encode(text, add_special_tokens=add_special_tokens)
    return tok(text, add_special_tokens=add_special_tokens).input_ids


def _frozen(module, device: torch.device, dtype: torch.dtype):
    module = module.to(device)
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype)
    return module.eval().requires_grad_(False)


class DiffusersPrior(Prior):
    """A frozen diffusers pipeline directory behind the Prior interface."""

    camera_convention = "threedistill"  # a multi-view prior's: the world frame its camera condition is written in

    def __init__(
        self, path: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ):
        super().__init__()
        self.path = resolve_prior_path(path)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        index = _read_index(self.path)
        self.index = index
        self.device, self.dtype = torch.device(device), dtype
        self.info = index.get("threedistill", {})
        multiview = multiview_entry(self.info)
        # a small CPU prior starts from its cached bundle where one exists (priors/bundle.py), without diffusers
        lean = prior_cache_enabled() and dtype == torch.float32
        lean = lean and eligible(self.path, index, self.device, multiview is not None)
        identity = prior_identity(self.path) if lean else None
        try:
            self.bundle = PriorBundle(identity) if identity is not None else None
        except OSError:  # no cache folder to be had: every load is a full one
            self.bundle = None
        meta = self.bundle.meta() if self.bundle is not None else None
        tokenizer = LeanTokenizer(self.path / "tokenizer") if meta is not None else None
        if meta is not None and tokenizer.valid:
            self.tokenizer, self.vae, values = tokenizer, None, meta
        else:
            self._load_components()
            values = {
                "alphas_cumprod": self.scheduler.alphas_cumprod.to(torch.float32).tolist(),
                "num_train_timesteps": int(self.scheduler.config.num_train_timesteps),
                "prediction_type": self.scheduler.config.get("prediction_type", "epsilon"),
                "sample_size": int(self.unet.config.sample_size),
                "in_channels": int(self.unet.config.in_channels),
                "unet_parameters": sum(p.numel() for p in self.unet.parameters()),
            }
            if self.bundle is not None:
                self.bundle.write_meta(values)
        self.alphas_cumprod = torch.tensor(values["alphas_cumprod"], dtype=torch.float32, device=self.device)
        self.num_train_timesteps, self.prediction_type = values["num_train_timesteps"], values["prediction_type"]
        sample_size, self.channels = values["sample_size"], values["in_channels"]
        self._unet_parameters = values["unet_parameters"]
        self.latent = self.vae is not None
        if self.latent:
            self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.latent_scaling = float(self.vae.config.get("scaling_factor", 0.18215))
            self.native_resolution = sample_size * self.vae_scale
        else:
            self.native_resolution = sample_size
        if multiview is not None:
            where = str(self.path / "model_index.json")
            num_views = multiview.get("num_views")
            check_multiview_unet(self.unet, num_views, where)
            self.camera_convention = check_camera_convention(multiview.get("camera_convention", "threedistill"), where)
            self.num_views = num_views
            self.view_prompts = bool(multiview.get("view_prompts", False))
            make_multiview(self.unet, num_views)
            self._unet_state = weights_state(self.unet)
        self.use_graph = use_graph(self._unet_parameters, self.device)
        self._graph = self._graph_dtype = None

    _COMPONENTS = ("scheduler", "tokenizer", "text_encoder", "unet")

    def _load_components(self) -> None:
        """The pipeline's components from diffusers and transformers, those not already set."""
        _quiet_libraries()
        load = lambda n: _load_component(self.path, n, self.index[n])  # noqa: E731
        for name in self._COMPONENTS:
            if name not in self.__dict__:
                value = load(name)
                setattr(
                    self, name, _frozen(value, self.device, self.dtype) if name in ("text_encoder", "unet") else value
                )
                if name == "unet":
                    self._unet_state = weights_state(self.unet)
        if "vae" not in self.__dict__:
            self.vae = _frozen(load("vae"), self.device, self.dtype) if "vae" in self.index else None

    def __getattr__(self, name: str):
        # started from a bundle: a component is loaded in full the first time something asks for it
        if name in DiffusersPrior._COMPONENTS and "index" in self.__dict__:
            self._load_components()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        kind = "latent" if self.latent else "pixel"
        views = f", {self.num_views} views" if self.num_views > 1 else ""
        views += f" ({self.camera_convention} cameras)" if self.camera_convention != "threedistill" else ""
        return f"DiffusersPrior({self.path}, {kind}, {self.native_resolution}px, {self.prediction_type}{views})"

    def _encode_uncached(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        if isinstance(tok, LeanTokenizer):
            ids = tok.ids(texts).to(self.device)
        else:
            ids = tok(
                texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
            ).input_ids.to(self.device)
        graph = self.bundle.text_graph(len(texts)) if self.bundle is not None else None
        if graph is not None:
            return graph(ids).to(self.dtype)
        out = self.text_encoder(ids).last_hidden_state
        if self.bundle is not None:
            self.bundle.save_text_graph(self.text_encoder, ids, out)
        return out.to(self.dtype)

    def prompt_warnings(self, text: str) -> list[str]:
        """Words the tokenizer maps to its unknown token, and the words cut off by its length limit."""
        tok = self.tokenizer
        out = []
        if tok.unk_token_id is not None:
            words = re.findall(r"[\w']+|[^\w\s]", text)
            unknown = [w for w in words if tok.unk_token_id in _token_ids(tok, w, add_special_tokens=False)]
            if unknown:
                toy = isinstance(self.info, dict) and "trained_steps" in self.info  # trained here: a toy prior
                real = "; it knows the toy world only (--prior PATH takes a real model)" if toy else ""
                out.append(
                    f"the prior {self.path.name} does not know the words {', '.join(dict.fromkeys(unknown))} of "
                    f"{text!r}; they are read as unknown{real}"
                )
        ids = _token_ids(tok, text, add_special_tokens=True)
        limit = int(tok.model_max_length)
        if len(ids) > limit:
            kept = tok.decode(ids[:limit], skip_special_tokens=True)
            out.append(
                f"the prompt is {len(ids)} tokens, the prior {self.path.name} reads {limit}: only {kept!r} is used"
            )
        return out

    def to_diffusion_space(self, rgb: torch.Tensor) -> torch.Tensor:
        x = resize_to_native(rgb, self.native_resolution).to(self.device, self.dtype) * 2.0 - 1.0
        if not self.latent:
            return x
        return self.vae.encode(x).latent_dist.sample() * self.latent_scaling

    def from_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        if self.latent:
            x = self.vae.decode(x / self.latent_scaling).sample
        return ((x + 1.0) / 2.0).clamp(0, 1)

    @property
    def graph(self) -> GraphUNet | None:
        """The traced, thread-split runner of this prior's frozen UNet (priors/graph.py), where it applies (a small
        model on the CPU); None runs the UNet directly. Set `use_graph = False` to turn it off."""
        if not self.use_graph:
            return None
        # a graph records the precision it was traced at: a new runner after `set_precision`
        if self._graph is None or self._graph_dtype != self.compute_dtype:
            loaded = lambda: (self.__dict__["unet"], self._unet_state) if "unet" in self.__dict__ else None  # noqa: E731
            self._graph = GraphUNet(
                LazyUNet(loaded, lambda: self.unet),
                self.autocast,
                group=self.num_views,
                identity=None if self.bundle is None else self.bundle.identity,
                exact=self.compute_dtype == torch.bfloat16,
            )
            self._graph_dtype = self.compute_dtype
        return self._graph

    def _unet(self, x_t, t, embeddings, **cond):
        return self.unet_output(None, x_t, t, embeddings, **cond)

    def unet_output(self, unet, x_t, t, embeddings, **cond) -> torch.Tensor:
        """Raw output of `unet` (this prior's UNet, or None for it, or an adapted copy, e.g. VSD's LoRA particle
        model)."""
        if self.num_views > 1:
            cameras = camera_embedding(self.view_cameras(x_t.shape[0]), self.camera_convention)
            cond = {"class_labels": cameras.to(self.device, self.dtype)} | cond
        x_t, t, embeddings = x_t.to(self.dtype), t.to(self.device), embeddings.to(self.dtype)
        own = unet is None or unet is self.__dict__.get("unet")
        graph = self.graph if own else None
        if graph is not None and graph.applies(x_t, embeddings, cond):
            out = graph(x_t, t, embeddings, **cond)
        else:
            unet = self.unet if unet is None else unet
            with self.autocast():
                out = unet(x_t, t, encoder_hidden_states=embeddings, **cond).sample
        out = out.to(self.dtype)
        if out.shape[1] == 2 * x_t.shape[1]:  # learned variance (DeepFloyd IF): the first half is epsilon
            out = out[:, : x_t.shape[1]]
        return out
