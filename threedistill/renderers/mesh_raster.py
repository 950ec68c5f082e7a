"""A small z-buffered triangle rasterizer on CPU (no gradients): renders exported meshes with per-vertex
colours to compare them with the representation's own renders and with ground truth.

Every (triangle, pixel inside its bounding box) pair is enumerated in one packed table, tested with
barycentric coordinates, and the nearest hit per pixel wins (a scatter-min on depth).
"""
from __future__ import annotations

import torch

from ..cameras import Cameras, project_points
from .packing import box_cells


def rasterize_mesh(vertices: torch.Tensor, faces: torch.Tensor, colours: torch.Tensor, cameras: Cameras,
                   height: int, width: int, background: float = 1.0) -> dict[str, torch.Tensor]:
    """rgb (B,3,H,W) and alpha (B,1,H,W, 0 or 1) of a triangle mesh: vertices (V,3), faces (F,3) long,
    per-vertex colours (V,3) in [0,1]. Both windings are drawn (silhouettes must not depend on them)."""
    rgbs, alphas = [], []
    for i in range(len(cameras)):
        rgb, alpha = _rasterize_one(vertices.float(), faces.long(), colours.float(), cameras[i], height, width, background)
        rgbs.append(rgb)
        alphas.append(alpha)
    return {"rgb": torch.stack(rgbs), "alpha": torch.stack(alphas)}


def triangle_pixels(tri_xy: torch.Tensor, height: int, width: int, keep: torch.Tensor | None = None):
    """Every pixel centre inside a 2D triangle (F,3,2) (pixel units, x right, y down): triangle ids, flat pixel
    ids (y * width + x) and barycentric weights (P,3). `keep` (F,) masks triangles out."""
    lo = tri_xy.min(1).values.floor().clamp_min(0).long()
    hi = tri_xy.max(1).values.ceil().long()
    hi[:, 0], hi[:, 1] = hi[:, 0].clamp(max=width), hi[:, 1].clamp(max=height)
    nx, ny = (hi[:, 0] - lo[:, 0]).clamp_min(0), (hi[:, 1] - lo[:, 1]).clamp_min(0)
    if keep is not None:
        nx = torch.where(keep, nx, torch.zeros_like(nx))
    tri, px, py = box_cells(lo[:, 0], lo[:, 1], nx, ny)
    p = torch.stack([px, py], -1).to(tri_xy.dtype) + 0.5
    a, b, c = tri_xy[tri, 0], tri_xy[tri, 1], tri_xy[tri, 2]
    area = _cross(b - a, c - a)
    ok = area.abs() > 1e-12
    safe = torch.where(ok, area, torch.ones_like(area))
    w0, w1 = _cross(b - p, c - p) / safe, _cross(c - p, a - p) / safe
    w2 = 1 - w0 - w1
    inside = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    return tri[inside], (py * width + px)[inside], torch.stack([w0, w1, w2], -1)[inside]


def _rasterize_one(vertices, faces, colours, camera, height, width, background):
    xy, depth = project_points(vertices, camera, height, width)
    tri_z = depth[0][faces]  # (F,3)
    tri, pix, bary = triangle_pixels(xy[0][faces], height, width, keep=(tri_z > 1e-4).all(-1))
    rgb = torch.full((3, height * width), float(background))
    alpha = torch.zeros(1, height * width)
    # Perspective-correct depth: interpolate 1/z in screen space; the nearest hit per pixel wins.
    z = 1.0 / (bary / tri_z[tri]).sum(-1)
    nearest = torch.full((height * width,), float("inf")).scatter_reduce(0, pix, z, "amin")
    win = z <= nearest[pix]
    tri, pix, bary, z = tri[win], pix[win], bary[win], z[win]
    persp = bary / tri_z[tri] * z[:, None]
    rgb[:, pix] = (persp[..., None] * colours[faces[tri]]).sum(1).T
    alpha[:, pix] = 1.0
    return rgb.reshape(3, height, width), alpha.reshape(1, height, width)


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
