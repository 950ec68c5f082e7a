"""Lift 2D masks drawn on captured views to a 3D Gaussian selection (`--mask view:NAME:MASK.png`; several views
joined by `;`, or a list).

What a user means by a mask is the Gaussians they see inside it and the parts of the same object hidden behind
them. Per mask view, every Gaussian's blending weight is summed over the pixels inside and outside the mask: one
render of a two-channel dummy feature and one backward pass (the gradient of the mask-weighted image with respect
to a Gaussian's feature is its total weight there; Gaussian Grouping / SAGA's 2D -> 3D lifting).

1. Seen: a view sees a Gaussian when at least SEEN of its unoccluded footprint reaches the image; it votes inside
   when more than half of its weight falls inside the mask. The selection starts from the Gaussians voted inside
   at the view's surface (no more than SURFACE of the object's width behind the rendered depth, so not seen
   through a semi-transparent front). Over several views the visibility-weighted mean of the votes decides, and a
   view that sees a Gaussian with at most OUTSIDE of its weight inside vetoes it.
2. Hidden: the rest of the object grows from there through voxels of GROW_SPACING times the selection's spacing
   (NEIGHBOURS), taking Gaussians that no view sees outside its mask (one straddling the mask's edge with its
   centre inside is not outside), that lie on no surface a view sees outside its mask, whose centre projects into
   most of the masks of the views it is in, and that, in one mask view, lie behind the selection no deeper than
   the selection's visible surface lies in front of its rim (the object taken to be as deep behind its rim as in
   front of it), give or take DEPTH_MARGIN of its width.

Rendered depth enters only with margins of a tenth to a fifth of the object's width: on real captures it is a
blend of large, semi-transparent Gaussians, which is what defeated the depth test this replaced (issue #23)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..cameras import project_points
from ..config import absolute_path
from ..errors import ConfigError
from ..renderers.gaussian_raster import covariances, intrinsics, opencv_viewmats, project, rasterize_camera
from .region import EditRegion

MASK_SEPARATOR = ";"  # view:A:a.png;view:B:b.png
RENDER_SIDE = (256, 1024)  # the votes are rendered with the view's longer side brought into this range (pixels)
SEEN = 0.1  # a Gaussian whose weight in a view is at least this share of its unoccluded footprint is seen by it
INSIDE = 0.5  # ... and votes inside when more than this share of its weight falls inside the mask
OUTSIDE = 0.2  # a view that sees a Gaussian with at most this share inside vetoes it (several views)
SURFACE = 0.2  # seen within this share of the object's width behind a view's rendered surface = at the surface
DEPTH_MARGIN = 0.1  # the hidden part may lie this share of the object's width deeper than its depth bound
NEIGHBOURS = 8  # the selection's spacing: the median distance to a Gaussian's 8th nearest neighbour (clones pair up)
GROW_SPACING = 2.0  # the hidden part grows through voxels of this many times the selection's spacing
GROW_STEPS = 256  # at most this many dilation rounds


@dataclass
class ViewMask:
    """One mask view: its index and name in the scene, the mask file, and the mask (H,W) bool at the view's size."""

    index: int
    name: str
    path: Path
    mask: torch.Tensor


@dataclass
class MaskVotes:
    """Per Gaussian (N,) in one mask view: blending weight inside and outside the mask (pixels of the vote
    render), the share of its unoccluded footprint that reaches the image, whether its centre projects inside the
    view (in front of the camera) and inside the mask, where it lands in the vote render, how far behind the
    view's rendered surface it lies, and the centres (N,3)."""

    inside: torch.Tensor
    outside: torch.Tensor
    visibility: torch.Tensor
    in_frame: torch.Tensor
    in_mask: torch.Tensor
    pixel: torch.Tensor  # (N,2) the centre's pixel (x, y) in the vote render (clamped to its frame)
    behind_surface: torch.Tensor  # how far the centre lies behind the view's rendered surface (0: no surface there)
    points: torch.Tensor  # (N,3) the centres

    @property
    def seen(self) -> torch.Tensor:
        return self.visibility >= SEEN

    @property
    def share(self) -> torch.Tensor:
        return self.inside / (self.inside + self.outside).clamp_min(1e-12)


def parse_view_mask(text: str) -> tuple[str, Path]:
    """`view:NAME:PATH` -> (view image name, mask path); a one-line error otherwise."""
    kind, _, rest = text.strip().partition(":")
    name, _, path = rest.partition(":")
    if kind != "view" or not name or not path:
        raise ConfigError(
            f"bad edit mask {text!r}: expected view:IMAGE_NAME:MASK.png (a mask drawn on one captured "
            f"view, white = edit; several views joined by {MASK_SEPARATOR!r}), box:cx,cy,cz,hx,hy,hz or "
            f"sphere:cx,cy,cz,r"
        )
    return name, Path(path)


