"""What Drag-SDS optimises (guidance_spec.md 9.5): the scene's Gaussians in three groups, moved by a triplane
deformation field, and the views it trains on.

- Groups: the mask M (the Gaussians the user selected; full learning rate), the KNN ring (the K = 20 nearest
  neighbours of M's Gaussians that are not in M; learning rate x 0.3), the rest (frozen: buffers that no optimiser
  sees, so they are bit-identical after the edit). Positions have learning rate 0: they move only through the
  field's displacement.
- `DeformationField`: three 2D feature planes (xy, xz, yz; `channels` each, one set per resolution of
  `resolutions`), summed per resolution and concatenated, then a linear layer to 64 and two heads
  (ReLU-Linear-ReLU-Linear -> dxyz) whose last layers start at zero, so the edit starts from the fitted scene. Head
  1 moves M; the ring gets head 1's output detached plus head 2 (it follows the part without pulling on it).
- `loss_reg` = mean |dxyz| over the ring (weight 2500, `trainer.lambdas.reg`).
- The two phases are learning-rate schedules: until k_tri only the field learns; afterwards the mask and ring
  Gaussians learn too and the field's rate drops to a tenth.
- `DragViews`: cameras orbiting the drag's context sphere at the edit framing, each with the unedited scene's
  render (the teacher's reference), the mask group's visible footprint in it (rendered alone, kept where it is not
  behind the unedited scene: depth within `depth_tolerance` of the scene's) and the handles / targets projected
  to pixels, re-projected for every camera; with a `moved` scene (the part where the edit's start puts it,
  `drag.hint=start`) also its render and the part's footprint in it, from which the teacher's hint is built.
- `start` / `start_quats`: where the mask's Gaussians start (offsets, orientations), e.g. the part moved rigidly
  (`drag.start=joint`); the field learns the rest of the move from there.

Not built (said in docs/benchmarks/drag.md): DYG's densify / prune of the edited groups between 25% and 80% of the
run, and training cameras taken from the capture (the toy teacher knows object-centred views only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..cameras import Cameras, project_points
from ..errors import ConfigError
from ..objective import ViewBatch
from ..renderers.gaussian_raster import rasterize
from ..representations.base import Representation
from .region import EditRegion
from .region_model import orbit_region

EDITABLE = ("log_scales", "quats", "opacity_logits", "sh")
TENSORS = ("means",) + EDITABLE


@dataclass
class DragFieldConfig:
    channels: int = 32
    resolutions: list[int] = field(default_factory=lambda: [64, 128])  # DYG: 64 x {1, 2, 4, 8}
    bound: float = 1.6  # the planes span +-bound context radii around the context centre
    width: int = 64
    lr: float = 2.0e-3  # the field's Adam rate (x 0.1 after k_tri)


@dataclass
class DragLearningRates:
    """The Gaussians' rates after k_tri (DYG: features, opacity, rotation 0.01, scales 0.001, x lr_scale 0.25)."""

    sh: float = 2.5e-3
    opacity_logits: float = 2.5e-3
    quats: float = 2.5e-3
    log_scales: float = 2.5e-4
    ring_scale: float = 0.3  # the ring's rates are this share of the mask's

    def __post_init__(self):
        for name in (*EDITABLE, "ring_scale"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"drag.lr.{name} must be >= 0 (0 keeps the fitted value), got {getattr(self, name)}")

    @property
    def learns_gaussians(self) -> bool:
        """Whether any of the Gaussians' own tensors learns after k_tri (else only the deformation field does)."""
        return any(getattr(self, name) for name in EDITABLE)


