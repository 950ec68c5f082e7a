"""A captured scene as training views: each image at its own working size (no squashing of mixed portrait and
landscape captures), drawn at random by the Trainer with their targets, and the photometric objective (L1 + D-SSIM,
as 3DGS) that fits them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..cameras import Cameras
from ..errors import ConfigError, ThreeDistillError
from ..objective import Objective, ViewBatch
from ..utils.ssim import ssim_map

BACKGROUNDS = ("white", "black", "random")


def image_size(scene, index: int, height: int | None = None) -> tuple[int, int]:
    """(H, W) to render view `index` at: its stored size, or `height` rows keeping its aspect ratio."""
    w, h = (int(v) for v in scene.sizes[index])
    return (h, w) if height is None else (height, max(8, round(height * w / h)))


@dataclass
class Resolution:
    """How large each view is fitted (nerfstudio's choices): `downscale` divides the stored size; else `height`
    rows keeping the view's aspect; else the longer side shrinks to `max_side` (never enlarged); all None: the
    stored size."""

    downscale: Optional[float] = None
    height: Optional[int] = None
    max_side: Optional[int] = None

    def __post_init__(self):
        if self.downscale is not None and not self.downscale >= 1:
            raise ConfigError(f"downscale must be >= 1 (2 = half the photos' size), got {self.downscale}")
        if self.height is not None and self.height < 8:
            raise ConfigError(f"resolution must be >= 8 pixels, got {self.height}")
        if self.max_side is not None and self.max_side < 8:
            raise ConfigError(f"max_side must be >= 8 pixels, got {self.max_side}")

    def size(self, scene, index: int) -> tuple[int, int]:
        """(H, W) of view `index`."""
        w, h = (int(v) for v in scene.sizes[index])
        if self.downscale:
            factor = 1.0 / self.downscale
        elif self.height:
            return image_size(scene, index, self.height)
        elif self.max_side:
            factor = min(1.0, self.max_side / max(w, h))
        else:
            return h, w
        return max(8, round(h * factor)), max(8, round(w * factor))


def background_colour(name: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The render background (3,): white, black, or a random colour drawn from `generator`."""
    if name == "white":
        return torch.ones(3)
    if name == "black":
        return torch.zeros(3)
    if name == "random":
        return torch.rand(3, generator=generator)
    raise ConfigError(f"background must be one of {', '.join(BACKGROUNDS)}, got {name!r}")


class SceneViews:
    """The training views of a scene, loaded once, each at its own working size, drawn at random by the Trainer;
    a batch holds views of one size. Views with a mask (or an alpha channel) have their targets composited onto the
    step's background: the model learns the masked object alone (a `random` background keeps it from painting the
    background colour in); `PhotometricLoss(masked=True)` instead ignores what lies outside the masks."""

    def __init__(
        self,
        scene,
        indices: list[int],
        resolution: Resolution | int,
        device: torch.device,
        background: str = "white",
        depth_points: bool = False,
    ):
        if not indices:
            raise ThreeDistillError("the scene has no training views")
        background_colour(background)  # checks the name
        if isinstance(resolution, int):
            resolution = Resolution(height=resolution)
        self.background = background
        self.sizes = [resolution.size(scene, i) for i in indices]
        self.cameras = scene.cameras(indices).to(device)
        self.images, self.masks, self.valid = [], [], []
        for i, size in zip(indices, self.sizes):
            image, mask, valid = scene.load_images([i], *size, split_valid=True)
            self.images.append(image[0].to(device))
            self.masks.append(None if mask is None else mask[0].to(device))
            self.valid.append(None if valid is None else valid[0].to(device))
        self.has_masks = any(m is not None for m in self.masks)
        self.has_valid = any(v is not None for v in self.valid)
        self.points = sparse_depths(scene, indices, self.sizes, device) if depth_points else None

    @property
    def image_size(self) -> tuple[int, int]:
        """The size of the first view (all views' sizes are in `sizes`)."""
        return self.sizes[0]

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, generator: torch.Generator, n: int) -> ViewBatch:
        """Up to `n` random views of one size: the first drawn view's size, the others in the drawn order."""
        order = torch.randperm(len(self), generator=generator).tolist()
        size = self.sizes[order[0]]
        idx = [i for i in order if self.sizes[i] == size][:n]
        bg = background_colour(self.background, generator)
        images = torch.stack([self.images[i] for i in idx])
        ones = torch.ones_like(images[0, :1])
        masks = valid = None
        if self.has_masks:
            masks = torch.stack([ones if self.masks[i] is None else self.masks[i] for i in idx])
            images = images * masks + bg.to(images.device)[None, :, None, None] * (1 - masks)
        if self.has_valid:
            valid = torch.stack([ones if self.valid[i] is None else self.valid[i] for i in idx])
        # white is every renderer's own background (a NeRF's learned background, if it has one, stays in use)
        background = None if self.background == "white" else bg.to(images.device)
        view = torch.tensor(idx, dtype=torch.long, device=images.device)  # which training views (appearance)
        targets = {"images": images, "masks": masks, "valid": valid, "view": view}
        if self.points is not None:
            targets["points"] = [self.points[i] for i in idx]
        return ViewBatch(self.cameras[idx], size, targets, background)


