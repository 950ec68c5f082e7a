"""A differentiable triangle rasterizer in plain PyTorch (CPU or CUDA tensors alike), for optimising meshes.

Hard visibility comes from a perspective-correct z-buffer (as in mesh_raster); barycentrics, depth, surface
points and normals of the visible triangle are then recomputed with gradients from the projected vertices.
Silhouettes get gradients from an antialiased coverage: near the view's silhouette edges (mesh edges between a
front- and a back-facing triangle, and open boundary edges) alpha = sigmoid(+-d / sigma) for the screen distance
d to the nearest such edge, + on covered pixels and - on empty ones, so alpha is 0.5 on the outline and moves
continuously with it; elsewhere (and inside the coverage, away from its outline) alpha is the hard coverage.
(SoftRas's union 1 - prod(1 - a) over every nearby triangle inflates the silhouette by pixels once triangles are
smaller than a pixel, as exported meshes' are.)
All pairs are enumerated in one packed table per camera (packing.box_cells), never in Python loops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..cameras import Cameras, project_points
from .mesh_raster import box_pixels, cross2d, screen_barycentrics

NEAR = 1e-4  # triangles with a vertex at this view depth or closer are skipped


def rasterize_mesh_soft(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: Cameras,
    height: int,
    width: int,
    sigma: float = 0.5,
    margin: float = 3.0,
) -> dict[str, torch.Tensor]:
    """face (B,H,W; -1 empty), bary (B,H,W,3, perspective-correct), depth (B,1,H,W, view depth), points
    (B,H,W,3, world), normal (B,3,H,W, world, from the face winding) and soft alpha (B,1,H,W) of a mesh:
    vertices (V,3), faces (F,3) long. Alpha is antialiased within `margin` * sigma pixels of the outline (see the
    module docstring). Empty pixels hold 0 (face -1). Both windings are drawn."""
    dtype = vertices.dtype
    cams = cameras.to(vertices.device, dtype)
    faces = faces.long()
    xy, depth = project_points(vertices, cams, height, width)
    v = vertices[faces]
    normals = F.normalize(torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1), dim=-1, eps=1e-20)
    edges, edge_faces = edge_adjacency(faces)
    outs = [
        _rasterize_one(
            xy[i][faces], depth[i][faces], v, normals, height, width, sigma, margin, xy[i][edges], edge_faces
        )
        for i in range(len(cams))
    ]
    return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}


def edge_adjacency(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique undirected edges (E,2) of a triangle list and the two faces on each (E,2); -1 for an open edge's
    missing face (an edge with more than two faces keeps two of them)."""
    half = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(-1).values
    owner = torch.arange(len(faces), device=faces.device).repeat(3)
    edges, inverse = torch.unique(half, dim=0, return_inverse=True)
    first = torch.full((len(edges),), len(faces), device=faces.device).scatter_reduce(0, inverse, owner, "amin")
    last = torch.full((len(edges),), -1, device=faces.device).scatter_reduce(0, inverse, owner, "amax")
    return edges, torch.stack([first, torch.where(last == first, -1, last)], -1)


