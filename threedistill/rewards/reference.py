"""A reference image of the object from the front (VP3D's visual prompt; Magic123 / DreamGaussian's image-to-3D
reference view) as the trainer's loss term `reference`: at the reference camera the render's colour must match the
image inside its mask and the render's alpha the mask. `reference.image` is a file (RGBA: its alpha is the mask;
RGB: the mask is what differs from the border's colour) or `auto`: drawn from the run's prior for "<prompt>,
front view" with the run's seed, saved as RUN_DIR/reference.png (a resumed run reads it back)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ThreeDistillError
from . import ExtraTerm

AUTO = "auto"
REFERENCE_FILE = "reference.png"


@dataclass
class ReferenceConfig:
    image: Optional[str] = None  # an image file, or auto (drawn from the prior); None: no reference
    azimuth: float = 0.0  # the reference camera (degrees; the toy world's front faces azimuth 0)
    elevation: float = 15.0
    radius: float = 2.9
    fovy: float = 40.0
    resolution: int = 64  # the size both the render and the image are compared at
    every: int = 1  # steps between reference evaluations
    auto_steps: int = 50  # auto: the prior's sampling steps
    auto_guidance: float = 5.0  # auto: the prior's CFG scale
    background_threshold: float = 0.08  # an RGB image's mask: pixels farther than this from the border colour

    def __post_init__(self):
        if self.resolution < 8 or self.every < 1 or self.auto_steps < 1:
            raise ConfigError(
                f"reference.resolution, reference.every and reference.auto_steps must be at least 8, 1 and 1; got "
                f"{self.resolution}, {self.every} and {self.auto_steps}"
            )
        if self.image not in (None, AUTO) and not Path(self.image).is_file():
            raise ConfigError(f"reference.image {self.image!r} is not an image file (or auto)")


def read_rgba(path: str | Path, threshold: float = 0.08) -> tuple[torch.Tensor, torch.Tensor]:
    """An image file as colour (3,H,W) in [0,1] and mask (1,H,W): the alpha of an RGBA image, else the pixels
    farther than `threshold` from the median colour of the border (a plain background). One-line errors."""
    import imageio.v3 as iio

    try:
        image = np.asarray(iio.imread(path), dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:  # imageio's message goes on about plugins: its first line says it
        first = str(err).splitlines()[0].rstrip(".") if str(err) else type(err).__name__
        raise ThreeDistillError(f"cannot read the image {path} ({first}); give a PNG or JPEG file") from None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ThreeDistillError(f"{path} is not an RGB or RGBA image (shape {image.shape})")
    rgb = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)
    if image.shape[-1] == 4:
        mask = torch.from_numpy(np.ascontiguousarray(image[..., 3]))[None]
        return rgb * mask + (1 - mask), mask  # on white, as the prior's images
    return rgb, background_mask(rgb, threshold)


def background_mask(rgb: torch.Tensor, threshold: float) -> torch.Tensor:
    """(1,H,W): 1 where a pixel differs from the median colour of the image's border by more than `threshold`."""
    border = torch.cat([rgb[:, 0], rgb[:, -1], rgb[:, :, 0], rgb[:, :, -1]], dim=1)
    background = border.median(dim=1).values[:, None, None]
    return ((rgb - background).abs().amax(0, keepdim=True) > threshold).float()


class ReferenceTerm(ExtraTerm):
    """loss_reference: mean of mask x (render - image)^2 over colour, plus (alpha - mask)^2, at the reference
    camera; default weight 1000."""

    name = "reference"

    def __init__(self, rgb: torch.Tensor, mask: torch.Tensor, cfg: ReferenceConfig):
        size = (cfg.resolution, cfg.resolution)
        self.rgb = F.interpolate(rgb[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        self.mask = F.interpolate(mask[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        self.cfg = cfg

    def due(self, step: int) -> bool:
        return step % self.cfg.every == 0

    def loss_weights(self, run_steps: int) -> dict:
        return {"reference": 1000.0}

    def camera(self):
        from ..cameras import orbit_cameras

        c = self.cfg
        return orbit_cameras(c.azimuth, c.elevation, c.radius, c.fovy)

    def loss(self, model, generator: torch.Generator, prompt: str) -> torch.Tensor:
        out = model.render(
            self.camera().to(model.device), self.cfg.resolution, self.cfg.resolution, generator=generator
        )
        rgb, mask = self.rgb.to(out["rgb"].device), self.mask.to(out["rgb"].device)
        colour = (mask * (out["rgb"][0] - rgb) ** 2).mean()
        return colour + ((out["alpha"][0] - mask) ** 2).mean()


def reference_term(cfg: ReferenceConfig, prior, run_cfg, run_dir: Path | None, log=print) -> ReferenceTerm | None:
    """The trainer's reference term of a config (None without reference.image); `auto` draws the image from
    `prior` once per run and keeps it in RUN_DIR/reference.png."""
    if cfg.image is None:
        return None
    if cfg.image != AUTO:
        return ReferenceTerm(*read_rgba(cfg.image, cfg.background_threshold), cfg)
    saved = Path(run_dir) / REFERENCE_FILE if run_dir is not None else None
    if saved is None or not saved.is_file():
        from ..cameras import set_azimuths
        from ..priors.sampling import DEFAULT_VIEW_ELEVATION, sample_images
        from ..prompting import view_prompt

        # a 2D prior is asked for the front view in words; a multi-view prior draws a set whose first view is the
        # front (sample_images' default cameras), each view in words too where it reads them
        views = prior.num_views
        prompts = [f"{run_cfg.prompt}, front view"]
        if views > 1:
            suffixed, elevation = prior.view_prompts, DEFAULT_VIEW_ELEVATION
            azimuths = set_azimuths(torch.zeros(1), views).tolist()  # sample_images' default cameras
            prompts = [view_prompt(run_cfg.prompt, a, elevation) if suffixed else run_cfg.prompt for a in azimuths]
        log(f"drawing the reference image of '{prompts[0]}' from the prior ({cfg.auto_steps} steps)")
        image = sample_images(
            prior, prompts, steps=cfg.auto_steps, guidance_scale=cfg.auto_guidance, seed=run_cfg.trainer.seed
        )[0].cpu()
        if saved is None:
            return ReferenceTerm(image, background_mask(image, cfg.background_threshold), cfg)
        from ..utils.images import save_image

        save_image(image, saved)
    return ReferenceTerm(*read_rgba(saved, cfg.background_threshold), cfg)