def absolute_view_masks(text: str) -> str:
    """`view:NAME:PATH` items (joined by `;`) with each PATH that exists by a relative path made absolute."""
    items = []
    for item in split_view_masks(text):
        name, path = parse_view_mask(item)
        items.append(f"view:{name}:{absolute_path(str(path))}")
    return MASK_SEPARATOR.join(items)


def split_view_masks(masks: str | list[str] | tuple[str, ...]) -> list[str]:
    """The `view:NAME:PATH` items of one text (joined by `;`) or of a list of them."""
    texts = [masks] if isinstance(masks, str) else list(masks)
    items = [t.strip() for text in texts for t in text.split(MASK_SEPARATOR) if t.strip()]
    if not items:
        raise ConfigError("no edit mask given; expected view:IMAGE_NAME:MASK.png")
    return items


def find_view(scene, name: str) -> int:
    """Index of the captured view whose image file is called `name` (or ends with it)."""
    if not scene.image_paths:
        raise ConfigError(
            f"edit mask view:{name}: the scene has no captured views (a .ply holds Gaussians only); "
            "give a box: or sphere: region, or edit the fit run or capture folder instead"
        )
    for i, path in enumerate(scene.image_paths):
        if path.name == name or str(path).endswith(name):
            return i
    raise ConfigError(f"edit mask: the scene has no view {name!r}; views are named like {scene.image_paths[0].name}")


def read_view_mask(scene, text: str) -> ViewMask:
    """A `view:NAME:PATH` mask read at its view's size (white = edit), drawn on the photo as taken (a view with lens
    distortion: undistorted as its photo is); one-line errors for a missing view, file or an empty mask."""
    from ..scenes.base import read_image
    from ..scenes.views import image_size

    name, path = parse_view_mask(text)
    index = find_view(scene, name)
    if not path.is_file():
        raise ConfigError(f"edit mask: {path} does not exist")
    h, w = image_size(scene, index)
    image = read_image(path, as_mask=True)[0][None]
    soft = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)[0]
    distortion = scene.distortion[index] if getattr(scene, "distortion", None) else None
    if distortion is not None:  # drawn on the photo as taken: brought into the undistorted view, as its image is
        from ..scenes.undistort import undistort

        soft = undistort(soft.expand(3, -1, -1), None, scene.intrinsics[index].tolist(), distortion)[0][:1]
    mask = soft[0] > 0.5
    if not mask.any():
        raise ConfigError(f"edit mask {path} is empty (white marks what to edit)")
    return ViewMask(index, name, path, mask)


def render_size(h: int, w: int) -> tuple[int, int]:
    """The vote render's size: the view's aspect ratio, its longer side within RENDER_SIDE."""
    lo, hi = RENDER_SIDE
    scale = min(max(1.0, lo / max(h, w)), hi / max(h, w))
    return max(8, round(h * scale)), max(8, round(w * scale))


def gaussian_cloud(gaussians) -> dict[str, torch.Tensor]:
    """The Gaussians' centres, covariances and opacities as CPU float32 tensors without gradients."""
    means, scales, quats, opacities = (
        t.detach().cpu().float() for t in (gaussians.means, gaussians.scales, gaussians.quats, gaussians.opacities)
    )
    return {"means": means, "covs": covariances(scales, quats), "opacities": opacities}


def mask_votes(scene, cloud: dict, view: ViewMask) -> MaskVotes:
    """Every Gaussian's blending weight inside and outside `view`'s mask, from one render and one backward pass."""
    cams = scene.cameras([view.index])
    mh, mw = view.mask.shape
    h, w = render_size(mh, mw)
    soft = F.interpolate(view.mask[None, None].float(), size=(h, w), mode="area" if h < mh else "bilinear")[0, 0]
    means, covs, opacities = cloud["means"], cloud["covs"], cloud["opacities"]
    viewmat, k = opencv_viewmats(cams)[0], intrinsics(cams, h, w)[0]
    dist = (means - cams.positions[0]).norm(dim=-1)
    dummy = torch.zeros(len(means), 2, requires_grad=True)
    with torch.enable_grad():  # d(sum of mask * channel 0 + (1 - mask) * channel 1)/d feature = weight in / out
        image, alpha = rasterize_camera(means, covs, opacities, torch.cat([dummy, dist[:, None]], -1), viewmat, k, h, w)
        (weights,) = torch.autograd.grad((image[0] * soft).sum() + (image[1] * (1 - soft.clamp(0, 1))).sum(), dummy)
    inside, outside = weights.clamp_min(0).unbind(-1)
    image, alpha = image.detach(), alpha.detach()[0]
    _, conics, _, radii = project(means, covs, viewmat, k, h, w)
    det = (conics[:, 0] * conics[:, 2] - conics[:, 1] ** 2).clamp_min(1e-12)
    footprint = opacities * 2 * math.pi / det.sqrt()  # the weight it would have alone in the view
    visibility = torch.where(radii > 0, (inside + outside) / footprint.clamp_min(1e-12), torch.zeros_like(inside))
    xy, depth = (v[0] for v in project_points(means, cams, mh, mw))
    px, py = xy[:, 0].floor().long(), xy[:, 1].floor().long()
    in_frame = (depth > 0) & (px >= 0) & (px < mw) & (py >= 0) & (py < mh)
    in_mask = in_frame & view.mask[py.clamp(0, mh - 1), px.clamp(0, mw - 1)]
    sx = (xy[:, 0] * w / mw).floor().long().clamp(0, w - 1)
    sy = (xy[:, 1] * h / mh).floor().long().clamp(0, h - 1)
    surface = image[2, sy, sx] / alpha[sy, sx].clamp_min(1e-6)
    behind = torch.where(in_frame & (alpha[sy, sx] > 0.5), dist - surface, torch.zeros_like(dist))
    render_pixel = torch.stack([sx, sy], -1)
    return MaskVotes(inside, outside, visibility.clamp(0, 1), in_frame, in_mask, render_pixel, behind, means)


