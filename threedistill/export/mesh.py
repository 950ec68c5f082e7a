"""Surfaces from representations: a scalar field on a grid (NeRF density, or the Gaussians' summed opacity),
an isosurface threshold chosen automatically so the surface's silhouettes best match the representation's
own rendered alpha, marching cubes, largest-component cleanup, decimation to a face budget, then a baked
texture (or per-vertex colours).

No hand-tuned threshold: for every pixel ray of a few views the maximum of the field along the ray tells for
which thresholds that pixel is covered, so the silhouette IoU of every candidate threshold costs one compare.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from PIL import Image

from ..cameras import camera_rays, orbit_cameras
from ..errors import ThreeDistillError
from .fields import BOUND, field_grids, grid_spacing, sample_grid, surface_colours
from .texture import bake, unwrap

MIN_FACES = 500
THRESHOLD_VIEWS = dict(azimuth=[0, 60, 120, 180, 240, 300], elevation=[20, -5, 40, 10, 30, 0])
THRESHOLD_RESOLUTION = 48


@dataclass
class MeshResult:
    mesh: trimesh.Trimesh  # vertices in world units, +Y up, front +Z, faces counter-clockwise from outside
    threshold: float | None  # the chosen isosurface level of the field (None for a mesh representation)
    threshold_iou: float | None  # silhouette IoU of that level against the representation's alpha on THRESHOLD_VIEWS
    field: str  # what was thresholded ("density" or "opacity"), or "mesh" for a mesh representation
    textured: bool  # a baked baseColor texture (else per-vertex colours)
    seconds: float


def ray_max(grid: torch.Tensor, cameras, resolution: int, samples: int = 192) -> torch.Tensor:
    """Maximum of the field along every pixel ray, (B,H,W): a pixel is covered by the level-τ surface iff > τ."""
    origins, dirs = camera_rays(cameras, resolution, resolution)
    dist = cameras.radius.view(-1, 1, 1, 1)
    t = torch.linspace(-BOUND, BOUND, samples)
    points = origins[..., None, :] + (dist + t)[..., None] * dirs[..., None, :]  # (B,H,W,S,3)
    values = sample_grid(grid, points.reshape(-1, 3)).reshape(points.shape[:-1])
    return values.max(-1).values


def choose_threshold(grid: torch.Tensor, render_alpha, candidates: torch.Tensor | None = None) -> tuple[float, float]:
    """The level whose silhouettes best match the representation's alpha > 0.5 on THRESHOLD_VIEWS: (level, IoU)."""
    cams = orbit_cameras(THRESHOLD_VIEWS["azimuth"], THRESHOLD_VIEWS["elevation"], 2.9)
    target = render_alpha(cams, THRESHOLD_RESOLUTION) > 0.5  # (B,H,W)
    if not target.any():
        raise ThreeDistillError("the representation renders empty (no pixel reaches alpha 0.5): nothing to export")
    peaks = ray_max(grid, cams, THRESHOLD_RESOLUTION)
    if candidates is None:
        top = float(grid.max())
        if not top > 0:
            raise ThreeDistillError("the representation is empty (its field is zero everywhere): nothing to export")
        candidates = top * torch.logspace(-4, -0.05, 80)
    covered = peaks[None] > candidates.view(-1, 1, 1, 1)  # (C,B,H,W)
    inter = (covered & target).flatten(2).sum(-1).float()
    union = (covered | target).flatten(2).sum(-1).float().clamp_min(1)
    iou = (inter / union).mean(-1)
    best = int(iou.argmax())
    return float(candidates[best]), float(iou[best])


def surface(grid: torch.Tensor, level: float) -> trimesh.Trimesh:
    """Marching cubes of `grid` (over [-1,1]^3) at `level`, padded so every surface closes; outward-facing
    counter-clockwise triangles; only the largest connected component is kept."""
    from skimage.measure import marching_cubes

    spacing = grid_spacing(grid.shape[0])
    padded = np.pad(grid.numpy().astype(np.float32), 1, constant_values=min(float(grid.min()), level) - 1.0)
    if not (padded > level).any():
        raise ThreeDistillError(f"nothing of the representation reaches the surface level {level:.4g}: it is empty")
    padded = _fill_cavities(padded, level)
    verts, faces, _, _ = marching_cubes(padded, level=level, spacing=(spacing,) * 3)
    verts = verts - spacing - BOUND
    # skimage orients faces toward increasing values (our inside); flip them so normals point out.
    mesh = _largest_component(_clean(trimesh.Trimesh(verts, faces[:, ::-1], process=True)))
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
    return mesh


def _fill_cavities(field: np.ndarray, level: float) -> np.ndarray:
    """Raise empty pockets that are not connected to the outside (a Gaussians shell's hollow inside, NeRF
    bubbles) above `level`, so the surface is one outer skin without inner walls. field[0,0,0] is outside."""
    from skimage.measure import label

    empty = field <= level
    regions = label(empty, connectivity=1)
    cavity = empty & (regions != regions[0, 0, 0])
    if cavity.any():
        field = field.copy()
        field[cavity] = level + max(abs(level), 1e-3)
    return field


