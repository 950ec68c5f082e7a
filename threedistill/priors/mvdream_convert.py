"""The official MVDream checkpoint (Shi et al. 2023, `sd-v2.1-base-4view.pt`) as a multi-view prior directory.

What is read: the LDM-style state dict bytedance/MVDream's `LatentDiffusionInterface` saves (`mvdream/ldm/
interface.py`, config `mvdream/configs/sd-v2-base.yaml`): the UNet (`MultiViewUNetModel`) under
`model.diffusion_model.*`, its camera MLP under `model.diffusion_model.camera_embed.{0,2}.*` (Linear(16, 1280),
SiLU, Linear(1280, 1280), added to the timestep embedding), and the frozen SD 2.1-base VAE and OpenCLIP text
encoder beside them (`first_stage_model.*`, `cond_stage_model.*`, not used: they are SD 2.1-base's own, taken from
the `base` directory). A `.pt`/`.ckpt`/`.pth` file is read with `torch.load(weights_only=True)` only, so a pickle
of Python objects is refused, never run; `.safetensors` with `safetensors.torch.load_file`; a state dict nested
under "state_dict" and a bare UNet state dict (keys `input_blocks.*`, `camera_embed.*`) are accepted too.

What is written (`priors/multiview.py`'s layout, `DiffusersPrior` loads it): `unet/` a `UNet2DConditionModel` of
the base's UNet config plus `class_embed_type="projection"` and `projection_class_embeddings_input_dim=16`
(`camera_embed.0` -> `class_embedding.linear_1`, `camera_embed.2` -> `class_embedding.linear_2`), its other weights
mapped by diffusers' own LDM converter (`diffusers.loaders.single_file_utils.convert_ldm_unet_checkpoint`), and
`sample_size` set for MVDream's 256 px; `scheduler/`, `text_encoder/`, `tokenizer/`, `vae/` copied from the base
SD 2.1-base diffusers directory; `model_index.json` with `"threedistill": {"multiview": {"num_views": 4,
"camera_convention": "mvdream"}}`. MVDream's attention over the views (`BasicTransformerBlock3D`: the self-
attention of every transformer block reads the tokens of all the views of a set) has no weights of its own: it
is `MultiViewAttnProcessor`, set at load time. The camera convention the checkpoint expects and how our cameras
map to it: `priors/multiview.py`.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..errors import PriorLoadError, ThreeDistillError
from ..utils.files import check_writable, read_json
from .multiview import CAMERA_DIM

LDM_UNET_PREFIX = "model.diffusion_model."
CAMERA_KEYS = {  # MVDream's camera MLP -> diffusers' projection class embedding (a TimestepEmbedding)
    "camera_embed.0.weight": "class_embedding.linear_1.weight",
    "camera_embed.0.bias": "class_embedding.linear_1.bias",
    "camera_embed.2.weight": "class_embedding.linear_2.weight",
    "camera_embed.2.bias": "class_embedding.linear_2.bias",
}
BASE_COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "vae")
BASE_HINT = "a local diffusers Stable Diffusion 2.1-base directory (model_index.json, unet/, vae/, text_encoder/, ...)"
RESOLUTION = 256  # MVDream's 4 views are 256 x 256 (its latents 32 x 32)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, read without unpickling any object: safetensors, or torch.load with
    weights_only (memory-mapped where the file's format allows); a dict nested under "state_dict" is unwrapped.
    Entries that are not tensors (e.g. "global_step") are dropped."""
    path = Path(path)
    if not path.is_file():
        raise ThreeDistillError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a damaged header
            raise PriorLoadError(f"cannot read {path} as safetensors: {_first_line(err)}") from None
    else:
        try:
            with warnings.catch_warnings():  # e.g. torch's note on a pickle protocol it may not read
                warnings.simplefilter("ignore")
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as err:  # a legacy (non-zip) torch file cannot be memory-mapped
                    if "mmap" not in str(err):
                        raise
                    state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            if found:
                raise PriorLoadError(
                    f"{path} is a pickle of Python objects ({found.group(1)}), which would run code when loaded; "
                    "refused. Give a plain state dict of tensors or a .safetensors file"
                ) from None
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err)) or re.search(r"(.+)", str(err))
            raise PriorLoadError(
                f"cannot read checkpoint {path}: not a state dict of tensors that loads without running code "
                f"({detail.group(1).strip() if detail else type(err).__name__}); give a plain state dict or a "
                ".safetensors file"
            ) from None
        except Exception as err:  # noqa: BLE001 - zip, EOF and format errors of a damaged file
            raise PriorLoadError(f"cannot read checkpoint {path}: {_first_line(err)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PriorLoadError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _unet_state(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The UNet's entries of a checkpoint, keyed as in the full LDM model (`model.diffusion_model.` + name)."""
    unet = {k: v for k, v in state.items() if k.startswith(LDM_UNET_PREFIX)}
    if not unet and "input_blocks.0.0.weight" in state:  # a bare UNet state dict
        unet = {LDM_UNET_PREFIX + k: v for k, v in state.items()}
    if not unet:
        sample = ", ".join(list(state)[:3]) or "none"
        raise PriorLoadError(
            f"{path} has no UNet weights: expected keys {LDM_UNET_PREFIX}* as in MVDream's sd-v2.1-base-4view.pt "
            f"(found {len(state)} tensors, e.g. {sample})"
        )
    missing = [LDM_UNET_PREFIX + k for k in CAMERA_KEYS if LDM_UNET_PREFIX + k not in unet]
    if missing:
        raise PriorLoadError(
            f"{path} lacks MVDream's camera MLP: missing {', '.join(missing)} (is it a multi-view checkpoint?)"
        )
    return unet


def _check_base(base: Path) -> dict:
    """The base directory's model_index.json, once it is a latent Stable Diffusion directory of diffusers."""
    if not base.is_dir():
        raise PriorLoadError(f"--base {base} is not a directory; expected {BASE_HINT}")
    if not (base / "model_index.json").is_file():
        raise PriorLoadError(f"--base {base} has no model_index.json; expected {BASE_HINT}")
    index = read_json(base / "model_index.json", "model_index.json", error=PriorLoadError)
    for name in ("unet",) + BASE_COMPONENTS:
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in ("diffusers", "transformers")):
            raise PriorLoadError(f"--base {base}: model_index.json has no diffusers/transformers entry for {name!r}")
        if not (base / name).is_dir():
            raise PriorLoadError(f"--base {base}: the folder {name}/ is missing; expected {BASE_HINT}")
    if index["unet"][1] != "UNet2DConditionModel":
        raise PriorLoadError(f"--base {base}: its unet is a {index['unet'][1]}, not a UNet2DConditionModel")
    if not (base / "unet" / "config.json").is_file():
        raise PriorLoadError(f"--base {base}: unet/config.json is missing")
    return index


