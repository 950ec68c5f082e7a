"""Hash-grid NeRF for text-to-3D: a multiresolution hash encoding, small density and colour MLPs, a density
"blob" bias near the centre at initialisation (threestudio's blob_magic3d) and a background model (fixed
white by default, or a learnable MLP on the view direction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..cameras import Cameras
from ..config import check_schedules
from ..errors import ConfigError
from ..lighting import light_intensity
from ..renderers.volume import BOUND, render_volume
from .base import Representation
from .hash_grid import make_encoding


@dataclass
class FieldConfig:
    """What every radiance field shares (MLPs, density blob, background, samples, learning rates); the
    encoding's settings live in the subclasses."""

    hidden: int = 64
    geo_features: int = 15
    blob_density: float = 10.0
    blob_radius: float = 0.5
    background: str = "white"  # white | learned
    # albedo: the colour MLP is the colour seen; lambert: it is an albedo lit by the toy world's light rig at each
    # ray's surface (normals from the density), so shading cues move the shape (DreamFusion's shaded renders)
    shading: str = "albedo"
    n_samples: int = 32
    n_importance: int = 32
    normal_eps: float = 0.01  # finite-difference step for density-gradient normals
    lr_grid: Any = 1e-2  # learning rates: a number or a schedule [k0, v0, v1, k1]; lr_grid is the encoding's
    lr_mlp: Any = 1e-3
    lr_color: Any = None  # the colour MLP's own rate; None: lr_mlp (one group with the density MLP)
    lr_background: Any = 1e-3

    def __post_init__(self):
        if self.background not in ("white", "learned"):
            raise ConfigError(f"background must be 'white' or 'learned', got {self.background!r}")
        if self.shading not in ("albedo", "lambert"):
            raise ConfigError(f"{self.section}.shading must be 'albedo' or 'lambert', got {self.shading!r}")
        check_schedules(
            self,
            self.section,
            ("lr_grid", "lr_mlp", "lr_background") + (("lr_color",) if self.lr_color is not None else ()),
        )

    section = "nerf"  # the config section's name, for error messages


@dataclass
class NeRFConfig(FieldConfig):
    levels: int = 12
    log2_table_size: int = 15
    base_resolution: int = 16
    max_resolution: int = 256


class RadianceField(Representation):
    """A NeRF-style field: an encoding of [0,1]^3 (made by `make_encoding`), a density MLP with the blob bias, a
    colour MLP and a background; rendered by the shared volume renderer."""

    config_class: type = FieldConfig
    geometry_losses = ("orientation",)

    def __init__(
        self,
        cfg: FieldConfig | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ):
        super().__init__()
        self.cfg = cfg = cfg or self.config_class()
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        self.encoding = self.make_encoding(cfg, torch.device(device))
        self.density_net = nn.Sequential(
            nn.Linear(self.encoding.output_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1 + cfg.geo_features)
        )
        self.color_net = nn.Sequential(nn.Linear(cfg.geo_features, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 3))
        self.background_net = (
            nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 3)) if cfg.background == "learned" else None
        )
        # (1, 1, 1), or (-1, 1, -1) once the object was turned 180 degrees about y (`turn_around`): the field reads
        # points and directions multiplied by it (a multiply rather than a branch: no device sync per evaluation)
        self.register_buffer("field_signs", torch.ones(3))
        self.to(device)  # parameters are initialised on the CPU (same values on any device), then moved

    def turn_around(self, optimizer=None) -> None:
        """Turn the object 180 degrees about y (`Representation.turn_around`): the field is read at the turned
        point from now on (a turn again undoes it); its parameters and their Adam moments stay as they are."""
        self.field_signs.mul_(torch.tensor([-1.0, 1.0, -1.0], device=self.field_signs.device))

    def load_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from a state dict; one written before fields could turn has no `field_signs` (not turned)."""
        self.load_state_dict({"field_signs": torch.ones(3), **state})

    def make_encoding(self, cfg: FieldConfig, device: torch.device) -> nn.Module:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.density_net[0].weight.device

    def param_groups(self) -> list[dict]:
        c = self.cfg
        groups = [
            {"params": list(self.encoding.parameters()), "lr": c.lr_grid, "name": "grid"},
            {
                "params": list(self.density_net.parameters())
                + (list(self.color_net.parameters()) if c.lr_color is None else []),
                "lr": c.lr_mlp,
                "name": "mlp",
            },
        ]
        if c.lr_color is not None:
            groups.append({"params": list(self.color_net.parameters()), "lr": c.lr_color, "name": "color"})
        if self.background_net is not None:
            groups.append(
                {"params": list(self.background_net.parameters()), "lr": c.lr_background, "name": "background"}
            )
        return groups

    def density(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (N,) and geometry features (N,F) at world points inside the bound."""
        h = self.density_net(self.encoding((points * self.field_signs / BOUND + 1.0) * 0.5))
        r = points.norm(dim=-1)
        bias = self.cfg.blob_density * (1.0 - r / self.cfg.blob_radius)
        return F.softplus(h[:, 0] + bias), h[:, 1:]

    def color(self, features: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.color_net(features))

    def background(self, dirs: torch.Tensor) -> torch.Tensor:
        if self.background_net is None:
            return torch.ones_like(dirs)
        return torch.sigmoid(self.background_net(dirs * self.field_signs))

    def normals(self, points: torch.Tensor) -> torch.Tensor:
        """Outward normals -grad(sigma)/|grad(sigma)| by central differences (6 extra density evaluations)."""
        eps = self.cfg.normal_eps
        offsets = torch.eye(3, device=points.device) * eps
        offsets = torch.cat([offsets, -offsets])  # +x +y +z -x -y -z, evaluated in one call of the field
        sigma = self.density((points[None] + offsets[:, None]).reshape(-1, 3))[0].reshape(6, -1)
        return -F.normalize((sigma[:3] - sigma[3:]).T, dim=-1)

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        *,
        background: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        geometry: bool = False,
        perturb: bool = True,
    ) -> dict:
        """rgb, alpha, depth, normal (B,C,H,W); normals (6 extra field evaluations) only when `geometry`."""
        return render_volume(
            self,
            cameras.to(self.device),
            height,
            width,
            self.cfg.n_samples,
            self.cfg.n_importance,
            background,
            geometry,
            generator,
            perturb,
            surface_light=self.surface_light,
        )

    @property
    def surface_light(self):
        """`normals (N,3) -> light (N,1)` when the colour is an albedo lit at the surface (shading lambert), else
        None: what the renders apply, and what an export of the surface applies to its colours."""
        return light_intensity if self.cfg.shading == "lambert" else None

    def training_losses(self, out: dict, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        """loss_orientation: normals facing away from the camera (DreamFusion), from a `geometry` render."""
        return {"loss_orientation": out["orientation"]} if weights.get("orientation") and "orientation" in out else {}


class NeRF(RadianceField):
    """The hash-grid NeRF (Instant-NGP encoding; tinycudann's on CUDA when installed)."""

    config_class = NeRFConfig

    def make_encoding(self, cfg: NeRFConfig, device: torch.device) -> nn.Module:
        return make_encoding(
            device,
            levels=cfg.levels,
            log2_table_size=cfg.log2_table_size,
            base_resolution=cfg.base_resolution,
            max_resolution=cfg.max_resolution,
        )
