"""Builders of tiny, randomly initialised diffusers pipeline directories for tests: the same on-disk layout as
Stable Diffusion 1.x/2.x (latent, VAE, CLIP tokenizer and text encoder), small enough to build in a second."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def build_clip_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz,."
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(letters) + [c + "</w>" for c in letters] + ["re", "red</w>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\n")
    tok = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=16)
    tok.save_pretrained(directory)
    return tok


def build_tiny_sd(root: Path, prediction_type: str = "epsilon") -> Path:
    """A Stable-Diffusion-shaped pipeline: 4-channel latents at 8x8 with a VAE of scale 2 (16 px native)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    tok = build_clip_tokenizer(root / "tokenizer")
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            projection_dim=32,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=16,
        sample_size=16,
    )
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
    )
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    sched.save_pretrained(root / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
    }
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def build_tiny_pixel(root: Path, prediction_type: str = "epsilon") -> Path:
    """A pixel-space pipeline built with the toy prior's own component builders, untrained, at 16 px."""
    from threedistill.toyworld.training.components import (
        build_scheduler,
        build_text_encoder,
        build_tokenizer,
        build_unet,
        save_pipeline,
    )

    torch.manual_seed(0)
    tok = build_tokenizer()
    save_pipeline(
        root,
        build_unet(16, (16, 32), 1, 32),
        build_text_encoder(len(tok), 32, 1, 2),
        tok,
        build_scheduler(prediction_type=prediction_type),
    )
    return root