def _scheduler_config(base: Path) -> dict:
    for name in ("scheduler_config.json", "config.json"):
        if (base / "scheduler" / name).is_file():
            return read_json(base / "scheduler" / name, "scheduler config", error=PriorLoadError)
    raise PriorLoadError(f"--base {base}: scheduler/scheduler_config.json is missing")


def unet_config(base: Path, resolution: int = RESOLUTION) -> dict:
    """The converted UNet's config: the base's (SD 2.1-base) with MVDream's camera as a projection class
    embedding, at `resolution` pixels."""
    config = read_json(base / "unet" / "config.json", "unet config", error=PriorLoadError)
    config = {k: v for k, v in config.items() if not k.startswith("_")}  # diffusers' bookkeeping
    vae = read_json(base / "vae" / "config.json", "vae config", error=PriorLoadError)
    vae_scale = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
    if config.get("class_embed_type") not in (None, "projection") or config.get("num_class_embeds"):
        raise PriorLoadError(f"--base {base}: its UNet already has a class embedding; expected SD 2.1-base's")
    config.update(
        class_embed_type="projection",
        projection_class_embeddings_input_dim=CAMERA_DIM,
        sample_size=resolution // vae_scale,
    )
    return config


def expected_shapes(config: dict) -> dict[str, torch.Size]:
    """The weight shapes of a diffusers UNet2DConditionModel of `config`, by name."""
    return dict(_shapes_of(json.dumps(config, sort_keys=True)))