def require_tracks(scene, where: str) -> None:
    """A one-line error unless `scene` has SfM points and the views that matched each (what lambda_depth needs)."""
    if scene.points is None or scene.point_views is None:
        raise ConfigError(
            f"lambda_depth needs SfM points with tracks (a COLMAP model's points3D); {where} has "
            f"{'no points' if scene.points is None else 'points without tracks'}: leave lambda_depth at 0"
        )


def sparse_depths(scene, indices: list[int], sizes: list[tuple[int, int]], device) -> list[tuple[torch.Tensor, ...]]:
    """Per training view, the SfM points matched in it (`scene.point_views`, COLMAP's tracks) that project inside
    the view in front of its camera: (pixel coordinates in grid_sample's [-1, 1] units (P,2), distance to the
    camera (P,)), for a sparse depth loss (gsplat's `depth_loss`). A scene without tracks is a one-line error."""
    require_tracks(scene, scene.source)
    from ..cameras import project_points

    out = []
    for i, (height, width) in zip(indices, sizes):
        cam = scene.cameras([i])
        points = scene.points[scene.point_views[i]].float()
        xy, z = (v[0] for v in project_points(points, cam, height, width))
        u, v = xy.unbind(-1)
        keep = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        grid = torch.stack([u[keep] / width * 2 - 1, v[keep] / height * 2 - 1], -1)
        out.append((grid.to(device), (points[keep] - cam.c2w[0, :3, 3]).norm(dim=-1).to(device)))
    return out


