"""Saving image tensors: single images and grids as PNG (or any format imageio writes)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import ThreeDistillError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2, fill: float = 1.0) -> torch.Tensor:
    """Tile (N,C,H,W) images into one (C, rows*(H+pad)-pad, cols*(W+pad)-pad) image."""
    n, c, h, w = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + pad) - pad, cols * (w + pad) - pad), fill, dtype=images.dtype)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        grid[:, r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = img
    return grid


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C,H,W) in [0,1] with C in {1,3,4} -> (H,W,C) uint8 (1 channel becomes grey RGB)."""
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write a (C,H,W) or (N,C,H,W) tensor in [0,1]; a batch is written as a grid."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ThreeDistillError(f"cannot write image {path}: use one of {', '.join(IMAGE_SUFFIXES)}")
    if image.ndim == 4:
        image = make_grid(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, to_uint8(image))
    return path