def _rasterize_one(tri_xy, tri_z, tri_world, face_normals, height, width, sigma, margin, edge_xy, edge_faces) -> dict:
    """The outputs of rasterize_mesh_soft for one camera: triangles (F,3,2) in pixels and (F,3) view depths, mesh
    edges (E,2,2) in pixels with their faces (E,2)."""
    n_pix = height * width
    keep = (tri_z > NEAR).all(-1)
    with torch.no_grad():
        tri, px, py = box_pixels(tri_xy.detach(), height, width, keep)  # visibility: pixels inside triangles only
        p = torch.stack([px, py], -1).to(tri_xy.dtype) + 0.5
        pix = py * width + px
        bary, ok = screen_barycentrics(tri_xy.detach()[tri], p)
        inside = ok & (bary >= 0).all(-1)
        face = _nearest_face(tri[inside], pix[inside], bary[inside], tri_z.detach(), n_pix)
    alpha = _silhouette_alpha(tri_xy, keep, edge_xy, edge_faces, face >= 0, height, width, sigma, margin)
    hit = (face >= 0).nonzero().squeeze(-1)
    f = face[hit]
    centres = torch.stack([hit % width, hit // width], -1).to(tri_xy.dtype) + 0.5
    w, _ = screen_barycentrics(tri_xy[f], centres)  # with gradients this time
    inv_z = (w / tri_z[f]).sum(-1)
    persp = w / tri_z[f] / inv_z[:, None]

    def fill(values: torch.Tensor) -> torch.Tensor:
        """Per-pixel values (H,W,C) from the covered pixels' rows, 0 elsewhere."""
        return tri_xy.new_zeros(n_pix, values.shape[-1]).index_put((hit,), values).reshape(height, width, -1)

    return {
        "face": face.reshape(height, width),
        "bary": fill(persp),
        "depth": fill(1.0 / inv_z[:, None]).permute(2, 0, 1),
        "points": fill((persp[..., None] * tri_world[f]).sum(1)),
        "normal": fill(face_normals[f]).permute(2, 0, 1),
        "alpha": alpha.reshape(1, height, width),
    }


def _nearest_face(tri, pix, bary, tri_z, n_pix: int) -> torch.Tensor:
    """Flat (H*W,) id of the nearest covering triangle per pixel (-1 if none): perspective-correct depth from
    interpolating 1/z, ties broken by the larger triangle id so every pixel gets exactly one face."""
    z = 1.0 / (bary / tri_z[tri]).sum(-1)
    nearest = torch.full((n_pix,), float("inf"), dtype=z.dtype, device=z.device).scatter_reduce(0, pix, z, "amin")
    win = z <= nearest[pix]
    return torch.full((n_pix,), -1, dtype=torch.long, device=z.device).scatter_reduce(0, pix[win], tri[win], "amax")


def _silhouette_alpha(
    tri_xy, keep, edge_xy, edge_faces, covered, height: int, width: int, sigma: float, margin: float
) -> torch.Tensor:
    """Flat (H*W,) antialiased coverage: sigmoid(+-d / sigma) within margin * sigma pixels of the nearest
    silhouette edge (d its screen distance, + where covered), the hard coverage elsewhere."""
    a, b, c = tri_xy[:, 0].detach(), tri_xy[:, 1].detach(), tri_xy[:, 2].detach()
    facing = torch.sign(cross2d(b - a, c - a)) * keep  # +1 / -1 by screen winding; 0 for skipped triangles
    f0, f1 = edge_faces.unbind(-1)
    side0, side1 = facing[f0], torch.where(f1 >= 0, facing[f1.clamp_min(0)], torch.zeros_like(facing[f0]))
    # an outline edge: its faces face opposite ways, or it has a single drawn face
    outline = ((side0 * side1 < 0) | ((side0 == 0) != (side1 == 0))).nonzero().squeeze(-1)
    seg = edge_xy[outline]  # (S,2,2) with gradients
    alpha = covered.to(tri_xy.dtype)
    if len(seg) == 0:
        return alpha
    with torch.no_grad():
        owner, px, py = box_pixels(seg.detach(), height, width, None, margin * sigma)
        pix = py * width + px
    p = torch.stack([px, py], -1).to(tri_xy.dtype) + 0.5
    ab = seg[owner, 1] - seg[owner, 0]
    rel = p - seg[owner, 0]
    t = ((rel * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0.0, 1.0)
    d = (rel - t[:, None] * ab).square().sum(-1).clamp_min(1e-12).sqrt()
    with torch.no_grad():  # the nearest outline edge per pixel (one per pixel, ties to the first pair)
        nearest = torch.full_like(alpha, float("inf")).scatter_reduce(0, pix, d.detach(), "amin")
        rows = torch.arange(len(d), device=d.device)
        win = d.detach() <= nearest[pix]
        first = torch.full((len(alpha),), len(d), device=d.device).scatter_reduce(0, pix[win], rows[win], "amin")
        near = (first < len(d)).nonzero().squeeze(-1)
        pick = first[near]
        within = d.detach()[pick] <= margin * sigma
        near, pick = near[within], pick[within]
        band = _outline_band(covered, height, width, math.ceil(margin * sigma))[near]
        near, pick = near[band], pick[band]
    sign = torch.where(covered[near], 1.0, -1.0).to(d.dtype)
    return alpha.index_put((near,), torch.sigmoid(sign * d[pick] / sigma))


def _outline_band(covered: torch.Tensor, height: int, width: int, radius: int) -> torch.Tensor:
    """Flat (H*W,) mask of the pixels within `radius` of the other side of the hard coverage's outline: only there
    does alpha follow the outline edges (a bumpy surface's folds make silhouette edges inside the coverage too)."""
    mask = covered.to(torch.float32).reshape(1, 1, height, width)
    size = 2 * radius + 1
    grown = F.max_pool2d(mask, size, stride=1, padding=radius)
    shrunk = -F.max_pool2d(-mask, size, stride=1, padding=radius)
    return (grown != shrunk).flatten()
