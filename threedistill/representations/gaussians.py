"""3D Gaussians (3DGS): positions, log-scales, quaternions, opacity logits and SH colour, with the
densify (clone / split by accumulated screen-space gradient) and prune (opacity, size) schedule of 3DGS.
Parameter groups carry their own learning rates; densification edits the optimizer's Adam state in place."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..cameras import Cameras
from ..config import check_schedules
from ..errors import ConfigError
from ..renderers.gaussian_raster import SH_C0, quat_to_rotmat, rasterize


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

    def __post_init__(self):
        if not 0 <= self.sh_degree <= 3:
            raise ConfigError(f"sh_degree must be 0..3, got {self.sh_degree}")
        if self.num_points < 1:
            raise ConfigError(f"num_points must be positive, got {self.num_points}")
        check_schedules(self, "gaussians", ("lr_means", "lr_scales", "lr_quats", "lr_opacity", "lr_sh"))


PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "sh")


def _inverse_sigmoid(x: float) -> float:
    return math.log(x / (1 - x))


class Gaussians(nn.Module):
    def __init__(self, cfg: GaussiansConfig | None = None, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg = cfg or GaussiansConfig()
        gen = generator or torch.Generator().manual_seed(0)
        n = cfg.num_points
        direction = nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
        radius = cfg.init_radius * torch.rand(n, 1, generator=gen) ** (1 / 3)
        self._set(direction * radius, torch.full((n, 3), math.log(cfg.init_scale)),
                  torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
                  torch.full((n,), _inverse_sigmoid(cfg.init_opacity)),
                  torch.zeros(n, (cfg.sh_degree + 1) ** 2, 3))
        self.to(device)  # drawn on the CPU (same values on any device), then moved
        self._reset_stats()

    @classmethod
    def from_points(cls, points: torch.Tensor, colours: torch.Tensor | None = None,
                    cfg: GaussiansConfig | None = None) -> "Gaussians":
        """Initialise from a point cloud (N,3) with optional colours (N,3) in [0,1]."""
        model = cls(cfg)
        n = len(points)
        sh = torch.zeros(n, (model.cfg.sh_degree + 1) ** 2, 3)
        if colours is not None:
            sh[:, 0] = (colours - 0.5) / SH_C0
        model._set(points.float(), model.log_scales[:1].expand(n, 3).clone(), model.quats[:1].expand(n, 4).clone(),
                   model.opacity_logits[:1].expand(n).clone(), sh)
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
        self.grad_accum = torch.zeros(len(self), device=self.device)
        self.grad_count = torch.zeros(len(self), device=self.device)
        self._meta: list = []

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
        lrs = (c.lr_means, c.lr_scales, c.lr_quats, c.lr_opacity, c.lr_sh)
        return [{"params": [getattr(self, n)], "lr": lr, "name": n} for n, lr in zip(PARAM_NAMES, lrs)]

    def render(self, cameras: Cameras, height: int, width: int, background: torch.Tensor | None = None,
               generator: torch.Generator | None = None, geometry: bool = True, perturb: bool = True) -> dict:
        """rgb, alpha (+ depth, normal when `geometry`), (B,C,H,W). Rasterization draws no random numbers, so
        `generator` and `perturb` (used by volume rendering) are accepted and ignored."""
        self._meta = []
        return rasterize(self.means, self.scales, self.quats, self.opacities, self.sh, cameras.to(self.device),
                         height, width,
                         background, meta=self._meta, geometry=geometry)

    # ------------------------------------------------------------ densification
    def accumulate_stats(self) -> None:
        """After backward: add each visible Gaussian's screen-space gradient norm (scaled to pixels of a
        unit-size image so the threshold does not depend on resolution)."""
        n = len(self)
        for means2d, radii in self._meta:  # per camera (CPU path) or (cameras, N, 2) at once (gsplat)
            if means2d.grad is None:
                continue
            grad, visible = means2d.grad.reshape(-1, n, 2), radii.reshape(-1, n) > 0
            self.grad_accum += torch.where(visible, grad.norm(dim=-1), 0.0).sum(0)
            self.grad_count += visible.sum(0)
        self._meta = []

    def densify_and_prune(self, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict:
        """Clone small / split large Gaussians whose mean screen gradient exceeds the threshold, then prune
        transparent or huge ones. Edits `optimizer` so its Adam moments follow the Gaussians."""
        c = self.cfg
        mean_grad = self.grad_accum / self.grad_count.clamp_min(1)
        hot = mean_grad > c.densify_grad_threshold
        room = max(0, c.max_points - len(self))
        if hot.sum() > room:  # keep the hottest when the budget is short
            keep = mean_grad.masked_fill(~hot, -1).topk(room).indices
            hot = torch.zeros_like(hot)
            hot[keep] = True
        big = self.scales.max(-1).values > c.split_scale
        clone, split = hot & ~big, hot & big
        with torch.no_grad():
            new = {n: [getattr(self, n).detach()] for n in PARAM_NAMES}
            idx = clone.nonzero().squeeze(-1)
            for n in PARAM_NAMES:
                new[n].append(getattr(self, n).detach()[idx])
            sidx = split.nonzero().squeeze(-1)
            if len(sidx):
                rot = quat_to_rotmat(self.quats[sidx])
                for _ in range(2):  # two children sampled from the parent, 1/1.6 of its size (3DGS)
                    draw = torch.randn(len(sidx), 3, generator=generator).to(self.device)  # CPU generator, any device
                    offset = (rot @ (draw * self.scales[sidx])[..., None])[..., 0]
                    new["means"].append(self.means[sidx] + offset)
                    new["log_scales"].append(self.log_scales[sidx] - math.log(1.6))
                    for n in ("quats", "opacity_logits", "sh"):
                        new[n].append(getattr(self, n).detach()[sidx])
            n_old = len(self)
            grown = {n: torch.cat(v) for n, v in new.items()}
            keep = torch.ones(len(grown["means"]), dtype=torch.bool, device=self.device)
            keep[:n_old] = ~split  # split parents are replaced by their children
            keep &= torch.sigmoid(grown["opacity_logits"]) > c.prune_opacity
            keep &= grown["log_scales"].exp().max(-1).values < c.prune_scale
        source = torch.cat([torch.arange(n_old, device=self.device), idx, sidx, sidx])  # parent of every grown row
        self._replace(optimizer, grown, source, n_old, keep)
        self._reset_stats()
        return {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": int((~keep).sum()), "count": len(self)}

    def _replace(self, optimizer, grown: dict, source: torch.Tensor, n_old: int, keep: torch.Tensor) -> None:
        """Swap in the new parameter tensors; Adam moments are kept for survivors, zero for new rows."""
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

    # ------------------------------------------------------------ checkpoints
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from a state dict whose point count may differ from the current one."""
        self._set(*(tensors[n].to(self.device) for n in PARAM_NAMES))
        self._reset_stats()
