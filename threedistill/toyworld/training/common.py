"""What both kinds of toy-prior training share: the training config, the data a denoiser trains on (pixels or
latents), the toy dataset and its sampling weights, the learning-rate schedule and the clipped step."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ...errors import ConfigError
from ...prompting import view_prompt
from ..catalogue import OBJECTS
from ..dataset import ToyDataset, generate_dataset

KINDS = ("pixel", "latent", "multiview")
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class VaeTrainConfig:
    """The latent prior's autoencoder (diffusers AutoencoderKL), trained before the UNet (kind: latent only)."""

    channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # each level after the first halves the size
    latent_channels: int = 4
    layers_per_block: int = 1
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    l1_weight: float = 1.0  # reconstruction loss: l1 |x - x'| + l2 (x - x')², means over pixels
    l2_weight: float = 1.0
    kl_weight: float = 1e-4  # KL(posterior || N(0, I)), mean over latent elements; small, as in SD's VAE
    holdout_views: int = 4  # views per subject rendered with another seed, for the reported PSNR; 0 skips it
    snapshot_every: int = 500  # write the VAE to <out>/vae every N steps
    init_from: Optional[str] = None  # take the trained VAE of this latent prior directory (skips VAE training)

    def check(self, resolution: int) -> None:
        """One-line ConfigError for settings the VAE cannot be built or trained with."""
        if not self.channels or any(c < 1 or c % 8 for c in self.channels):
            raise ConfigError(f"vae.channels must be a non-empty list of multiples of 8, got {self.channels}")
        if resolution % 2 ** (len(self.channels) - 1):
            raise ConfigError(
                f"vae.channels: {len(self.channels)} levels downsample by "
                f"{2 ** (len(self.channels) - 1)}, which does not divide resolution {resolution}"
            )
        for name in ("latent_channels", "layers_per_block", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"vae.{name} must be positive, got {getattr(self, name)}")
        for name in ("l1_weight", "l2_weight", "kl_weight", "holdout_views"):
            if getattr(self, name) < 0:
                raise ConfigError(f"vae.{name} must be non-negative, got {getattr(self, name)}")
        if self.l1_weight + self.l2_weight <= 0:
            raise ConfigError("vae.l1_weight + vae.l2_weight must be positive (no reconstruction loss otherwise)")


