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

from ...cameras import orbit_cameras
from ...errors import ConfigError
from ...priors.multiview import camera_embedding, multiview_unet_from
from ...prompting import view_prompt
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


def draw_batch(cfg: PriorTrainConfig, data: ToyDataset, probs, rng: np.random.Generator):
    """One training batch's (image indices, mirror flags, prompts, extra UNet inputs). Multi-view: whole sets of
    `num_views` views, each set mirrored or not as one (and its cameras with it: a mirrored view of these
    left-right symmetric objects is the view from the mirrored azimuth), plain prompts (the camera replaces the view
    suffix, as in MVDream; with `view_prompts`, each view's suffixed prompt as well), and each view's camera as the
    UNet's class label."""
    if cfg.kind != "multiview":
        n = cfg.batch_size
        idx = rng.integers(0, len(data), n) if probs is None else rng.choice(len(data), n, p=probs)
        flip = torch.from_numpy(rng.random(n) < 0.5)
        return idx, flip, prompts_for_batch(data, idx, rng, cfg), {}
    views, sets = cfg.num_views, cfg.batch_size // cfg.num_views
    first = np.arange(0, len(data), views)
    set_probs = None if probs is None else probs[first] / probs[first].sum()
    chosen = rng.integers(0, len(first), sets) if set_probs is None else rng.choice(len(first), sets, p=set_probs)
    idx = (first[chosen][:, None] + np.arange(views)).reshape(-1)
    flip_set = rng.random(sets) < 0.5
    flip = torch.from_numpy(np.repeat(flip_set, views))
    azimuth = torch.from_numpy(data.azimuth[idx]).float()
    azimuth = torch.where(flip, -azimuth, azimuth)  # the mirrored view's own azimuth
    elevation = torch.from_numpy(data.elevation[idx]).float()
    prompts = []
    for k, c in enumerate(chosen):
        u, plain = rng.random(), data.prompt(first[c])
        if u < cfg.empty_prompt_prob:
            prompts += [""] * views
        elif not cfg.view_prompts or u < cfg.empty_prompt_prob + cfg.plain_prompt_prob:
            prompts += [plain] * views
        else:
            at = range(k * views, (k + 1) * views)
            prompts += [view_prompt(plain, float(azimuth[i]), float(elevation[i])) for i in at]
    cameras = orbit_cameras(azimuth, elevation, 1.0)
    return idx, flip, prompts, {"class_labels": camera_embedding(cameras.c2w)}


def draw_timesteps(cfg: PriorTrainConfig) -> torch.Tensor:
    """Training timesteps (batch_size,) from torch's global generator: uniform in [0, 1000), or with probability
    cfg.high_noise_prob in [500, 1000); a multi-view prior's views of a set share one (MVDream)."""
    t = torch.randint(0, 1000, (cfg.batch_size,))
    if cfg.high_noise_prob > 0:
        high = torch.rand(cfg.batch_size) < cfg.high_noise_prob
        t = torch.where(high, 500 + t // 2, t)
    if cfg.kind == "multiview":
        t = t[:: cfg.num_views].repeat_interleave(cfg.num_views)
    return t


def _start_models(cfg: PriorTrainConfig, tokenizer, space: DiffusionData):
    """(text encoder, unet) in training mode: those of cfg.init_from, else freshly built from cfg."""
    if cfg.init_from:
        from ...priors.diffusers_prior import DiffusersPrior

        start_prior = DiffusersPrior(cfg.init_from)  # loaded, then trained further (frozen flags undone below)
        text_encoder, unet = start_prior.text_encoder.train(), start_prior.unet.train()
        if cfg.kind == "multiview" and start_prior.num_views == 1:
            unet = multiview_unet_from(unet, cfg.num_views).train()  # MVDream's start: a trained 2D prior
        elif start_prior.num_views != (cfg.num_views if cfg.kind == "multiview" else 1):
            raise ConfigError(
                f"init_from {cfg.init_from}: a prior of {start_prior.num_views} view(s) cannot start a {cfg.kind} "
                f"prior" + (f" of {cfg.num_views} views" if cfg.kind == "multiview" else "")
            )
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
    if cfg.kind == "multiview":
        unet = multiview_unet_from(unet, cfg.num_views)
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
    camera = [p for n, p in modules.named_parameters() if n.startswith("unet.class_embedding.")]
    rest = [p for n, p in modules.named_parameters() if not n.startswith("unet.class_embedding.")]
    groups = [{"params": rest}] + ([{"params": camera, "lr_scale": cfg.camera_lr_scale}] if camera else [])
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
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
            | space.info
            | (
                {"multiview": {"num_views": cfg.num_views, "view_prompts": cfg.view_prompts}}
                if cfg.kind == "multiview"
                else {}
            ),
        )

    probs = sampling_probabilities(data, cfg.object_weights)
    bar = tqdm(range(cfg.steps), desc=f"training toy {cfg.kind} prior", disable=not progress)
    for step in bar:
        idx, flip, prompts, extra = draw_batch(cfg, data, probs, rng)
        x0 = space.batch(idx, flip)
        ids = tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        t = draw_timesteps(cfg)
        noise = torch.randn_like(x0)
        xt = scheduler.add_noise(x0, noise, t)
        emb = modules["text_encoder"](ids).last_hidden_state
        pred = modules["unet"](xt, t, encoder_hidden_states=emb, **extra).sample
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
