"""Trains the embedded toy prior on toy-world renders (seeded, so `t3d prior train` reproduces the shipped
weights up to floating-point differences between machines). See configs/prior/toyworld.yaml."""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import ConfigError
from ..toyworld.catalogue import OBJECTS
from ..toyworld.dataset import ToyDataset, generate_dataset
from ..toyworld.prompts import view_prompt
from .toy_components import build_scheduler, build_text_encoder, build_tokenizer, build_unet, save_pipeline


@dataclass
class PriorTrainConfig:
    out: str = "assets/priors/toyworld"
    dataset_cache: str = "data/toyworld_dataset.npz"  # rendered once, reused while its settings match
    resolution: int = 32
    views_per_subject: int = 500
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 6e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0  # min-SNR-gamma loss weighting (Hang et al. 2023); 0 disables
    empty_prompt_prob: float = 0.1  # for classifier-free guidance
    plain_prompt_prob: float = 0.2  # prompt without a view suffix
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 2
    text_width: int = 64
    text_layers: int = 2
    beta_schedule: str = "squaredcos_cap_v2"
    snapshot_every: int = 250  # write the (EMA) pipeline every N steps so a crash loses little
    threads: int = 0  # torch threads; 0 keeps torch's default
    init_from: Optional[str] = None  # continue from the unet / text encoder of a saved prior (a second stage)
    object_weights: dict[str, float] = field(default_factory=dict)  # oversample hard objects, e.g. {robot: 3}

    def __post_init__(self):
        if self.resolution not in (16, 32, 64):
            raise ConfigError(f"resolution must be 16, 32 or 64, got {self.resolution}")
        for name in ("steps", "batch_size", "views_per_subject"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name, weight in self.object_weights.items():
            if name not in OBJECTS:
                raise ConfigError(f"object_weights: unknown object {name!r}; known: {', '.join(OBJECTS)}")
            if weight <= 0:
                raise ConfigError(f"object_weights.{name} must be positive, got {weight}")


def sampling_probabilities(data: ToyDataset, object_weights: dict[str, float]) -> np.ndarray | None:
    """Per-image sampling probability from per-object weights (None = uniform, the stage 1-3 behaviour)."""
    if not object_weights:
        return None
    per_subject = np.array([object_weights.get(obj, 1.0) for _, obj in data.subjects])
    weights = per_subject[data.subject.astype(np.int64)]
    return weights / weights.sum()


def _prompts_for_batch(data: ToyDataset, idx: np.ndarray, rng: np.random.Generator, cfg: PriorTrainConfig) -> list[str]:
    out = []
    for i in idx:
        u = rng.random()
        if u < cfg.empty_prompt_prob:
            out.append("")
        elif u < cfg.empty_prompt_prob + cfg.plain_prompt_prob:
            out.append(data.prompt(i))
        else:
            out.append(view_prompt(data.prompt(i), float(data.azimuth[i]), float(data.elevation[i])))
    return out


def load_or_render_dataset(cfg: PriorTrainConfig, progress: bool = True) -> ToyDataset:
    cache = Path(cfg.dataset_cache)
    meta = {"views_per_subject": cfg.views_per_subject, "resolution": cfg.resolution, "seed": cfg.seed}
    meta_path = cache.with_suffix(".json")
    if cache.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        return ToyDataset.load(cache)
    data = generate_dataset(cfg.views_per_subject, cfg.resolution, seed=cfg.seed, progress=progress)
    data.save(cache)
    meta_path.write_text(json.dumps(meta))
    return data


def train_prior(cfg: PriorTrainConfig, progress: bool = True, log=print) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = load_or_render_dataset(cfg, progress)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # [-1, 1]

    tokenizer = build_tokenizer()
    if cfg.init_from:
        from .diffusers_prior import DiffusersPrior

        start_prior = DiffusersPrior(cfg.init_from)  # loaded, then trained further (frozen flags undone below)
        text_encoder, unet = start_prior.text_encoder.train(), start_prior.unet.train()
        text_encoder.requires_grad_(True)
        unet.requires_grad_(True)
    else:
        text_encoder = build_text_encoder(len(tokenizer), cfg.text_width, cfg.text_layers)
        unet = build_unet(cfg.resolution, cfg.channels, cfg.layers_per_block, cfg.text_width)
    scheduler = build_scheduler(cfg.beta_schedule)
    modules = torch.nn.ModuleDict({"unet": unet, "text_encoder": text_encoder})
    ema = copy.deepcopy(modules).requires_grad_(False)
    opt = torch.optim.AdamW(modules.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_at = lambda s: cfg.lr * min(1.0, (s + 1) / cfg.warmup_steps) * (0.55 + 0.45 * math.cos(math.pi * s / cfg.steps))  # noqa: E731
    alphas_cumprod = scheduler.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    n_params = sum(p.numel() for p in modules.parameters())
    log(f"toy prior: {n_params / 1e6:.2f}M parameters, {len(data)} images at {cfg.resolution}px, {cfg.steps} steps"
        + (f", starting from {cfg.init_from}" if cfg.init_from else ""))
    out = Path(cfg.out)
    start = time.time()

    def snapshot(step: int):
        save_pipeline(out, ema["unet"], ema["text_encoder"], tokenizer, scheduler,
                      extra={"trained_steps": step, "train_config": asdict(cfg), "resolution": cfg.resolution,
                             "train_seconds": round(time.time() - start, 1)})

    probs = sampling_probabilities(data, cfg.object_weights)
    bar = tqdm(range(cfg.steps), desc="training toy prior", disable=not progress)
    for step in bar:
        idx = rng.integers(0, len(data), cfg.batch_size) if probs is None else rng.choice(len(data), cfg.batch_size, p=probs)
        x0 = images[idx]
        flip = torch.from_numpy(rng.random(cfg.batch_size) < 0.5)
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)  # mirror: every object is left-right symmetric
        ids = tokenizer(_prompts_for_batch(data, idx, rng, cfg), padding="max_length", truncation=True,
                        max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        t = torch.randint(0, 1000, (cfg.batch_size,))
        noise = torch.randn_like(x0)
        xt = scheduler.add_noise(x0, noise, t)
        emb = modules["text_encoder"](ids).last_hidden_state
        pred = modules["unet"](xt, t, encoder_hidden_states=emb).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        weight = (snr[t].clamp(max=cfg.min_snr_gamma) / snr[t]) if cfg.min_snr_gamma > 0 else torch.ones_like(per_sample)
        loss = (weight * per_sample).mean()
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), modules.parameters()):
                p_ema.lerp_(p, 1 - decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 50 == 0:
            log(json.dumps({"step": step + 1, "loss": round(loss.item(), 5), "elapsed_s": round(time.time() - start, 1)}))
        if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0 and step + 1 < cfg.steps:
            snapshot(step + 1)
    snapshot(cfg.steps)
    log(f"saved toy prior to {out} after {time.time() - start:.0f}s")
    return out