class DeformationField(nn.Module):
    def __init__(self, cfg: DragFieldConfig, centre: torch.Tensor, radius: float):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("centre", centre.float().reshape(3))
        self.scale = float(cfg.bound * radius)
        g = torch.Generator().manual_seed(0)
        self.planes = nn.ParameterList(
            nn.Parameter(0.1 * torch.randn(3, cfg.channels, r, r, generator=g)) for r in cfg.resolutions
        )
        self.lift = nn.Linear(cfg.channels * len(cfg.resolutions), cfg.width)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(cfg.width, cfg.width), nn.ReLU(), nn.Linear(cfg.width, 3))
            for _ in range(2)
        )
        for head in self.heads:
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def features(self, points: torch.Tensor) -> torch.Tensor:
        p = ((points - self.centre) / self.scale).clamp(-1, 1)
        pairs = torch.stack([p[:, [0, 1]], p[:, [0, 2]], p[:, [1, 2]]])[:, None]  # (3, 1, N, 2)
        levels = []
        for planes in self.planes:
            sampled = torch.nn.functional.grid_sample(planes, pairs, mode="bilinear", align_corners=True)
            levels.append(sampled.sum(0)[:, 0].T)  # (N, C): the three planes summed
        return self.lift(torch.cat(levels, -1))

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(head 1, head 2) displacements (N, 3) at points (N, 3)."""
        f = self.features(points)
        return self.heads[0](f), self.heads[1](f)


def knn_ring(means: torch.Tensor, mask: torch.Tensor, k: int = 20, chunk: int = 4096) -> torch.Tensor:
    """(N,) bool: the union of the k nearest neighbours of every masked Gaussian, outside the mask."""
    inside = means[mask]
    ring = torch.zeros(len(means), dtype=torch.bool, device=means.device)
    for start in range(0, len(inside), chunk):
        d = torch.cdist(inside[start : start + chunk], means)
        d[:, mask] = float("inf")
        ring[d.topk(min(k, int((~mask).sum())), largest=False).indices.reshape(-1)] = True
    return ring & ~mask


def phase_switch(steps: int, p_min: float = 0.02, p_max: float = 0.98) -> int:
    """k_tri = floor((K / pi) arccos(2 (0.7 - p_min) / (p_max - p_min) - 1)) (544 of 1500)."""
    return int(math.floor(steps / math.pi * math.acos(2 * (0.7 - p_min) / (p_max - p_min) - 1)))


class DragModel(Representation):
    """The scene's Gaussians with the mask and ring groups trainable and moved by a `DeformationField`."""

    def __init__(
        self,
        gaussians,
        mask: torch.Tensor,
        context: EditRegion,
        steps: int,
        field_cfg: DragFieldConfig | None = None,
        lr: DragLearningRates | None = None,
        ring_k: int = 20,
        lambda_reg: float = 2500.0,
        max_move: float | None = None,
        start: torch.Tensor | None = None,
        start_quats: torch.Tensor | None = None,
    ):
        super().__init__()
        # the source, untouched and not a submodule (its tensors are the base buffers): `baked()` edits a copy
        object.__setattr__(self, "gaussians", gaussians)
        self.lr, self.lambda_reg, self.steps = lr or DragLearningRates(), lambda_reg, steps
        self.max_move = max_move
        means = gaussians.means.detach()
        ring = knn_ring(means, mask, ring_k)
        self.register_buffer("mask_index", mask.nonzero().reshape(-1))
        # where the mask's Gaussians start (M,3 offsets, e.g. the geometric warp's): the field learns the rest; not
        # saved (the config rebuilds it), so a zero start keeps older runs' checkpoints loadable
        start = torch.zeros(len(self.mask_index), 3) if start is None else start.detach().reshape(-1, 3)
        self.register_buffer("mask_start", start.to(means).clone(), persistent=False)
        self.register_buffer("ring_index", ring.nonzero().reshape(-1))
        for name in TENSORS:
            self.register_buffer(f"base_{name}", getattr(gaussians, name).detach().clone(), persistent=False)
        self.edited = nn.ParameterDict()
        for group, index in (("mask", self.mask_index), ("ring", self.ring_index)):
            for name in EDITABLE:
                self.edited[f"{group}_{name}"] = nn.Parameter(getattr(gaussians, name).detach()[index].clone())
        if start_quats is not None:  # the mask's orientations where the start turned them (M,4)
            self.edited["mask_quats"].data = start_quats.detach().to(means).reshape(-1, 4).clone()
        self.field = DeformationField(field_cfg or DragFieldConfig(), context.centre, context.radius)
        self.k_tri = phase_switch(steps)

    @property
    def device(self):
        return self.base_means.device

    def displacements(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dxyz of the mask (M,3), of the ring (R,3))."""
        m = len(self.mask_index)
        points = torch.cat([self.base_means[self.mask_index], self.base_means[self.ring_index]])
        d1, d2 = self.field(points)
        d_mask, d_ring = d1[:m] + self.mask_start, d1[m:].detach() + d2[m:]
        if self.max_move:  # no Gaussian moves further than max_move (a radial clamp; identity below it)
            limit = lambda d: d / (d.norm(dim=-1, keepdim=True) / self.max_move).clamp_min(1.0)  # noqa: E731
            d_mask, d_ring = limit(d_mask), limit(d_ring)
        return d_mask, d_ring

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every Gaussian's tensors with the edit applied (the rest: the base tensors themselves)."""
        d_mask, d_ring = self.displacements()
        index = torch.cat([self.mask_index, self.ring_index])
        out = {"means": self.base_means.index_put((index,), self.base_means[index] + torch.cat([d_mask, d_ring]))}
        for name in EDITABLE:
            edited = torch.cat([self.edited[f"mask_{name}"], self.edited[f"ring_{name}"]])
            out[name] = getattr(self, f"base_{name}").index_put((index,), edited)
        return out

    def param_groups(self) -> list[dict]:
        k, lr = self.k_tri, self.lr
        f = self.field.cfg.lr
        groups = [{"params": list(self.field.parameters()), "lr": [k, f, 0.1 * f, k + 1], "name": "field"}]
        for group, share in (("mask", 1.0), ("ring", lr.ring_scale)):
            for name in EDITABLE:
                rate = share * getattr(lr, name)
                groups.append({"params": [self.edited[f"{group}_{name}"]], "lr": [k, 0.0, rate, k + 1],
                               "name": f"{group}_{name}"})  # fmt: skip
        return groups

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        *,
        background=None,
        generator=None,
        geometry: bool = False,
        perturb: bool = True,
    ) -> dict:
        t = self.tensors()
        return rasterize(
            t["means"],
            t["log_scales"].exp(),
            t["quats"],
            torch.sigmoid(t["opacity_logits"]),
            t["sh"],
            cameras.to(self.device),
            height,
            width,
            background,
            geometry=geometry,
        )

    def loss_weights(self) -> dict[str, Any]:
        return {"reg": self.lambda_reg}

    def training_losses(self, out: dict, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        """loss_reg: the ring's mean |dxyz| (spec 9.5)."""
        if not weights.get("reg") or not len(self.ring_index):
            return {}
        return {"loss_reg": self.displacements()[1].abs().mean()}

    @torch.no_grad()
    def baked(self):
        """A copy of the source Gaussians with the edit written in (rest rows: the source's own values)."""
        import copy

        out = copy.deepcopy(self.gaussians).cpu()
        for name, value in self.tensors().items():
            getattr(out, name).data = value.detach().cpu().clone()
        return out

    def state_dict(self, *args, **kwargs):
        """The edited scene as Gaussians' tensors (what `load_gaussians` reads), plus the field and the edited
        groups under `drag.` (what a resumed run restores)."""
        own = {f"drag.{k}": v for k, v in super().state_dict(*args, **kwargs).items()}
        with torch.no_grad():
            return {**{k: v.detach() for k, v in self.tensors().items()}, **own}

    def load_tensors(self, state) -> None:
        super().load_state_dict({k[len("drag.") :]: v for k, v in state.items() if k.startswith("drag.")})


class DragViews:
    """Cameras orbiting the context sphere, each with the teacher's inputs: `reference` (the unedited scene's
    render), `part` (the mask's visible footprint in it), `handles` / `targets` (pixels, (B, K, 2))."""

    def __init__(
        self, source, mask: torch.Tensor, context: EditRegion, points, cfg, depth_tolerance: float = 0.1, moved=None
    ):
        self.source, self.mask, self.context, self.points, self.cfg = source, mask, context, points, cfg
        self.moved = moved  # the source with the mask moved (a 3D start): its renders make the teacher's hint
        self.tolerance = depth_tolerance * context.radius
        self.image_size = (cfg.trainer.resolution, cfg.trainer.resolution)

    def cameras(self, generator: torch.Generator, n: int) -> Cameras:
        return orbit_region(self.cfg, self.context, generator, n)

    def footprint(self, g, cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """(the scene's render (B,3,H,W), the mask group's visible footprint in it (B,1,H,W))."""
        h, w = self.image_size
        scene = g.render(cams, h, w, geometry=True)
        s = self.mask.to(g.device)
        part = rasterize(g.means[s], g.scales[s], g.quats[s], g.opacities[s], g.sh[s], cams, h, w, geometry=True)
        seen = (part["alpha"] > 0.5) & (part["depth"] <= scene["depth"] + self.tolerance)
        return scene["rgb"], seen.float()

    @torch.no_grad()
    def inputs(self, cams: Cameras) -> dict[str, torch.Tensor]:
        g, (h, w) = self.source, self.image_size
        cams = cams.to(g.device)
        reference, part = self.footprint(g, cams)
        handles, _ = project_points(self.points.handles.to(g.device), cams, h, w)
        targets, _ = project_points(self.points.targets.to(g.device), cams, h, w)
        out = {"reference": reference, "part": part, "handles": handles, "targets": targets}
        if self.moved is not None:
            out["moved_reference"], out["moved_part"] = self.footprint(self.moved, cams)
        return out

    def sample(self, generator: torch.Generator, n: int) -> ViewBatch:
        cams = self.cameras(generator, n)
        return ViewBatch(cams, self.image_size, self.inputs(cams))