def simplify(vertices: np.ndarray, faces: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation (fast-simplification) of a triangle soup to about `target` faces."""
    import fast_simplification

    return fast_simplification.simplify(
        np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64), target_count=target
    )


def decimate(mesh: trimesh.Trimesh, faces: int) -> trimesh.Trimesh:
    """Decimation to at most `faces` triangles, cleaned, largest component."""
    if len(mesh.faces) <= faces:
        return mesh
    return _largest_component(_clean(trimesh.Trimesh(*simplify(mesh.vertices, mesh.faces, faces), process=True)))


def _largest_component(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    parts = mesh.split(only_watertight=False)
    return max(parts, key=lambda m: len(m.faces)) if len(parts) > 1 else mesh


def _clean(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Drop zero-area faces and the vertices only they used (their normals would be undefined)."""
    mesh.update_faces(mesh.nondegenerate_faces(height=1e-9))
    mesh.remove_unreferenced_vertices()
    return mesh


def vertex_normals(mesh: trimesh.Trimesh) -> np.ndarray:
    """Unit vertex normals; a vertex whose faces cancel out gets the direction away from the centroid."""
    normals = np.array(mesh.vertex_normals, dtype=np.float64)
    bad = np.linalg.norm(normals, axis=1) < 0.5
    if bad.any():
        away = mesh.vertices[bad] - mesh.centroid
        normals[bad] = away / np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-12)
        normals[bad & (np.linalg.norm(normals, axis=1) < 0.5)] = (0.0, 1.0, 0.0)
    return normals


def check_budget(faces: int, texture_size: int) -> None:
    """One-line errors for face budgets and texture sizes that cannot make a usable asset."""
    if faces < MIN_FACES:
        raise ThreeDistillError(f"--faces {faces} is too small: use at least {MIN_FACES}")
    if texture_size and (texture_size < 64 or texture_size > 8192 or texture_size & (texture_size - 1)):
        raise ThreeDistillError(
            f"--texture-size {texture_size}: use a power of two from 64 to 8192 (or 0 for per-vertex colours)"
        )


@torch.no_grad()
def extract_mesh(
    model, faces: int = 20000, texture_size: int = 1024, resolution: int = 96, log=lambda s: None
) -> MeshResult:
    """A mesh of a NeRF or Gaussians model (see the module docstring) with a baked baseColor texture
    (texture_size > 0 and xatlas succeeds) or per-vertex colours."""
    check_budget(faces, texture_size)
    start = time.perf_counter()
    if hasattr(model, "export_mesh"):  # a mesh representation: its own triangles and texture field
        vertices, triangles, _ = model.export_mesh()
        mesh = decimate(trimesh.Trimesh(vertices, triangles, process=False), faces)
        level, iou, name = None, None, "mesh"
        log(f"surface: the mesh itself, {len(mesh.faces)} faces")

        def colour_fn(points, normals):
            return model.surface_colour(points, normals)
    else:
        grids = field_grids(model, resolution)
        grid, name = grids.field, grids.name

        def render_alpha(cams, res):
            return model.render(cams, res, res, geometry=False, perturb=False)["alpha"][:, 0]

        level, iou = choose_threshold(grid, render_alpha)
        mesh = decimate(surface(grid, level), faces)
        log(
            f"surface: {name} level {level:.4g} (silhouette IoU {iou:.3f} against the renders), {len(mesh.faces)} faces"
        )

        light = getattr(model, "surface_light", None)  # a field whose colour is an albedo lit at the surface

        def colour_fn(points, normals):
            colour = surface_colours(grids, points, normals)
            return colour * light(normals) if light is not None else colour

    positions = torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    unit_normals = vertex_normals(mesh)
    normals = torch.tensor(unit_normals, dtype=torch.float32)
    uv = unwrap(np.asarray(mesh.vertices), np.asarray(mesh.faces), texture_size, log=log) if texture_size else None
    if uv is None:
        rgba = np.concatenate(
            [
                (colour_fn(positions, normals).clamp(0, 1).numpy() * 255).round().astype(np.uint8),
                np.full((len(positions), 1), 255, np.uint8),
            ],
            1,
        )
        mesh = trimesh.Trimesh(
            np.asarray(mesh.vertices),
            np.asarray(mesh.faces),
            vertex_normals=unit_normals,
            vertex_colors=rgba,
            process=False,
        )
    else:
        vmap, uv_faces, uvs = uv
        image = bake(
            colour_fn, positions[vmap], normals[vmap], torch.from_numpy(uv_faces), torch.from_numpy(uvs), texture_size
        )
        material = trimesh.visual.material.PBRMaterial(
            baseColorTexture=Image.fromarray(image), metallicFactor=0.0, roughnessFactor=1.0, name="baked"
        )
        mesh = trimesh.Trimesh(
            np.asarray(mesh.vertices)[vmap],
            uv_faces,
            vertex_normals=unit_normals[vmap],
            visual=trimesh.visual.TextureVisuals(uv=uvs, material=material),
            process=False,
        )
    return MeshResult(mesh, level, iou, name, uv is not None, round(time.perf_counter() - start, 2))
