"""A small z-buffered triangle rasterizer on CPU (no gradients): renders exported meshes with per-vertex
colours to compare them with the representation's own renders and with ground truth.

Every (triangle, pixel inside its bounding box) pair is enumerated in one packed table, tested with
barycentric coordinates, and the nearest hit per pixel wins (a scatter-min on depth).
"""

from __future__ import annotations

import torch

from ..cameras import Cameras, project_points
from .packing import box_cells


def rasterize_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    colours: torch.Tensor,
    cameras: Cameras,
    height: int,
    width: int,
    background: float = 1.0,
) -> dict[str, torch.Tensor]:
    """rgb (B,3,H,W) and alpha (B,1,H,W, 0 or 1) of a triangle mesh: vertices (V,3), faces (F,3) long,
    per-vertex colours (V,3) in [0,1]. Both windings are drawn (silhouettes must not depend on them)."""
    rgbs, alphas = [], []
    for i in range(len(cameras)):
        rgb, alpha = _rasterize_one(
            vertices.float(), faces.long(), colours.float(), cameras[i], height, width, background
        )
        rgbs.append(rgb)
        alphas.append(alpha)
    return {"rgb": torch.stack(rgbs), "alpha": torch.stack(alphas)}


def triangle_pixels(tri_xy: torch.Tensor, height: int, width: int, keep: torch.Tensor | None = None):
    """Every pixel centre inside a 2D triangle (F,3,2) (pixel units, x right, y down): triangle ids, flat pixel
    ids (y * width + x) and barycentric weights (P,3). `keep` (F,) masks triangles out."""
    tri, px, py = box_pixels(tri_xy, height, width, keep)
    p = torch.stack([px, py], -1).to(tri_xy.dtype) + 0.5
    bary, ok = screen_barycentrics(tri_xy[tri], p)
    inside = ok & (bary >= 0).all(-1)
    return tri[inside], (py * width + px)[inside], bary[inside]


def box_pixels(tri_xy: torch.Tensor, height: int, width: int, keep: torch.Tensor | None = None, margin: float = 0.0):
    """(triangle id, pixel x, pixel y) for every pixel whose centre lies in a triangle's screen bounding box
    grown by `margin` pixels, clipped to the image; `keep` (F,) masks triangles out."""
    lo = (tri_xy.min(1).values - margin).floor().clamp_min(0).long()
    hi = (tri_xy.max(1).values + margin).ceil().long()
    hi[:, 0], hi[:, 1] = hi[:, 0].clamp(max=width), hi[:, 1].clamp(max=height)
    nx, ny = (hi[:, 0] - lo[:, 0]).clamp_min(0), (hi[:, 1] - lo[:, 1]).clamp_min(0)
    if keep is not None:
        nx = torch.where(keep, nx, torch.zeros_like(nx))
    return box_cells(lo[:, 0], lo[:, 1], nx, ny)


def screen_barycentrics(tri: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen-space barycentric weights (P,3) of points p (P,2) in triangles tri (P,3,2), and which triangles
    are not degenerate (P,) (the weights of degenerate ones are meaningless)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = cross2d(b - a, c - a)
    ok = area.abs() > 1e-12
    safe = torch.where(ok, area, torch.ones_like(area))
    w0, w1 = cross2d(b - p, c - p) / safe, cross2d(c - p, a - p) / safe
    return torch.stack([w0, w1, 1 - w0 - w1], -1), ok


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


def cross2d(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
