"""Builds the embedded toy priors' components (word tokenizer, small CLIP text encoder, UNet, VAE for the latent
prior, noise schedule) from plain settings, as standard transformers / diffusers classes so they save in the
same on-disk layout as Stable Diffusion or DeepFloyd IF and load through the same code."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch

from ...prompting import VIEW_SUFFIXES
from ..catalogue import COLOURS, OBJECTS

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
MAX_TOKENS = 12


def toy_vocabulary() -> list[str]:
    words = {"a", "an", "the", ","} | set(COLOURS) | set(OBJECTS)
    for suffix in VIEW_SUFFIXES:
        words |= set(suffix.split())
    return SPECIAL_TOKENS + sorted(words)


def build_tokenizer(vocabulary: list[str] | None = None, max_length: int = MAX_TOKENS, **options):
    """A word-level fast tokenizer over `vocabulary` (default `toy_vocabulary()`; it must hold [PAD], [BOS], [EOS]
    and [UNK]): lower-cased, punctuation split off, [BOS] ... [EOS], padded to `max_length`; `options` go to
    PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary or toy_vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="[BOS]",
        eos_token="[EOS]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        model_max_length=max_length,
        **options,
    )


def build_text_encoder(vocab_size: int, width: int = 64, layers: int = 2, heads: int = 4):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MAX_TOKENS,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        projection_dim=width,
    )
    return CLIPTextModel(config)


def norm_groups(channels, most: int = 16) -> int:
    """GroupNorm group count that divides every channel count (16 for the shipped sizes, fewer for tiny tests)."""
    return math.gcd(most, *channels)


def build_unet(
    resolution: int,
    channels=(32, 64, 64),
    layers_per_block: int = 2,
    text_width: int = 64,
    in_channels: int = 3,
    attention_levels: int = 1,
):
    """A UNet2DConditionModel on `in_channels` x resolution² inputs (pixels, or VAE latents), with
    cross-attention at the `attention_levels` lowest resolutions (and in the middle block)."""
    from diffusers import UNet2DConditionModel

    n = len(channels)
    return UNet2DConditionModel(
        sample_size=resolution,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=tuple(channels),
        down_block_types=("DownBlock2D",) * (n - attention_levels) + ("CrossAttnDownBlock2D",) * attention_levels,
        up_block_types=("CrossAttnUpBlock2D",) * attention_levels + ("UpBlock2D",) * (n - attention_levels),
        layers_per_block=layers_per_block,
        cross_attention_dim=text_width,
        attention_head_dim=8,
        norm_num_groups=norm_groups(channels),
    )


def build_vae(resolution: int, channels=(16, 32, 64), latent_channels: int = 4, layers_per_block: int = 1):
    """A Stable-Diffusion-style AutoencoderKL: each channel level after the first halves the size, so three
    levels map 32 px images to 8x8 latents (SD: four levels, 512 px -> 64x64)."""
    from diffusers import AutoencoderKL

    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=tuple(channels),
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=layers_per_block,
        norm_num_groups=norm_groups(channels),
        sample_size=resolution,
    )


def build_scheduler(
    beta_schedule: str = "squaredcos_cap_v2", prediction_type: str = "epsilon", clip_sample: bool = True
):
    """The training noise schedule; `clip_sample` keeps sampled pixels in [-1, 1] (off for latents, which are
    not bounded)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=clip_sample,
        clip_sample_range=1.0,
    )


def _save_module(module, directory: Path, dtype: torch.dtype | None) -> None:
    """save_pretrained, optionally as a `dtype` copy (float16 halves the files; the loader casts back)."""
    if dtype is not None and next(module.parameters()).dtype != dtype:
        copied = copy.deepcopy(module)  # .half() / .float() cast floating tensors only (not CLIP's position ids)
        module = copied.half() if dtype == torch.float16 else copied.float()
    module.save_pretrained(directory)


def save_pipeline(
    directory: str | Path,
    unet,
    text_encoder,
    tokenizer,
    scheduler,
    extra: dict | None = None,
    vae=None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write a diffusers-layout directory: model_index.json + unet/ scheduler/ text_encoder/ tokenizer/ [vae/]
    (with a VAE, Stable Diffusion's layout); weights in `dtype` if given."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _save_module(unet, root / "unet", dtype)
    _save_module(text_encoder, root / "text_encoder", dtype)
    if vae is not None:
        _save_module(vae, root / "vae", dtype)
    tokenizer.save_pretrained(root / "tokenizer")
    scheduler.save_pretrained(root / "scheduler")
    kind = "Latent" if vae is not None else "Pixel"
    index = {
        "_class_name": f"ToyWorld{kind}Pipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", type(unet).__name__],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": ["transformers", type(text_encoder).__name__],
        "tokenizer": ["transformers", type(tokenizer).__name__],
    }
    if vae is not None:
        index["vae"] = ["diffusers", type(vae).__name__]
    if extra:
        index["threedistill"] = extra
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