class ViewAppearance(nn.Module):
    """Each training photo's own exposure and white balance, as a gain and an offset per colour channel (6 numbers
    per view): phone cameras set both per photo, and without this a fit can only explain those changes with
    view-dependent colour or Gaussians that only some views see (the per-image colour correction of NeRF-W /
    Zip-NeRF style appearance modelling, in its smallest form; exposure and white balance scale each channel, in
    sRGB as in linear space). The gains and offsets are kept centred (their mean over the views is the identity),
    so the model's own colours are those of the average photo: renders of the model (held-out views, exports) use
    no transform."""

    def __init__(self, n_views: int):
        super().__init__()
        self.log_gain = nn.Parameter(torch.zeros(n_views, 3))
        self.offset = nn.Parameter(torch.zeros(n_views, 3))

    def transforms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, offset) of every view, each (n_views, 3)."""
        log_gain = self.log_gain - self.log_gain.mean(0, keepdim=True)
        return log_gain.exp(), self.offset - self.offset.mean(0, keepdim=True)

    def forward(self, rgb: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        gain, offset = self.transforms()
        return rgb * gain[view][:, :, None, None] + offset[view][:, :, None, None]


class PhotometricLoss(Objective):
    """The reconstruction objective in the guidance slot of the Trainer: L1 + D-SSIM (3DGS's 11x11 window) against
    the captured images. Pixels outside `valid` (no source pixel after undistortion) are always ignored; with
    `masked`, so are pixels outside a view's mask (nerfstudio's mask semantics). With `appearance_views` > 0, each
    training view's render passes through that view's `ViewAppearance` transform first (learned at `lr_appearance`)."""

    name = "photometric"
    targets = ("images", "masks", "valid", "view", "points")

    def __init__(
        self,
        lambda_dssim: float = 0.2,
        masked: bool = True,
        appearance_views: int = 0,
        lr_appearance: float = 1e-2,
        lambda_depth: float = 0.0,
        depth_scale: float = 1.0,
    ):
        super().__init__()
        self.lambda_dssim, self.masked, self.lr_appearance = lambda_dssim, masked, lr_appearance
        self.appearance = ViewAppearance(appearance_views) if appearance_views > 0 else None
        # lambda_depth > 0: `loss_depth`, the rendered against the SfM points' disparity (x depth_scale, the scene's
        # extent, so the term does not depend on the scene's units), weighted by lambda_depth (gsplat: 1e-2)
        self.lambda_depth, self.depth_scale = lambda_depth, depth_scale

    @property
    def wants_depth(self) -> bool:
        """The Trainer renders depth and passes it as `depth` when this is true."""
        return self.lambda_depth > 0

    def loss_weights(self) -> dict[str, float]:
        return {"depth": self.lambda_depth} if self.lambda_depth > 0 else {}

    def param_groups(self) -> list[dict]:
        if self.appearance is None:
            return []
        return [{"params": list(self.appearance.parameters()), "lr": self.lr_appearance, "name": "appearance"}]

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.appearance is None else {k: v.detach() for k, v in self.appearance.state_dict().items()}

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.appearance is not None and tensors:
            self.appearance.load_state_dict(tensors)

    def forward(
        self,
        rgb: torch.Tensor,
        cameras: Cameras,
        prompt,
        step: int,
        generator=None,
        images=None,
        masks=None,
        valid=None,
        view=None,
        points=None,
        depth=None,
    ) -> dict[str, torch.Tensor]:
        out = {}
        if self.lambda_depth > 0 and points is not None and depth is not None:
            out["loss_depth"] = sparse_depth_loss(depth, points) * self.depth_scale
        if self.appearance is not None and view is not None:  # outside masks lies the plain background
            seen = self.appearance(rgb, view)
            rgb = seen if masks is None else masks * seen + (1 - masks) * rgb
        weight = torch.ones_like(rgb[:, :1]) if masks is None or not self.masked else masks
        if valid is not None:
            weight = weight * valid
        l1 = ((rgb - images).abs() * weight).sum() / (weight.sum() * rgb.shape[1]).clamp_min(1)
        if masks is None and valid is None:
            dssim = (1 - ssim_map(rgb, images).mean()) / 2
        else:  # SSIM's local statistics need the ignored pixels equal on both sides; its mean counts kept ones
            per_pixel = ssim_map(rgb * weight, images * weight) * weight
            dssim = (1 - per_pixel.sum() / (weight.sum() * rgb.shape[1]).clamp_min(1)) / 2
        loss = (1 - self.lambda_dssim) * l1 + self.lambda_dssim * dssim
        return {"loss_photometric": loss, "l1": l1.detach(), "dssim": dssim.detach(), **out}


def sparse_depth_loss(depth: torch.Tensor, points: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean |1/rendered distance - 1/SfM distance| at the SfM points of each view (bilinear samples of `depth`
    (B,1,H,W)); gsplat's `depth_loss` compares disparities the same way. Zero without points."""
    errors = []
    for render, (grid, distance) in zip(depth, points):
        if len(distance):
            sampled = F.grid_sample(render[None], grid[None, None], align_corners=False)[0, 0, 0]
            errors.append((1 / sampled.clamp_min(1e-6) - 1 / distance).abs())
    return torch.cat(errors).mean() if errors else depth.new_zeros(())
