"""The fixed light rig the embedded priors were trained under (two directional lights and ambient): the toy world
renders with it, and the mesh representation shades with it so its renders look like what those priors know."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LIGHTS = ((torch.tensor([0.45, 0.8, 0.55]), 0.55), (torch.tensor([-0.6, 0.25, -0.5]), 0.2))
AMBIENT = 0.32


def light_intensity(normal: torch.Tensor) -> torch.Tensor:
    """Lambertian + ambient light (N,1), at most 1, reaching surfaces with unit normals (N,3) under the fixed rig."""
    light = normal.new_full((normal.shape[0], 1), AMBIENT)
    for direction, strength in LIGHTS:
        light = light + strength * (normal @ F.normalize(direction, dim=0).to(normal)).clamp_min(0)[:, None]
    return light.clamp_max(1.0)


def shade(albedo: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """Lambertian + ambient colour (N,3) of surface points under the fixed light rig."""
    return albedo * light_intensity(normal)
