"""Lift a 2D mask drawn on one captured view to a 3D Gaussian selection (`--mask view:NAME:MASK.png`): the
Gaussians that view sees inside the mask fix where the object is; every Gaussian whose centre projects inside the
mask and lies that close to them (the object's hidden back included) is selected."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..cameras import project_points
from ..errors import ConfigError
from .region import EditRegion

VISIBLE_SLACK = 0.05  # a centre within this depth (fraction of the view's depth) of the rendered surface is visible


def parse_view_mask(text: str) -> tuple[str, Path]:
    """`view:NAME:PATH` -> (view image name, mask path); a one-line error otherwise."""
    kind, _, rest = text.partition(":")
    name, _, path = rest.partition(":")
    if kind != "view" or not name or not path:
        raise ConfigError(
            f"bad edit mask {text!r}: expected view:IMAGE_NAME:MASK.png (a mask drawn on one captured "
            f"view, white = edit), box:cx,cy,cz,hx,hy,hz or sphere:cx,cy,cz,r"
        )
    return name, Path(path)


def find_view(scene, name: str) -> int:
    """Index of the captured view whose image file is called `name` (or ends with it)."""
    for i, path in enumerate(scene.image_paths):
        if path.name == name or str(path).endswith(name):
            return i
    raise ConfigError(f"edit mask: the scene has no view {name!r}; views are named like {scene.image_paths[0].name}")


@torch.no_grad()
def lift_view_mask(scene, gaussians, text: str) -> tuple[torch.Tensor, EditRegion]:
    """(selected (N,) bool, a sphere framing the selection) from a `view:NAME:PATH` mask."""
    from ..scenes.base import read_image
    from ..scenes.views import image_size

    name, path = parse_view_mask(text)
    index = find_view(scene, name)
    if not path.is_file():
        raise ConfigError(f"edit mask: {path} does not exist")
    h, w = image_size(scene, index)
    mask = (
        F.interpolate(read_image(path, as_mask=True)[0][None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        > 0.5
    )
    if not mask.any():
        raise ConfigError(f"edit mask {path} is empty (white marks what to edit)")
    cams = scene.cameras([index])
    means = gaussians.means.detach()
    xy, depth = (v[0] for v in project_points(means, cams, h, w))
    px, py = xy[:, 0].floor().long(), xy[:, 1].floor().long()
    inside = (depth > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    inside[inside.clone()] = mask[py[inside], px[inside]]
    surface = gaussians.render(cams, h, w, geometry=True, perturb=False)["depth"][0, 0]
    dist = (means - cams.positions[0]).norm(dim=-1)  # the renderer's depth is distance to the camera
    seen = inside.clone()
    seen[inside] = dist[inside] <= surface[py[inside], px[inside]] * (1 + VISIBLE_SLACK)
    if not seen.any():
        raise ConfigError(f"edit mask {path} covers no visible Gaussian in view {name}")
    centre = means[seen].median(0).values
    radius = float((means[seen] - centre).norm(dim=-1).quantile(0.95)) * 1.2
    selected = inside & ((means - centre).norm(dim=-1) <= radius)
    return selected, EditRegion("sphere", centre, torch.tensor([radius]))