def lateral_extent(scene, view: ViewMask, points: torch.Tensor) -> float:
    """How wide `points` (M,3) are across `view` (the larger of their 2-98% spreads along its x and y axes)."""
    if len(points) < 2:
        return 0.0
    c2w = scene.cameras([view.index]).c2w[0]
    local = (points - c2w[:3, 3]) @ c2w[:3, :3]
    return float((local[:, :2].quantile(0.98, 0) - local[:, :2].quantile(0.02, 0)).max())


def select_seen(scene, views: list[ViewMask], votes: list[MaskVotes]) -> tuple[torch.Tensor, torch.Tensor]:
    """(selected, outside) (N,) bool: the Gaussians the mask views see at their surface inside the masks, and those
    the views see outside them. Over several views a Gaussian's share inside is the mean of the views that see it
    at their surface, weighted by how much they see of it; any view that sees it (through a surface too) with
    little inside vetoes it. What a view sees well behind its surface (through a semi-transparent front) is left
    to the hidden part's growth."""
    front, shares, weights, vetoes, outs = [], [], [], [], []
    for view, v in zip(views, votes):
        extent = lateral_extent(scene, view, v.points[v.seen & (v.share > INSIDE)])
        at_surface = v.seen & (v.behind_surface <= SURFACE * extent)
        front.append(at_surface)
        shares.append(v.share)
        weights.append(v.visibility * at_surface)
        vetoes.append(v.seen & (v.share <= OUTSIDE))
        ambiguous = v.in_mask & (v.share > OUTSIDE)  # straddles the mask's edge with its centre inside
        outs.append(at_surface & (v.share <= INSIDE) & ~ambiguous)
    share = (torch.stack(weights) * torch.stack(shares)).sum(0) / torch.stack(weights).sum(0).clamp_min(1e-12)
    vetoed = torch.stack(vetoes).any(0) if len(votes) > 1 else torch.zeros_like(share, dtype=torch.bool)
    selected = torch.stack(front).any(0) & (share > INSIDE) & ~vetoed
    return selected, (torch.stack(outs).any(0) | vetoed) & ~selected