@functools.lru_cache(maxsize=4)
def _shapes_of(config_json: str) -> tuple[tuple[str, torch.Size], ...]:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):  # no memory for the weights
        unet = UNet2DConditionModel.from_config(json.loads(config_json))
    return tuple((k, v.shape) for k, v in unet.state_dict().items())


def convert_unet(unet_state: dict[str, torch.Tensor], config: dict, path: str | Path) -> dict[str, torch.Tensor]:
    """MVDream's UNet weights (keys `model.diffusion_model.*`) as a diffusers UNet2DConditionModel state dict of
    `config`: diffusers' LDM converter for the SD UNet, the camera MLP to the class embedding. A one-line error
    names missing, unexpected or misshapen weights."""
    import diffusers.utils.logging as diffusers_logging
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    camera = {CAMERA_KEYS[k.removeprefix(LDM_UNET_PREFIX)]: v for k, v in unet_state.items() if _is_camera(k)}
    rest = {k: v for k, v in unet_state.items() if not _is_camera(k)}
    plain = {k: v for k, v in config.items() if k not in ("class_embed_type", "projection_class_embeddings_input_dim")}
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        converted = convert_ldm_unet_checkpoint(rest, plain)
    except Exception as err:  # noqa: BLE001 - the converter indexes the keys it expects
        raise PriorLoadError(f"{path}: diffusers cannot convert its UNet ({_first_line(err)})") from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    converted = {k: v for k, v in converted.items() if v is not None} | camera
    used = {id(v) for v in converted.values()}
    unexpected = [k for k, v in rest.items() if id(v) not in used]
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in converted]
    if missing:
        raise PriorLoadError(
            f"{path}: the UNet lacks {len(missing)} of its {len(expected)} weights, e.g. "
            f"{', '.join(_ldm_name(k) for k in missing[:3])} (a truncated file, or not an MVDream checkpoint)"
        )
    wrong = [
        (k, tuple(converted[k].shape), tuple(shape)) for k, shape in expected.items() if converted[k].shape != shape
    ]
    if wrong:
        key, got, want = wrong[0]
        raise PriorLoadError(
            f"{path}: {len(wrong)} UNet weights do not fit the base's UNet, e.g. {key} is {got}, the base's {want} "
            f"(sd-v2.1-base-4view needs a Stable Diffusion 2.1-base directory as --base)"
        )
    extra = unexpected + [k for k in converted if k not in expected]
    if extra:
        raise PriorLoadError(
            f"{path}: {len(extra)} UNet weights have no place in an MVDream UNet, e.g. {', '.join(extra[:3])} "
            f"(another model, e.g. ImageDream, is not supported)"
        )
    return converted


def _is_camera(key: str) -> bool:
    return key.removeprefix(LDM_UNET_PREFIX) in CAMERA_KEYS


