"""Builds the embedded toy prior's components (word tokenizer, small CLIP text encoder, pixel UNet, noise
schedule) from plain settings, as standard transformers / diffusers classes so they save in the same
on-disk layout as Stable Diffusion or DeepFloyd IF and load through the same code."""
from __future__ import annotations

import json
from pathlib import Path

from ..toyworld.catalogue import COLOURS, OBJECTS
from ..toyworld.prompts import VIEW_SUFFIXES

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
MAX_TOKENS = 12


def toy_vocabulary() -> list[str]:
    words = {"a", "an", "the", ","} | set(COLOURS) | set(OBJECTS)
    for suffix in VIEW_SUFFIXES:
        words |= set(suffix.split())
    return SPECIAL_TOKENS + sorted(words)


def build_tokenizer():
    """A word-level fast tokenizer (lower-cased, punctuation split off, [BOS] ... [EOS], padded to MAX_TOKENS)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(toy_vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]",
                                   unk_token="[UNK]", model_max_length=MAX_TOKENS)


def build_text_encoder(vocab_size: int, width: int = 64, layers: int = 2, heads: int = 4):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=MAX_TOKENS,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2, projection_dim=width)
    return CLIPTextModel(config)


def build_unet(resolution: int, channels=(32, 64, 64), layers_per_block: int = 2, text_width: int = 64):
    """A pixel-space UNet2DConditionModel with cross-attention only at the lowest resolution."""
    from diffusers import UNet2DConditionModel

    n = len(channels)
    return UNet2DConditionModel(
        sample_size=resolution, in_channels=3, out_channels=3, block_out_channels=tuple(channels),
        down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        layers_per_block=layers_per_block, cross_attention_dim=text_width, attention_head_dim=8,
        norm_num_groups=16)


def build_scheduler(beta_schedule: str = "squaredcos_cap_v2", prediction_type: str = "epsilon"):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=beta_schedule, prediction_type=prediction_type,
                         clip_sample=True, clip_sample_range=1.0)


def save_pipeline(directory: str | Path, unet, text_encoder, tokenizer, scheduler, extra: dict | None = None) -> None:
    """Write a diffusers-layout directory: model_index.json + unet/ scheduler/ text_encoder/ tokenizer/."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(root / "unet")
    text_encoder.save_pretrained(root / "text_encoder")
    tokenizer.save_pretrained(root / "tokenizer")
    scheduler.save_pretrained(root / "scheduler")
    index = {"_class_name": "ToyWorldPixelPipeline", "_diffusers_version": "0.42.1",
             "unet": ["diffusers", type(unet).__name__], "scheduler": ["diffusers", type(scheduler).__name__],
             "text_encoder": ["transformers", type(text_encoder).__name__],
             "tokenizer": ["transformers", type(tokenizer).__name__]}
    if extra:
        index["threedistill"] = extra
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