def neighbour_spacing(points: torch.Tensor, k: int = NEIGHBOURS, sample: int = 2048) -> float:
    """Median distance from a point of the set to its k-th nearest other point (over a sample of at most `sample`
    points). Not the nearest: densification leaves clones next to each other."""
    if len(points) < 2:
        return 0.0
    pick = points[torch.linspace(0, len(points) - 1, min(sample, len(points))).long()]
    rows = max(1, (1 << 24) // len(points))  # distance blocks of at most 16M entries
    k = min(k, len(points) - 1)
    nearest = [torch.cdist(chunk, points).topk(k + 1, largest=False).values[:, k] for chunk in pick.split(rows)]
    return float(torch.cat(nearest).median())


def voxel_keys(points: torch.Tensor, size: float) -> torch.Tensor:
    """An int64 key per point (M,3) of the voxel of side `size` holding it."""
    cell = (torch.floor(points / size).long() + (1 << 20)).clamp(0, (1 << 21) - 1)
    return (cell[:, 0] << 42) | (cell[:, 1] << 21) | cell[:, 2]


def dilate(points: torch.Tensor, selected: torch.Tensor, candidates: torch.Tensor, size: float) -> torch.Tensor:
    """Grow `selected` (N,) through `candidates` (N,): a candidate joins when its voxel (side `size`) touches one
    holding a Gaussian that joined in the round before (26 neighbours), until nothing joins."""
    steps = torch.arange(-1, 2, dtype=points.dtype) * size
    offsets = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    keys = voxel_keys(points, size)
    selected, candidates = selected.clone(), candidates & ~selected
    grow = selected.clone()
    for _ in range(GROW_STEPS):
        if not grow.any() or not candidates.any():
            break
        near = voxel_keys((points[grow][:, None, :] + offsets).reshape(-1, 3), size).unique()
        grow = candidates & torch.isin(keys, near)
        selected |= grow
        candidates &= ~grow
    return selected


def behind_selection(scene, cloud: dict, view: ViewMask, votes: MaskVotes, selected: torch.Tensor, margin: float):
    """(N,) bool: the Gaussians whose centre projects into `view`'s mask and lies no deeper behind the selection's
    surface there than that surface lies in front of the selection's rim (the object taken to be as deep behind
    its rim as it is in front of it), plus `margin`."""
    cams = scene.cameras([view.index])
    h, w = render_size(*view.mask.shape)
    dist = (cloud["means"] - cams.positions[0]).norm(dim=-1)
    image, alpha = rasterize_camera(
        cloud["means"][selected],
        cloud["covs"][selected],
        cloud["opacities"][selected],
        dist[selected, None],
        opencv_viewmats(cams)[0],
        intrinsics(cams, h, w)[0],
        h,
        w,
    )
    at_surface = selected & votes.seen
    rim = float(dist[at_surface if at_surface.any() else selected].quantile(0.95))
    front = torch.where(alpha[0] > 0.2, image[0] / alpha[0].clamp_min(1e-6), torch.full_like(alpha[0], rim))
    limit = front + 2 * (rim - front).clamp_min(0) + margin
    keep = votes.in_mask.clone()
    keep[keep.clone()] = dist[keep] <= limit[votes.pixel[keep, 1], votes.pixel[keep, 0]]
    return keep


def within_cameras(scene, means: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the points no farther from the scene's centre than its farthest camera. What lies beyond (a fit's
    background shell, distant walls) is the backdrop of every view, never what a mask on an object means."""
    horizon = float(scene.c2w[:, :3, 3].norm(dim=-1).max())
    return means.norm(dim=-1) <= horizon


@torch.no_grad()
def lift_view_mask(scene, gaussians, masks: str | list[str] | tuple[str, ...]) -> tuple[torch.Tensor, EditRegion]:
    """(selected (N,) bool, a sphere framing the selection) from one or more `view:NAME:PATH` masks (a list, or
    one text joined by `;`)."""
    views = [read_view_mask(scene, text) for text in split_view_masks(masks)]
    cloud = gaussian_cloud(gaussians)
    # the votes see the scene without its backdrop (`within_cameras`), as they saw the empty sky of fits without a
    # background shell
    near = within_cameras(scene, cloud["means"])
    if not bool(near.all()):
        selected, region = _lift(scene, {k: v[near] for k, v in cloud.items()}, views)
        full = torch.zeros(len(near), dtype=torch.bool, device=selected.device)
        full[near.to(selected.device)] = selected
        return full.to(gaussians.means.device), region
    selected, region = _lift(scene, cloud, views)
    return selected.to(gaussians.means.device), region


def _lift(scene, cloud: dict, views: list[ViewMask]) -> tuple[torch.Tensor, EditRegion]:
    votes = [mask_votes(scene, cloud, view) for view in views]
    selected, outside = select_seen(scene, views, votes)
    if not selected.any():
        names = ", ".join(str(v.path) for v in views)
        raise ConfigError(f"edit mask {names} covers no visible Gaussian in view {', '.join(v.name for v in views)}")
    means = cloud["means"]
    spacing = neighbour_spacing(means[selected])
    if spacing > 0:  # the hidden part: behind the selection in a mask, inside most masks, on no other surface
        chosen = means[selected]
        extent = float((chosen.quantile(0.98, 0) - chosen.quantile(0.02, 0)).max())
        behind = torch.stack(
            [behind_selection(scene, cloud, vw, v, selected, DEPTH_MARGIN * extent) for vw, v in zip(views, votes)]
        )
        on_other = torch.stack([v.in_frame & ~v.in_mask & (v.behind_surface <= SURFACE * extent) for v in votes]).any(0)
        masks_in = torch.stack([v.in_mask for v in votes]).sum(0)
        frames_in = torch.stack([v.in_frame for v in votes]).sum(0)
        hidden = behind.any(0) & ~outside & ~on_other & (2 * masks_in > frames_in)
        selected = dilate(means, selected, hidden, GROW_SPACING * spacing)
    chosen = means[selected]
    centre = chosen.median(0).values
    radius = max(float((chosen - centre).norm(dim=-1).quantile(0.95)) * 1.2, 1e-3)
    return selected, EditRegion("sphere", centre, torch.tensor([radius]))
