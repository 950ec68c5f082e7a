"""Sampling from a Prior with classifier-free guidance (diffusers convention), used by `t3d prior sample`
and the prior's quality gate. Default: ancestral DDPM sampling, whose fresh noise at every step corrects the
small toy prior's errors (measured: visibly cleaner objects and backgrounds than DDIM or DPM-Solver++ at
the same model). Deterministic for a given seed."""

from __future__ import annotations

import torch
from tqdm import tqdm

from ..errors import ThreeDistillError
from .base import Prior

SAMPLERS = ("ddpm", "ddim")


DEFAULT_VIEW_ELEVATION = 15.0  # of a multi-view prior's default cameras


def default_view_cameras(sets: int, views: int, elevation: float = DEFAULT_VIEW_ELEVATION) -> torch.Tensor:
    """Camera-to-world matrices (sets*views,4,4) of `sets` identical sets: the front (azimuth 0), then every
    360/views degrees, at `elevation`."""
    from ..cameras import orbit_cameras, set_azimuths

    return orbit_cameras(set_azimuths(torch.zeros(sets), views), elevation, 3.0).c2w


def make_scheduler(prior: Prior, sampler: str):
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler not in SAMPLERS:
        raise ThreeDistillError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    cls = DDPMScheduler if sampler == "ddpm" else DDIMScheduler
    config = {k: v for k, v in prior.scheduler.config.items() if not k.startswith("_")}
    config["prediction_type"] = "epsilon"  # predict_noise always returns epsilon
    if sampler == "ddpm":
        config["variance_type"] = "fixed_small"  # learned-range variances (IF) need the model's second half
    return cls.from_config(config)


@torch.no_grad()
def sample_images(
    prior: Prior,
    prompts: list[str],
    steps: int = 100,
    guidance_scale: float = 5.0,
    seed: int = 0,
    negative_prompt: str = "",
    batch_size: int = 128,
    progress: bool = False,
    sampler: str = "ddpm",
    cameras: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one image per prompt: (N,3,H,W) in [0,1]. A multi-view prior draws the images in sets of its
    `num_views` consecutive prompts jointly, seen from `cameras` (N,4,4) camera-to-world matrices (default:
    `default_view_cameras`, each set's first view from the front)."""
    if not prompts or steps < 1:
        raise ThreeDistillError(f"--n and --steps must be positive, got {len(prompts)} and {steps}")
    views = prior.num_views
    if views > 1:
        if len(prompts) % views:
            raise ThreeDistillError(f"a {views}-view prior draws sets of {views} images; got {len(prompts)} prompts")
        cameras = default_view_cameras(len(prompts) // views, views) if cameras is None else cameras
        batch_size = max(views, batch_size // views * views)
    scheduler = make_scheduler(prior, sampler)
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    size = prior.native_resolution // (prior.vae_scale if prior.latent else 1)
    noise = torch.randn(len(prompts), prior.channels, size, size, generator=gen)
    uncond = prior.encode_prompt([negative_prompt])
    out = []
    chunks = range(0, len(prompts), batch_size)
    bar = tqdm(total=len(chunks) * steps, desc="sampling", disable=not progress)
    for start in chunks:
        x = noise[start : start + batch_size].to(prior.device)
        cond = prior.encode_prompt(prompts[start : start + batch_size])
        unc = uncond.expand(len(cond), -1, -1)
        with prior.viewing(None if cameras is None else cameras[start : start + batch_size]):
            for t in scheduler.timesteps:
                eps, _, _ = prior.predict_noise_cfg(x, t.reshape(1), cond, unc, guidance_scale)
                x = scheduler.step(eps, t, x, generator=gen).prev_sample
                bar.update(1)
        out.append(prior.from_diffusion_space(x).cpu())
    bar.close()
    return torch.cat(out)
