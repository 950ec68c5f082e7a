"""Toy objects as trimesh meshes (marching cubes of the same signed distance the renderer traces), in the
world convention (+Y up, front +Z, inside the unit sphere), with per-vertex colours. Used for 3D metrics."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from .catalogue import get_object
from .render import object_sdf, part_colours


@torch.no_grad()
def toy_mesh(obj_name: str, colour: str = "red", resolution: int = 96) -> trimesh.Trimesh:
    """Watertight-where-possible surface of the object's SDF zero level set on a `resolution`^3 grid over [-1,1]^3."""
    from skimage.measure import marching_cubes

    obj = get_object(obj_name)
    axis = torch.linspace(-1.0, 1.0, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    dist = torch.cat([object_sdf(obj, chunk)[0] for chunk in grid.split(1 << 18)]).reshape((resolution,) * 3)
    spacing = 2.0 / (resolution - 1)
    verts, faces, _, _ = marching_cubes(dist.numpy(), level=0.0, spacing=(spacing,) * 3)
    verts = verts - 1.0
    _, part = object_sdf(obj, torch.from_numpy(verts).float())
    rgb = (part_colours(obj, colour)[part].numpy() * 255).astype(np.uint8)
    colours = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
    mesh = trimesh.Trimesh(verts, faces, vertex_colors=colours, process=True)
    if mesh.volume < 0:  # make faces wind counter-clockwise seen from outside (positive volume)
        mesh.invert()
    return mesh
