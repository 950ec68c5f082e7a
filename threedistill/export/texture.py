"""UV unwrapping with xatlas (in a child process with a time limit: xatlas can crash or stall on some
meshes, and that must never take the export down) and baking a representation's colour into a texture,
dilated past the UV islands so bilinear filtering and mipmaps never pull in the empty background."""

from __future__ import annotations

import subprocess

import numpy as np
import torch
import torch.nn.functional as F

from ..renderers.mesh_raster import triangle_pixels
from ..utils.subprocesses import private_tempdir, run_module

UNWRAP_TIMEOUT_S = 60.0


def unwrap(
    vertices: np.ndarray,
    faces: np.ndarray,
    texture_size: int = 1024,
    timeout: float = UNWRAP_TIMEOUT_S,
    log=lambda s: None,
):
    """xatlas parametrisation packed for a texture_size^2 texture with 2 texels between charts: (vertex map
    into the input vertices (V',), faces (F,3), uvs (V',2) in [0,1]), or None (with a message to `log`) if
    xatlas fails or runs past `timeout` seconds."""
    with private_tempdir("unwrap") as tmp:
        src, dst = tmp / "mesh.npz", tmp / "uv.npz"
        np.savez(src, vertices=vertices.astype(np.float32), faces=faces.astype(np.uint32))
        try:
            proc = run_module("threedistill.export.unwrap_worker", [str(src), str(dst), str(texture_size)], timeout)
        except subprocess.TimeoutExpired:
            log(f"warning: xatlas took more than {timeout:.0f} s; exporting per-vertex colours instead of a texture")
            return None
        if proc.returncode != 0 or not dst.is_file():
            reason = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            log(f"warning: xatlas failed ({reason}); exporting per-vertex colours instead of a texture")
            return None
        data = np.load(dst)
        return data["vmapping"].astype(np.int64), data["faces"].astype(np.int64), data["uvs"].astype(np.float32)


def bake(
    colour_fn,
    positions: torch.Tensor,
    normals: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    size: int,
    dilate: int = 8,
) -> np.ndarray:
    """Texture (size,size,3) uint8: each covered texel gets colour_fn(points, normals) at the surface point
    its UV maps to; empty texels next to islands are filled from their neighbours `dilate` times.
    Image rows go top-down while UV v goes up (glTF flips v: row = (1 - v) * size)."""
    tri_xy = torch.stack([uvs[..., 0] * size, (1 - uvs[..., 1]) * size], -1)[faces]
    tri, pix, bary = triangle_pixels(tri_xy, size, size)
    points = (bary[..., None] * positions[faces[tri]]).sum(1)
    nrm = F.normalize((bary[..., None] * normals[faces[tri]]).sum(1), dim=-1)
    texture = torch.zeros(3, size * size)
    filled = torch.zeros(1, size * size)
    texture[:, pix] = colour_fn(points, nrm).T.clamp(0, 1)
    filled[:, pix] = 1.0
    texture, filled = texture.reshape(1, 3, size, size), filled.reshape(1, 1, size, size)
    for _ in range(dilate):  # 3x3 means of the filled texels and of the filled mask: their ratio is the fill
        means = F.avg_pool2d(torch.cat([texture * filled, filled], 1), 3, stride=1, padding=1)
        sums, count = means[:, :3], means[:, 3:]
        grow = (filled == 0) & (count > 0)
        texture = torch.where(grow, sums / count.clamp_min(1e-6), texture)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    mean = (texture * filled).sum((2, 3), keepdim=True) / filled.sum().clamp_min(1)
    texture = torch.where(filled > 0, texture, mean)  # the rest: the average colour, never black
    return (texture[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
