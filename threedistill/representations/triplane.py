"""Triplane radiance field (EG3D-style): three axis-aligned feature planes (XY, XZ, YZ), optionally at several
resolutions, sampled bilinearly and summed (or concatenated) into the features of the same density / colour MLPs
and volume renderer as the hash-grid NeRF. Dense planes are also what drag editing deforms and what amortised
generators output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .nerf import FieldConfig, RadianceField

PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # XY, XZ, YZ: the two coordinates each plane is indexed by


@dataclass
class TriplaneConfig(FieldConfig):
    plane_resolution: int = 64  # the finest level's size per side
    plane_levels: int = 2  # levels halving the resolution from the finest (1 = a single triplane)
    plane_features: int = 12  # channels per plane and level
    reduce: str = "sum"  # sum | concat: how the three planes' features combine
    init_scale: float = 0.1
    lr_grid: Any = 3e-2  # the planes' learning rate

    section = "triplane"

    def __post_init__(self):
        super().__post_init__()
        if self.reduce not in ("sum", "concat"):
            raise ConfigError(f"triplane.reduce must be 'sum' or 'concat', got {self.reduce!r}")
        for name in ("plane_levels", "plane_features"):
            if getattr(self, name) < 1:
                raise ConfigError(f"triplane.{name} must be >= 1, got {getattr(self, name)}")
        if self.plane_resolution >> (self.plane_levels - 1) < 2:
            raise ConfigError(
                f"triplane.plane_resolution={self.plane_resolution} is too small for "
                f"{self.plane_levels} levels: the coarsest would be under 2 px; use >= "
                f"{2 << (self.plane_levels - 1)}"
            )


class TriplaneEncoding(nn.Module):
    """Points in [0,1]^3 -> features: per level, the three planes sampled bilinearly and summed or concatenated;
    the levels' features are concatenated."""

    def __init__(
        self, resolution: int = 64, levels: int = 2, features: int = 12, reduce: str = "sum", init_scale: float = 0.1
    ):
        super().__init__()
        self.reduce, self.features = reduce, features
        self.planes = nn.ParameterList(
            nn.Parameter(torch.randn(3, features, resolution >> k, resolution >> k) * init_scale) for k in range(levels)
        )

    @property
    def output_dim(self) -> int:
        return len(self.planes) * self.features * (3 if self.reduce == "concat" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        uv = torch.stack([x[:, list(axes)] for axes in PLANE_AXES]) * 2 - 1  # (3, N, 2) in grid_sample's [-1, 1]
        out = []
        for planes in self.planes:
            # grid_sample reads (x, y) as (width, height): plane[c, v, u] holds the feature at (u, v)
            feats = F.grid_sample(planes, uv[:, :, None], mode="bilinear", padding_mode="border", align_corners=True)[
                ..., 0
            ]  # (3, C, N)
            out.append(feats.sum(0).T if self.reduce == "sum" else feats.permute(2, 0, 1).reshape(len(x), -1))
        return torch.cat(out, -1)


class Triplane(RadianceField):
    config_class = TriplaneConfig

    def make_encoding(self, cfg: TriplaneConfig, device: torch.device) -> nn.Module:
        return TriplaneEncoding(cfg.plane_resolution, cfg.plane_levels, cfg.plane_features, cfg.reduce, cfg.init_scale)
