"""The latent toy prior's autoencoder: trains a small diffusers AutoencoderKL on the toy images (L1 + L2
reconstruction and a small KL term), measures its PSNR on held-out views, sets the latent scaling factor
(1 / std of the latents, stored in the VAE config as Stable Diffusion does) and encodes the dataset once, so
train.py's shared UNet loop trains on scaled latents instead of pixels."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ...errors import ConfigError
from ..dataset import generate_dataset
from .common import DiffusionData, PriorTrainConfig, clipped_step, dataset_images, warmup_cosine
from .components import build_vae

HOLDOUT_SEED_OFFSET = 10_000  # held-out views are rendered with seed dataset_seed + this


def vae_loss(vae, x: torch.Tensor, l1_weight: float, l2_weight: float, kl_weight: float) -> tuple[torch.Tensor, dict]:
    """Weighted reconstruction (of a posterior sample, as the UNet's latents will be) plus KL to N(0, I)."""
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample
    l1 = (recon - x).abs().mean()
    l2 = (recon - x).square().mean()
    kl = 0.5 * (posterior.mean.square() + posterior.var - 1.0 - posterior.logvar).mean()
    loss = l1_weight * l1 + l2_weight * l2 + kl_weight * kl
    return loss, {"l1": l1.item(), "l2": l2.item(), "kl": kl.item()}


@torch.no_grad()
def reconstruction_psnr(vae, images: torch.Tensor, sample: bool = False, batch_size: int = 256) -> float:
    """Mean per-image PSNR (dB, images in [0, 1]) of decode(encode(x)) for images in [-1, 1]; the posterior
    mean by default, a posterior sample (what to_diffusion_space encodes) with `sample`."""
    psnrs = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample() if sample else posterior.mode()).sample.clamp(-1, 1)
        mse = ((recon - x) / 2).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)
        psnrs.append(-10 * torch.log10(mse))
    return float(torch.cat(psnrs).mean())


def holdout_images(cfg: PriorTrainConfig) -> torch.Tensor:
    """Views of every catalogue subject that the training set does not contain (another seed), in [-1, 1]."""
    seed = (cfg.seed if cfg.dataset_seed is None else cfg.dataset_seed) + HOLDOUT_SEED_OFFSET
    return dataset_images(generate_dataset(cfg.vae.holdout_views, cfg.resolution, seed=seed, progress=False))


def train_vae(cfg: PriorTrainConfig, images: torch.Tensor, progress: bool = True, log=print):
    """Train the AutoencoderKL cfg.vae describes on `images` ([-1, 1], randomly mirrored), writing it to
    <cfg.out>/vae every cfg.vae.snapshot_every steps; returns it in eval mode."""
    vc = cfg.vae
    vae = build_vae(cfg.resolution, vc.channels, vc.latent_channels, vc.layers_per_block)
    opt = torch.optim.AdamW(vae.parameters(), lr=vc.lr, weight_decay=0.0)
    lr_at = warmup_cosine(vc.lr, vc.warmup_steps, vc.steps, end=0.1)
    rng = np.random.default_rng(cfg.seed + 1)
    snapshot_dir = Path(cfg.out) / "vae"
    n_params = sum(p.numel() for p in vae.parameters())
    log(
        f"vae: {n_params / 1e6:.2f}M parameters, {cfg.resolution}px -> {vc.latent_channels}x"
        f"{cfg.resolution // 2 ** (len(vc.channels) - 1)}² latents, {vc.steps} steps"
    )
    start = time.time()
    bar = tqdm(range(vc.steps), desc="training toy vae", disable=not progress)
    for step in bar:
        idx = rng.integers(0, len(images), vc.batch_size)
        flip = torch.from_numpy(rng.random(vc.batch_size) < 0.5)[:, None, None, None]
        x = torch.where(flip, images[idx].flip(-1), images[idx])
        loss, parts = vae_loss(vae, x, vc.l1_weight, vc.l2_weight, vc.kl_weight)
        clipped_step(opt, loss, vae.parameters(), lr_at(step))
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 50 == 0:
            log(
                json.dumps(
                    {"vae_step": step + 1, "loss": round(loss.item(), 5)}
                    | {k: round(v, 5) for k, v in parts.items()}
                    | {"elapsed_s": round(time.time() - start, 1)}
                )
            )
        if vc.snapshot_every and (step + 1) % vc.snapshot_every == 0:
            vae.save_pretrained(snapshot_dir)
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled posterior means and stds of every image and of its mirror image: two (N, 2, C, h, w) tensors
    (index 1 of dim 1 = mirrored), so UNet batches draw fresh posterior samples without running the encoder."""
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        posterior = vae.encode(torch.cat([x, x.flip(-1)])).latent_dist
        means.append(torch.stack(posterior.mean.chunk(2), dim=1))
        stds.append(torch.stack(posterior.std.chunk(2), dim=1))
    return torch.cat(means), torch.cat(stds)


def _load_vae(directory: str):
    """The VAE (eval mode, frozen) of a saved latent prior, with the training info its model_index records."""
    from diffusers import AutoencoderKL

    root = Path(directory)
    if not (root / "vae" / "config.json").is_file():
        raise ConfigError(
            f"{root} has no trained VAE (vae/config.json); vae.init_from / init_from must name a latent prior directory"
        )
    vae = AutoencoderKL.from_pretrained(root / "vae").float().eval().requires_grad_(False)
    index = json.loads((root / "model_index.json").read_text()) if (root / "model_index.json").is_file() else {}
    return vae, index.get("threedistill", {}).get("vae", {"from": str(root)})


def latent_data(cfg: PriorTrainConfig, images: torch.Tensor, progress: bool = True, log=print) -> DiffusionData:
    """The latent prior's UNet training data: a trained VAE (trained now, or taken from vae.init_from /
    init_from), its scaling factor, and posterior samples of the scaled latents of (mirrored) images."""
    source = cfg.vae.init_from or cfg.init_from
    if source:
        vae, info = _load_vae(source)
        log(f"vae: taken from {source} (scaling factor {vae.config.scaling_factor:.4f})")
        means, stds = encode_dataset(vae, images)
    else:
        start = time.time()
        vae = train_vae(cfg, images, progress, log)
        means, stds = encode_dataset(vae, images)  # unscaled; the scale comes from the first 4096 images
        vae.register_to_config(scaling_factor=round(1.0 / float(means[:4096, 0].std()), 5))
        info = {"train_seconds": round(time.time() - start, 1), "steps": cfg.vae.steps}
        if cfg.vae.holdout_views:
            holdout = holdout_images(cfg)
            info |= {
                "holdout_images": len(holdout),
                "holdout_psnr": round(reconstruction_psnr(vae, holdout), 2),
                "holdout_psnr_sampled": round(reconstruction_psnr(vae, holdout, sample=True), 2),
            }
        vae.save_pretrained(Path(cfg.out) / "vae")
        log(f"vae: scaling factor {vae.config.scaling_factor:.4f}; " + json.dumps(info))
    scale = float(vae.config.scaling_factor)
    means, stds = means * scale, stds * scale
    info["scaling_factor"] = scale
    log(
        f"vae: encoded {len(images)} images (and mirrors); scaled latents mean {means.mean():.3f}, "
        f"std {means.std():.3f}, posterior std {stds.mean():.4f}"
    )

    def batch(idx: np.ndarray, flip: torch.Tensor) -> torch.Tensor:
        which = flip.long()
        mean = means[idx, which]
        return mean + stds[idx, which] * torch.randn_like(mean)

    return DiffusionData(batch, means.shape[2], means.shape[-1], vae=vae, info={"vae": info})