def _ldm_name(diffusers_key: str) -> str:
    """The checkpoint's name of a diffusers UNet key where it is one of the fixed ones, else the diffusers name."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    fixed = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"] | {v: k for k, v in CAMERA_KEYS.items()}
    if diffusers_key in fixed:
        return LDM_UNET_PREFIX + fixed[diffusers_key]
    return f"{diffusers_key} (diffusers name)"


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ThreeDistillError(f"--out {out} exists and is not empty; give a new or empty directory")


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx", ".onnx_data")


def _unused_weight_files(directory: str, names: list[str]) -> set[str]:
    """Files of a base component the loader does not read: other frameworks' weights, and, beside a full-precision
    .safetensors file, pickled copies and variants (`*.fp16.safetensors`) of it."""
    weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES)]
    plain = [n for n in weights if n.endswith(".safetensors") and n.count(".") == 1]
    skip = {n for n in weights if n.endswith((".msgpack", ".h5", ".onnx", ".onnx_data"))}
    if plain:
        skip |= {n for n in weights if n not in plain}
    return skip


def _save_unet(directory: Path, config: dict, weights: dict[str, torch.Tensor]) -> None:
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    with torch.device("meta"):
        UNet2DConditionModel.from_config(config).save_config(directory)
    seen: set[tuple[int, int]] = set()
    tensors = {}
    for key, value in weights.items():
        value = value.contiguous()
        ident = (value.untyped_storage().data_ptr(), value.storage_offset())
        tensors[key] = value.clone() if ident in seen else value  # safetensors refuses tensors sharing memory
        seen.add(ident)
    save_file(tensors, str(directory / "diffusion_pytorch_model.safetensors"))


def convert_mvdream(
    checkpoint: str | Path,
    base_dir: str | Path,
    out_dir: str | Path,
    num_views: int = 4,
    resolution: int = RESOLUTION,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the multi-view prior directory `out_dir` from MVDream's UNet `checkpoint` and the SD 2.1-base
    diffusers directory `base_dir` (its scheduler, text encoder, tokenizer and VAE, which MVDream keeps frozen).
    Returns `out_dir`; `t3d prior convert-mvdream` is this. One-line errors (ThreeDistillError) for a missing
    file, a pickle of objects, missing or misshapen weights, a base that is not a diffusers SD directory, or an
    `out_dir` that exists and is not empty."""
    import diffusers

    log = log or (lambda _msg: None)
    checkpoint, base, out = Path(checkpoint), Path(base_dir), Path(out_dir)
    if not isinstance(num_views, int) or isinstance(num_views, bool) or not 1 <= num_views <= 16:
        raise ThreeDistillError(f"--num-views must be a whole number in 1..16, got {num_views!r}")
    if not isinstance(resolution, int) or resolution < 8:
        raise ThreeDistillError(f"resolution must be a whole number of pixels, got {resolution!r}")
    if not checkpoint.is_file():
        raise ThreeDistillError(f"checkpoint not found: {checkpoint}")
    _check_out(out)
    check_writable(out)
    index = _check_base(base)
    prediction = _scheduler_config(base).get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise PriorLoadError(
            f"--base {base}: its scheduler predicts {prediction!r}; MVDream predicts epsilon, as SD 2.1-base does "
            "(SD 2.1 at 768 px is v-prediction: use the -base model)"
        )
    config = unet_config(base, resolution)
    log(f"reading {checkpoint}")
    unet_state = _unet_state(load_checkpoint(checkpoint), checkpoint)
    weights = convert_unet(unet_state, config, checkpoint)
    log(f"converted {len(weights)} UNet tensors ({sum(v.numel() for v in weights.values()) / 1e6:.0f}M parameters)")

    tmp = out.parent / f".{out.name}.converting-{os.getpid()}"  # renamed to `out` when complete
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "unet").mkdir(parents=True)
        _save_unet(tmp / "unet", config, weights)
        for name in BASE_COMPONENTS:  # links (a hub cache's blobs) are copied as files
            shutil.copytree(base / name, tmp / name, ignore=_unused_weight_files)
        model_index = {
            "_class_name": "ThreeDistillMultiViewPipeline",  # not a diffusers pipeline: it needs the view attention
            "_diffusers_version": diffusers.__version__,
            "unet": ["diffusers", "UNet2DConditionModel"],
            **{name: index[name] for name in BASE_COMPONENTS},
            "threedistill": {
                "multiview": {"num_views": num_views, "camera_convention": "mvdream"},
                "converted_from": {"checkpoint": checkpoint.name, "base": str(base), "format": "mvdream"},
                "resolution": resolution,
            },
        }
        (tmp / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
        _check_out(out)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as err:
        raise ThreeDistillError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"wrote {out}: {num_views} views, {resolution} px, MVDream's camera convention")
    return out
