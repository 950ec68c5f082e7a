"""3D Gaussians (3DGS): positions, log-scales, quaternions, opacity logits and SH colour, with the
densify (clone / split by accumulated screen-space gradient) and prune (opacity, size) schedule of 3DGS.
Parameter groups carry their own learning rates; densification edits the optimizer's Adam state in place."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..cameras import Cameras
from ..config import check_schedules, scale_schedule
from ..errors import ConfigError
from ..renderers.gaussian_raster import SH_C0, rasterize, sh_to_rgb
from .base import Representation, transform_adam_state
from .strategies import STRATEGIES, CaptureStrategyConfig, McmcStrategyConfig


@dataclass
class GaussiansConfig:
    num_points: int = 2000
    init_radius: float = 0.5  # initial points fill a ball of this radius
    init_scale: float = 0.04
    init_opacity: float = 0.1
    sh_degree: int = 0  # 0..3
    # Learning rates: a number or a schedule [k0, v0, v1, k1] (e.g. a decaying position rate, as in 3DGS).
    lr_means: Any = 2e-3
    lr_scales: Any = 5e-3
    lr_quats: Any = 5e-3
    lr_opacity: Any = 5e-2
    lr_sh: Any = 1e-2
    densify_from: int = 100
    densify_until: int = 600
    densify_every: int = 100
    densify_grad_threshold: float = 0.02  # mean screen-space gradient norm (pixels, per view) to densify
    split_scale: float = 0.03  # larger Gaussians split, smaller ones clone (world units)
    prune_opacity: float = 0.01
    prune_scale: float = 0.4  # Gaussians larger than this are pruned (world units)
    max_points: int = 20000
    # Training strategy: "default" (the densify_* settings above, tuned for text-to-3D), "capture" (3DGS / gsplat's
    # recipe for photographs, settings in `capture`) or "mcmc" (3DGS-MCMC for photographs, settings in `mcmc`).
    strategy: str = "default"
    capture: CaptureStrategyConfig = field(default_factory=CaptureStrategyConfig)
    mcmc: McmcStrategyConfig = field(default_factory=McmcStrategyConfig)
    scene_scale: float = 1.0  # the scene's extent (3DGS): multiplies lr_means and the capture strategy's sizes

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"gaussians.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not self.scene_scale > 0:
            raise ConfigError(f"gaussians.scene_scale must be positive, got {self.scene_scale}")
        if not 0 <= self.sh_degree <= 3:
            raise ConfigError(f"sh_degree must be 0..3, got {self.sh_degree}")
        if self.num_points < 1:
            raise ConfigError(f"num_points must be positive, got {self.num_points}")
        if self.max_points < 1:
            raise ConfigError(f"gaussians.max_points must be positive, got {self.max_points}")
        check_schedules(self, "gaussians", ("lr_means", "lr_scales", "lr_quats", "lr_opacity", "lr_sh"))


PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "sh")


def _inverse_sigmoid(x: float) -> float:
    return math.log(x / (1 - x))


def _turn_signs(n_coeffs: int, device) -> torch.Tensor:
    """+1 or -1 per SH coefficient: how each basis function of `sh_to_rgb` changes when the direction turns 180
    degrees about y ((x, y, z) -> (-x, y, -z)); every real SH basis function maps to plus or minus itself."""
    dirs = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    turned = dirs * torch.tensor([-1.0, 1.0, -1.0])
    basis = 0.01 * torch.eye(n_coeffs)[:, :, None].expand(n_coeffs, n_coeffs, 3)  # one coefficient at a time
    before = torch.stack([sh_to_rgb(b[None].expand(64, -1, -1), dirs)[:, 0] for b in basis]) - 0.5
    after = torch.stack([sh_to_rgb(b[None].expand(64, -1, -1), turned)[:, 0] for b in basis]) - 0.5
    return torch.sign((before * after).sum(1)).to(device)


class Gaussians(Representation):
    config_class = GaussiansConfig
    PARAM_NAMES = PARAM_NAMES

    def __init__(
        self,
        cfg: GaussiansConfig | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ):
        super().__init__()
        self.cfg = cfg = cfg or GaussiansConfig()
        self.strategy = STRATEGIES[cfg.strategy](cfg)
        self.sh_degree_active: int | None = None  # render with SH bands up to this degree (None: all)
        self.render_size = (0, 0)  # (H, W) of the last render
        gen = generator or torch.Generator().manual_seed(0)
        n = cfg.num_points
        direction = nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
        radius = cfg.init_radius * torch.rand(n, 1, generator=gen) ** (1 / 3)
        self._set(
            direction * radius,
            torch.full((n, 3), math.log(cfg.init_scale)),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
            torch.full((n,), _inverse_sigmoid(cfg.init_opacity)),
            torch.zeros(n, (cfg.sh_degree + 1) ** 2, 3),
        )
        self.to(device)  # drawn on the CPU (same values on any device), then moved
        self._reset_stats()

    @classmethod
    def from_points(
        cls, points: torch.Tensor, colours: torch.Tensor | None = None, cfg: GaussiansConfig | None = None
    ) -> "Gaussians":
        """Initialise from a point cloud (N,3) with optional colours (N,3) in [0,1]."""
        model = cls(cfg)
        n = len(points)
        sh = torch.zeros(n, (model.cfg.sh_degree + 1) ** 2, 3)
        if colours is not None:
            sh[:, 0] = (colours - 0.5) / SH_C0
        model._set(
            points.float(),
            model.log_scales[:1].expand(n, 3).clone(),
            model.quats[:1].expand(n, 4).clone(),
            model.opacity_logits[:1].expand(n).clone(),
            sh,
        )
        model._reset_stats()
        return model

    @classmethod
    def from_splats(cls, splats, cfg: GaussiansConfig | None = None) -> "Gaussians":
        """Gaussians holding a read 3DGS file's parameters (`export.splats.SplatParams`), at its SH degree."""
        cfg = dataclasses.replace(cfg or GaussiansConfig(), sh_degree=splats.sh_degree, num_points=len(splats.means))
        model = cls(cfg)
        model.load_tensors(splats.tensors())
        return model

    def _set(self, means, log_scales, quats, opacity_logits, sh):
        for name, value in zip(PARAM_NAMES, (means, log_scales, quats, opacity_logits, sh)):
            setattr(self, name, nn.Parameter(value.detach().clone()))

    @property
    def device(self) -> torch.device:
        return self.means.device

    def _reset_stats(self):
        self.strategy.reset(self)
        self.render_info: list = []  # (means2d, radii) of the last render, for the strategy's statistics

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def scales(self) -> torch.Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    def param_groups(self) -> list[dict]:
        c = self.cfg
        lrs = (scale_schedule(c.lr_means, c.scene_scale), c.lr_scales, c.lr_quats, c.lr_opacity, c.lr_sh)
        return [{"params": [getattr(self, n)], "lr": lr, "name": n} for n, lr in zip(PARAM_NAMES, lrs)]

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
        """rgb, alpha (+ depth, normal when `geometry`), (B,C,H,W). Rasterization draws no random numbers, so
        `generator` and `perturb` (used by volume rendering) are accepted and ignored."""
        self.render_info, self.render_size = [], (height, width)
        degree = self.sh_degree_active
        sh = self.sh if degree is None else self.sh[:, : (degree + 1) ** 2]
        return rasterize(
            self.means,
            self.scales,
            self.quats,
            self.opacities,
            sh,
            cameras.to(self.device),
            height,
            width,
            background,
            meta=self.render_info,
            geometry=geometry,
        )

    def loss_weights(self) -> dict[str, Any]:
        return self.strategy.loss_weights()

    def training_losses(self, out: dict, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        """loss_scale: the mean of every Gaussian's largest scale (penalises needles and blobs); and the strategy's
        own terms (MCMC: loss_opacity_l1, loss_scale_l1)."""
        losses = {"loss_scale": self.scales.max(-1).values.mean()} if weights.get("scale") else {}
        return {**losses, **self.strategy.training_losses(self, weights)}

    # ------------------------------------------------------------ densification (see strategies/default.py)
    def replace_points(self, optimizer, grown: dict, source: torch.Tensor, n_old: int, keep: torch.Tensor) -> None:
        """Swap in grown parameter tensors (the current rows, then new rows whose parents are `source[n_old:]`) and
        keep the rows `keep`; Adam moments are kept for survivors, zero for new rows. Statistics restart."""
        for name in PARAM_NAMES:
            old = getattr(self, name)
            param = nn.Parameter(grown[name][keep].contiguous())
            for group in optimizer.param_groups:
                if group["params"][0] is old:
                    group["params"][0] = param
                    state = optimizer.state.pop(old, None)
                    if state:
                        for key in ("exp_avg", "exp_avg_sq"):
                            value = state[key]
                            extra = value.new_zeros((len(source) - n_old,) + value.shape[1:])
                            state[key] = torch.cat([value, extra])[keep].contiguous()
                        optimizer.state[param] = state
            setattr(self, name, param)
        self._reset_stats()

    def turn_around(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Turn the Gaussians 180 degrees about the y axis (see `Representation.turn_around`): means (x, y, z) ->
        (-x, y, -z), rotations q -> q_y(180) q, SH coefficients by their parity under that turn; Adam moments too."""
        flip = torch.tensor([-1.0, 1.0, -1.0], device=self.device)
        quat_order, quat_signs = [2, 3, 0, 1], torch.tensor([-1.0, 1.0, 1.0, -1.0], device=self.device)
        sh_signs = _turn_signs(self.sh.shape[1], self.device)[:, None]
        with torch.no_grad():
            self.means.copy_(self.means * flip)
            self.quats.copy_(self.quats[:, quat_order] * quat_signs)
            self.sh.copy_(self.sh * sh_signs)
        transform_adam_state(optimizer, self.means, flip)
        transform_adam_state(optimizer, self.quats, quat_signs, quat_order)
        transform_adam_state(optimizer, self.sh, sh_signs)

    # ------------------------------------------------------------ checkpoints
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from a state dict whose point count may differ from the current one."""
        count = len(tensors["means"])
        trailing = {"means": (3,), "log_scales": (3,), "quats": (4,), "opacity_logits": ()}
        for name in PARAM_NAMES:
            shape = tuple(tensors[name].shape)
            ok = shape[1:] == trailing[name] if name in trailing else len(shape) == 3 and shape[2] == 3
            if shape[:1] != (count,) or not ok:
                raise ValueError(f"{name} has shape {shape} for {count} Gaussians")
        self._set(*(tensors[n].to(self.device) for n in PARAM_NAMES))
        self._reset_stats()
