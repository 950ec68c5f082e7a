"""Trains the embedded toy priors on toy-world renders (seeded, so `t3d prior train` reproduces the shipped
weights up to floating-point differences between machines): `kind: pixel` (configs/prior/toyworld.yaml) trains
a UNet on the images; `kind: latent` (configs/prior/toyworld_latent.yaml) first trains a VAE (latent.py),
then the same UNet training on its scaled latents."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ...errors import ConfigError
from ..dataset import ToyDataset
from .common import (
    WEIGHT_DTYPES,
    DiffusionData,
    PriorTrainConfig,
    clipped_step,
    dataset_images,
    ema_update,
    load_or_render_dataset,
    min_snr_loss,
    pixel_data,
    prompts_for_batch,
    sampling_probabilities,
    warmup_cosine,
)
from .components import build_scheduler, build_text_encoder, build_tokenizer, build_unet, save_pipeline
from .latent import latent_data


def train_prior(cfg: PriorTrainConfig, progress: bool = True, log=print) -> Path:
    """Train the prior `cfg` describes and save it (diffusers layout) to cfg.out; returns that directory."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = load_or_render_dataset(cfg, progress)
    images = dataset_images(data)
    if cfg.kind == "latent":
        space = latent_data(cfg, images, progress=progress, log=log)
    else:
        space = pixel_data(images)
    return train_denoiser(cfg, data, space, rng, progress=progress, log=log)


def _start_models(cfg: PriorTrainConfig, tokenizer, space: DiffusionData):
    """(text encoder, unet) in training mode: those of cfg.init_from, else freshly built from cfg."""
    if cfg.init_from:
        from ...priors.diffusers_prior import DiffusersPrior

        start_prior = DiffusersPrior(cfg.init_from)  # loaded, then trained further (frozen flags undone below)
        text_encoder, unet = start_prior.text_encoder.train(), start_prior.unet.train()
        if (unet.config.in_channels, unet.config.sample_size) != (space.channels, space.size):
            raise ConfigError(
                f"init_from {cfg.init_from}: its UNet takes {unet.config.in_channels}x"
                f"{unet.config.sample_size}², this {cfg.kind} prior needs {space.channels}x{space.size}²"
            )
        return text_encoder.requires_grad_(True), unet.requires_grad_(True)
    text_encoder = build_text_encoder(len(tokenizer), cfg.text_width, cfg.text_layers)
    unet = build_unet(
        space.size,
        cfg.channels,
        cfg.layers_per_block,
        cfg.text_width,
        in_channels=space.channels,
        attention_levels=cfg.attention_levels,
    )
    return text_encoder, unet


def train_denoiser(
    cfg: PriorTrainConfig,
    data: ToyDataset,
    space: DiffusionData,
    rng: np.random.Generator,
    progress: bool = True,
    log=print,
) -> Path:
    """Train the text encoder and UNet to predict the noise added to `space`'s x0 (the loop both kinds share):
    CFG prompt dropout, min-SNR weighting, AdamW with warm-up and cosine decay, EMA weights, snapshots."""
    tokenizer = build_tokenizer()
    text_encoder, unet = _start_models(cfg, tokenizer, space)
    scheduler = build_scheduler(cfg.beta_schedule, clip_sample=space.vae is None)
    modules = torch.nn.ModuleDict({"unet": unet, "text_encoder": text_encoder})
    ema = copy.deepcopy(modules).requires_grad_(False)
    opt = torch.optim.AdamW(modules.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_at = warmup_cosine(cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr_end)
    alphas_cumprod = scheduler.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    n_params = sum(p.numel() for p in modules.parameters())
    log(
        f"toy {cfg.kind} prior: {n_params / 1e6:.2f}M parameters, {len(data)} images at {cfg.resolution}px "
        f"(x0 {space.channels}x{space.size}²), {cfg.steps} steps"
        + (f", starting from {cfg.init_from}" if cfg.init_from else "")
    )
    out = Path(cfg.out)
    start = time.time()

    def snapshot(step: int):
        save_pipeline(
            out,
            ema["unet"],
            ema["text_encoder"],
            tokenizer,
            scheduler,
            vae=space.vae,
            dtype=WEIGHT_DTYPES[cfg.weights_dtype],
            extra={
                "trained_steps": step,
                "train_config": asdict(cfg),
                "resolution": cfg.resolution,
                "train_seconds": round(time.time() - start, 1),
            }
            | space.info,
        )

    probs = sampling_probabilities(data, cfg.object_weights)
    bar = tqdm(range(cfg.steps), desc=f"training toy {cfg.kind} prior", disable=not progress)
    for step in bar:
        idx = (
            rng.integers(0, len(data), cfg.batch_size)
            if probs is None
            else rng.choice(len(data), cfg.batch_size, p=probs)
        )
        flip = torch.from_numpy(rng.random(cfg.batch_size) < 0.5)
        x0 = space.batch(idx, flip)
        ids = tokenizer(
            prompts_for_batch(data, idx, rng, cfg),
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        t = torch.randint(0, 1000, (cfg.batch_size,))
        noise = torch.randn_like(x0)
        xt = scheduler.add_noise(x0, noise, t)
        emb = modules["text_encoder"](ids).last_hidden_state
        pred = modules["unet"](xt, t, encoder_hidden_states=emb).sample
        loss = min_snr_loss(pred, noise, t, snr, cfg.min_snr_gamma)
        clipped_step(opt, loss, modules.parameters(), lr_at(step))
        ema_update(ema, modules, step, cfg.ema_decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 50 == 0:
            log(
                json.dumps(
                    {"step": step + 1, "loss": round(loss.item(), 5), "elapsed_s": round(time.time() - start, 1)}
                )
            )
        if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0 and step + 1 < cfg.steps:
            snapshot(step + 1)
    snapshot(cfg.steps)
    log(f"saved toy {cfg.kind} prior to {out} after {time.time() - start:.0f}s")
    return out
