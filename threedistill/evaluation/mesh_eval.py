"""Exported meshes against the toy world's ground truth: silhouette IoU of the rendered mesh at the evaluation
views, Chamfer distance normalised by the object's size, and volume IoU (inside = generalised winding number
> 1/2, which tolerates the small holes decimation can leave)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import trimesh

from ..renderers.mesh_raster import rasterize_mesh
from ..toyworld.catalogue import get_object
from ..toyworld.mesh import toy_mesh
from ..toyworld.render import object_sdf
from .ground_truth import compare, eval_cameras

SURFACE_SAMPLES = 10000
VOLUME_GRID = 24
WINDING_FACES = 4000  # winding numbers are computed on a copy decimated to this many faces (speed)


def load_mesh(path: Path) -> trimesh.Trimesh:
    """A glb/obj as one triangle mesh with per-vertex colours (textures sampled at the vertices). trimesh
    drops COLOR_0 of a glb that also has a material, so a vertex-coloured export reads back in one flat
    colour; the geometric metrics do not use colour."""
    mesh = trimesh.load(path, force="mesh")
    colours = np.asarray(mesh.visual.to_color().vertex_colors)
    if colours.ndim == 1:
        colours = np.tile(colours, (len(mesh.vertices), 1))
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colours)
    return mesh


def render_mesh(mesh: trimesh.Trimesh, cameras, resolution: int) -> dict:
    colours = torch.tensor(np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32)
    return rasterize_mesh(
        torch.tensor(mesh.vertices), torch.tensor(mesh.faces), colours, cameras, resolution, resolution
    )


def winding_numbers(
    vertices: torch.Tensor, faces: torch.Tensor, points: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """Generalised winding number of a triangle soup at points (N,): ~1 inside a closed outward mesh, ~0 outside
    (solid angles by Van Oosterom and Strackee)."""
    tri = vertices[faces]  # (F,3,3)
    out = []
    for p in points.split(chunk):
        a, b, c = (tri[None, :, k] - p[:, None] for k in range(3))  # (P,F,3)
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.linalg.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (a * c).sum(-1) * lb + (b * c).sum(-1) * la
        out.append((2 * torch.atan2(det, den)).sum(-1) / (4 * math.pi))
    return torch.cat(out)


def _coarse(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The geometry alone (texture seams welded), decimated to WINDING_FACES."""
    mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    if len(mesh.faces) <= WINDING_FACES:
        return mesh
    from ..export.mesh import simplify

    return trimesh.Trimesh(*simplify(mesh.vertices, mesh.faces, WINDING_FACES), process=False)


def chamfer(a: torch.Tensor, b: torch.Tensor) -> float:
    """Symmetric mean nearest-neighbour distance between point sets (N,3), (M,3) (exact, by k-d trees)."""
    from scipy.spatial import cKDTree

    x, y = a.double().numpy(), b.double().numpy()
    return float(0.5 * (cKDTree(y).query(x)[0].mean() + cKDTree(x).query(y)[0].mean()))


@torch.no_grad()
def mesh_metrics(mesh: trimesh.Trimesh, colour: str, obj: str, resolution: int = 64, seed: int = 0) -> dict:
    gt = toy_mesh(obj, colour)
    render = render_mesh(mesh, eval_cameras(), resolution)
    against_truth = compare(render, colour, obj, resolution)
    rng = np.random.default_rng(seed)
    ours = torch.tensor(trimesh.sample.sample_surface(mesh, SURFACE_SAMPLES, seed=rng)[0], dtype=torch.float32)
    theirs = torch.tensor(trimesh.sample.sample_surface(gt, SURFACE_SAMPLES, seed=rng)[0], dtype=torch.float32)
    size = float(np.linalg.norm(gt.extents))
    axis = (torch.arange(VOLUME_GRID, dtype=torch.float32) + 0.5) / VOLUME_GRID * 2 - 1
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    inside_gt = object_sdf(get_object(obj), grid)[0] < 0
    coarse = _coarse(mesh)
    vertices = torch.tensor(coarse.vertices, dtype=torch.float32)
    # grid points outside the mesh's bounding box are outside it: only the points in the box need winding numbers
    # (about a fifth of the grid for a toy object; a fifth of the evaluation's time)
    box = ((grid >= vertices.min(0).values) & (grid <= vertices.max(0).values)).all(1)
    inside = torch.zeros(len(grid), dtype=torch.bool)
    inside[box] = winding_numbers(vertices, torch.tensor(coarse.faces), grid[box]) > 0.5
    volume_iou = float((inside & inside_gt).sum() / (inside | inside_gt).sum().clamp_min(1))
    return {
        "mesh_silhouette_iou": against_truth["silhouette_iou"],
        "mesh_colour_error": against_truth["colour_error"],
        "mesh_chamfer": chamfer(ours, theirs) / size,
        "mesh_volume_iou": volume_iou,
        "mesh_faces": int(len(mesh.faces)),
    }