@dataclass
class PriorTrainConfig:
    out: str = "assets/priors/toyworld"
    # pixel: UNet on images; latent: VAE, then UNet on its latents (Stable Diffusion's layout); multiview: a UNet
    # on sets of `num_views` views of one object at known cameras (MVDream's layout, priors/multiview.py)
    kind: str = "pixel"
    num_views: int = 4  # multiview only: views per set, equally spaced in azimuth at one elevation
    # multiview only: the camera embedding's learning rate as a multiple of lr (it starts at zero, so at lr alone
    # the camera had moved the noise prediction by 2% after 500 steps)
    camera_lr_scale: float = 1.0
    # multiview only: prompts with each view's suffix (", back view") beside the camera, as the 2D prior's are
    # (a toy choice; MVDream gives the camera only): plain_prompt_prob of the sets get the plain prompt instead
    view_prompts: bool = False
    dataset_cache: str = "data/toyworld_dataset.npz"  # rendered once, reused while its settings match
    dataset_seed: Optional[int] = None  # seed of the rendered dataset; None: the training seed
    resolution: int = 32
    views_per_subject: int = 500
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 6e-4
    warmup_steps: int = 100
    lr_end: float = 0.1  # the cosine decay ends at lr_end * lr
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0  # min-SNR-gamma loss weighting (Hang et al. 2023); 0 disables
    # the share of samples (a multi-view prior: sets) whose timestep is drawn from the noisier half [500, 1000)
    # instead of [0, 1000): where the layout, and so the view, is decided
    high_noise_prob: float = 0.0
    empty_prompt_prob: float = 0.1  # for classifier-free guidance
    plain_prompt_prob: float = 0.2  # prompt without a view suffix
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 2
    attention_levels: int = 1  # UNet levels with cross-attention, counted from the lowest resolution
    text_width: int = 64
    text_layers: int = 2
    beta_schedule: str = "squaredcos_cap_v2"
    snapshot_every: int = 250  # write the (EMA) pipeline every N steps so a crash loses little
    threads: int = 0  # torch threads; 0 keeps torch's default
    init_from: Optional[str] = None  # continue from the unet / text encoder [/ vae] of a saved prior (a second stage)
    object_weights: dict[str, float] = field(default_factory=dict)  # oversample hard objects, e.g. {robot: 3}
    weights_dtype: str = "float32"  # of the saved weights (float16 halves the files; the loader casts back)
    vae: VaeTrainConfig = field(default_factory=VaeTrainConfig)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.resolution not in (16, 32, 64):
            raise ConfigError(f"resolution must be 16, 32 or 64, got {self.resolution}")
        for name in ("steps", "batch_size", "views_per_subject"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.lr_end <= 1:
            raise ConfigError(f"lr_end must be between 0 and 1, got {self.lr_end}")
        if not 0 <= self.high_noise_prob <= 1:
            raise ConfigError(f"high_noise_prob must be between 0 and 1, got {self.high_noise_prob}")
        if not 1 <= self.attention_levels <= len(self.channels):
            raise ConfigError(
                f"attention_levels must be between 1 and len(channels) = {len(self.channels)}, "
                f"got {self.attention_levels}"
            )
        if self.kind == "multiview":
            if not 2 <= self.num_views <= 8:
                raise ConfigError(f"num_views must be between 2 and 8, got {self.num_views}")
            if self.batch_size % self.num_views:
                raise ConfigError(
                    f"batch_size must be a multiple of num_views = {self.num_views} (whole sets), got {self.batch_size}"
                )
        if not self.camera_lr_scale > 0:
            raise ConfigError(f"camera_lr_scale must be positive, got {self.camera_lr_scale}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ConfigError(f"weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {self.weights_dtype!r}")
        for name, weight in self.object_weights.items():
            if name not in OBJECTS:
                raise ConfigError(f"object_weights: unknown object {name!r}; known: {', '.join(OBJECTS)}")
            if weight <= 0:
                raise ConfigError(f"object_weights.{name} must be positive, got {weight}")
        if self.kind == "latent":
            self.vae.check(self.resolution)


@dataclass
class DiffusionData:
    """What the UNet learns to denoise: `batch(idx, flip)` gives x0 for dataset images `idx` (mirrored where
    `flip`), `channels` x `size`²; `vae` maps it to images (None: x0 are pixels in [-1, 1])."""

    batch: Callable[[np.ndarray, torch.Tensor], torch.Tensor]
    channels: int
    size: int
    vae: Optional[torch.nn.Module] = None
    info: dict = field(default_factory=dict)  # recorded in model_index.json (e.g. the VAE's held-out PSNR)


def pixel_data(images: torch.Tensor) -> DiffusionData:
    """The pixel prior's training data: the images themselves, mirrored (every object is left-right symmetric)."""

    def batch(idx: np.ndarray, flip: torch.Tensor) -> torch.Tensor:
        x0 = images[idx]
        return torch.where(flip[:, None, None, None], x0.flip(-1), x0)

    return DiffusionData(batch, images.shape[1], images.shape[-1])


def sampling_probabilities(data: ToyDataset, object_weights: dict[str, float]) -> np.ndarray | None:
    """Per-image sampling probability from per-object weights (None = uniform, the stage 1-3 behaviour)."""
    if not object_weights:
        return None
    per_subject = np.array([object_weights.get(obj, 1.0) for _, obj in data.subjects])
    weights = per_subject[data.subject.astype(np.int64)]
    return weights / weights.sum()


def prompts_for_batch(data: ToyDataset, idx: np.ndarray, rng: np.random.Generator, cfg: PriorTrainConfig) -> list[str]:
    """Each image's prompt: empty (for classifier-free guidance), plain, or with its camera's view suffix."""
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
    """The toy dataset `cfg` names: the cache at cfg.dataset_cache if it was rendered with the same settings,
    else rendered now (minutes) and cached."""
    cache = Path(cfg.dataset_cache)
    seed = cfg.seed if cfg.dataset_seed is None else cfg.dataset_seed
    meta = {"views_per_subject": cfg.views_per_subject, "resolution": cfg.resolution, "seed": seed}
    views_per_set = cfg.num_views if cfg.kind == "multiview" else 1
    if views_per_set > 1:
        meta["views_per_set"] = views_per_set
    meta_path = cache.with_suffix(".json")
    if cache.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        return ToyDataset.load(cache)
    data = generate_dataset(
        cfg.views_per_subject, cfg.resolution, seed=seed, progress=progress, views_per_set=views_per_set
    )
    data.save(cache)
    meta_path.write_text(json.dumps(meta))
    return data


def dataset_images(data: ToyDataset) -> torch.Tensor:
    """The dataset's uint8 images as float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def warmup_cosine(lr: float, warmup_steps: int, steps: int, end: float = 0.1) -> Callable[[int], float]:
    """Learning rate at a step: linear warm-up, then a half cosine from lr down to end * lr at the last step."""
    mid, amplitude = (1 + end) / 2, (1 - end) / 2
    return lambda s: lr * min(1.0, (s + 1) / warmup_steps) * (mid + amplitude * math.cos(math.pi * s / steps))


def clipped_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, lr: float) -> None:
    """One optimiser step at learning rate `lr` with the gradient norm clipped to 1 (both priors' training)."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def min_snr_loss(pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, snr: torch.Tensor, gamma: float):
    """The noise-prediction MSE per sample, weighted by min(SNR_t, gamma) / SNR_t (min-SNR; gamma 0: unweighted)."""
    per_sample = torch.nn.functional.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
    weight = (snr[t].clamp(max=gamma) / snr[t]) if gamma > 0 else torch.ones_like(per_sample)
    return (weight * per_sample).mean()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """EMA weights with the warm-up decay min(decay, (1 + step) / (10 + step))."""
    rate = min(decay, (1 + step) / (10 + step))
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - rate)
