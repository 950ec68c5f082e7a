"""The edit region as what the Trainer optimises and trains on: `RegionModel` renders only the Gaussians inside the
region (so only they get gradients and the rest of the scene stays bit-identical), and `RegionViews` orbits edit
cameras around the region at the prior's framing, each with the unedited region's render."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..cameras import Cameras, sample_orbit
from ..objective import ViewBatch
from ..renderers.gaussian_raster import rasterize
from ..representations.base import Representation, load_model_state
from .region import EditRegion


@dataclass
class EditLearningRates:
    """Adam learning rates of the edited Gaussians (numbers or schedules): colours move fast enough to turn red
    into blue within a few hundred steps, positions slowly so the object keeps its place."""

    means: Any = 5.0e-4
    log_scales: Any = 5.0e-3
    quats: Any = 1.0e-3
    opacity_logits: Any = 2.0e-2
    sh: Any = 2.0e-2


class RegionModel(Representation):
    """The scene's Gaussians seen through the edit region: renders only the selected Gaussians, so only they get
    gradients (the rest of the scene stays exactly as it was); checkpoints hold the whole scene."""

    def __init__(
        self,
        gaussians,
        selected: torch.Tensor,
        lambda_preserve: float = 0.0,
        lr: EditLearningRates | None = None,
        max_scale_growth: float | None = None,
        sh_rest_lr_factor: float = 1.0,
    ):
        super().__init__()
        self.gaussians, self.lambda_preserve, self.lr = gaussians, lambda_preserve, lr or EditLearningRates()
        self.max_scale_growth, self.sh_rest_lr_factor = max_scale_growth, sh_rest_lr_factor
        self.register_buffer("selected", selected)
        self.original = {
            n: getattr(gaussians, n).detach()[selected].clone() for n in ("means", "sh", "log_scales", "opacity_logits")
        }
        self._sh_rest = self._current_sh_rest()

    @property
    def device(self):
        return self.gaussians.device

    def param_groups(self) -> list[dict]:
        return [{**group, "lr": getattr(self.lr, group["name"])} for group in self.gaussians.param_groups()]

    def state_dict(self, *args, **kwargs):
        return self.gaussians.state_dict(*args, **kwargs)

    def load_tensors(self, state) -> None:
        load_model_state(self.gaussians, state)
        self._sh_rest = self._current_sh_rest()

    def _current_sh_rest(self) -> torch.Tensor | None:
        """The region's SH bands above 0 as they are now, when their updates are to be scaled."""
        g = self.gaussians
        if g.sh.shape[1] == 1 or self.sh_rest_lr_factor == 1.0:
            return None
        return g.sh.detach()[self.selected, 1:].clone()

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
        g, s = self.gaussians, self.selected
        return rasterize(
            g.means[s],
            g.scales[s],
            g.quats[s],
            g.opacities[s],
            g.sh[s],
            cameras.to(g.device),
            height,
            width,
            background,
            geometry=geometry,
        )

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep every edited Gaussian at most `max_scale_growth` times its unedited size (score gradients otherwise
        blow Gaussians up into a haze that spills over the rest of the scene), and let the SH bands above 0 move only
        `sh_rest_lr_factor` of this step's update (view-dependent colour otherwise absorbs the guidance)."""
        g, s = self.gaussians, self.selected
        if self.max_scale_growth:
            cap = self.original["log_scales"].to(g.device) + math.log(self.max_scale_growth)
            g.log_scales[s] = torch.minimum(g.log_scales[s], cap)
        if self._sh_rest is not None:  # Adam's update is proportional to the learning rate: scale it afterwards
            rest = self._sh_rest.to(g.device)
            self._sh_rest = rest + (g.sh[s, 1:] - rest) * self.sh_rest_lr_factor
            g.sh[s, 1:] = self._sh_rest

    def loss_weights(self) -> dict[str, float]:
        return {"preserve": self.lambda_preserve}

    def training_losses(self, out: dict, weights: dict[str, float]) -> dict[str, torch.Tensor]:
        """loss_preserve: the L2 drift of the region's Gaussians from their unedited values."""
        if not weights.get("preserve"):
            return {}
        g, s = self.gaussians, self.selected
        return {"loss_preserve": sum(((getattr(g, n)[s] - v) ** 2).mean() for n, v in self.original.items())}


class RegionViews:
    """Edit cameras orbiting the region at `view_distance` radii; each comes with the unedited region's render
    (`source`, DDS's reference)."""

    def __init__(self, original: RegionModel, region: EditRegion, cfg, with_source: bool = True):
        self.original, self.region, self.cfg, self.with_source = original, region, cfg, with_source
        self.image_size = (cfg.trainer.resolution, cfg.trainer.resolution)

    def cameras(self, generator: torch.Generator, n: int) -> Cameras:
        return orbit_region(self.cfg, self.region, generator, n)

    def sample(self, generator: torch.Generator, n: int) -> ViewBatch:
        cams = self.cameras(generator, n)
        if not self.with_source:
            return ViewBatch(cams, self.image_size)
        with torch.no_grad():
            source = self.original.render(cams, *self.image_size)["rgb"]
        return ViewBatch(cams, self.image_size, {"source": source})


def orbit_region(cfg, region: EditRegion, generator: torch.Generator, n: int) -> Cameras:
    """n edit cameras orbiting `region` at `cfg.view_distance` radii, in the ranges of `cfg.trainer.cameras`."""
    c, r = cfg.trainer.cameras, cfg.view_distance * region.radius
    cams = sample_orbit(
        generator, n, tuple(c.azimuth), tuple(c.elevation), (r * c.radius[0], r * c.radius[1]), tuple(c.fovy)
    )
    cams.c2w[:, :3, 3] += region.centre
    return cams


def object_radius(region: EditRegion) -> EditRegion:
    """The region re-expressed for framing: its largest half size (a box's diagonal would frame too loosely)."""
    if region.kind == "sphere":
        return region
    return EditRegion("sphere", region.centre, region.size.max().reshape(1))
