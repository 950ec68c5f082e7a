"""Captured scenes (nerfstudio transforms.json, Blender transforms_*.json, COLMAP sparse models, LLFF
poses_bounds.npy, 3DGS .ply) read into one `SceneData` in our camera convention and a normalised frame, lens
distortion undone when images load. `load_scene` tells the layouts apart; `check_images` finds unreadable images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..errors import SceneFormatError, ThreeDistillError
from .base import SceneData
from .checks import check_images
from .colmap import find_model_dir, read_colmap, write_colmap_binary, write_colmap_text
from .llff import read_llff
from .nerfstudio import read_blender, read_nerfstudio
from .normalize import normalization_transform, transform_splats

LOOKED_FOR = (
    "a .ply file",
    "transforms.json",
    "transforms_train.json",
    "sparse/",
    "cameras.bin",
    "cameras.txt",
    "point_cloud.ply",
    "point_cloud/iteration_*/point_cloud.ply",
    "poses_bounds.npy",
)


def _read_splats(path: Path):
    from ..export.splats import read_ply

    try:
        return read_ply(path)
    except SceneFormatError:
        raise
    except ThreeDistillError as err:
        raise SceneFormatError(str(err)) from None


def find_splats(folder: Path) -> Path | None:
    """`point_cloud.ply` in the folder, else the latest `point_cloud/iteration_*/point_cloud.ply` (INRIA 3DGS)."""
    if (folder / "point_cloud.ply").is_file():
        return folder / "point_cloud.ply"
    runs = [
        p
        for p in folder.glob("point_cloud/iteration_*/point_cloud.ply")
        if re.fullmatch(r"iteration_\d+", p.parent.name)
    ]
    return max(runs, key=lambda p: int(p.parent.name.split("_")[1])) if runs else None


def splat_scene(path: Path) -> SceneData:
    """A 3DGS .ply alone: no views; centred and scaled by its Gaussians' centres (no rotation: nothing says up)."""
    splats = _read_splats(path)
    if len(splats.means) == 0:
        raise SceneFormatError(f"{path}: the file holds zero Gaussians")
    if not np.isfinite(splats.means).all():
        raise SceneFormatError(f"{path}: Gaussian centres contain NaN or inf")
    transform = normalization_transform(np.zeros((0, 4, 4)), splats.means)
    return SceneData(
        image_paths=[],
        c2w=torch.zeros(0, 4, 4),
        intrinsics=torch.zeros(0, 4),
        sizes=torch.zeros(0, 2, dtype=torch.int64),
        mask_paths=[],
        points=None,
        point_colours=None,
        splats=transform_splats(transform, splats),
        train_indices=[],
        val_indices=[],
        transform=torch.from_numpy(transform).float(),
        source="ply",
    )


def load_scene(path) -> SceneData:
    """Read a captured scene, telling the layout from what is there: a .ply file (splats only), a folder with
    transforms.json (nerfstudio), transforms_train.json (Blender), sparse/ / cameras.bin / cameras.txt (COLMAP), or
    else poses_bounds.npy (LLFF; the file itself also works). A folder that also holds point_cloud.ply (or
    point_cloud/iteration_*/, the latest) gets those splats attached; a folder with only those splats is read like
    the .ply file."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".ply":
        return splat_scene(path)
    if path.is_file() and path.name == "transforms.json":
        return read_nerfstudio(path)
    if path.is_file() and path.name == "poses_bounds.npy":
        return read_llff(path)
    if path.is_file() and path.name.startswith("transforms_"):
        path = path.parent
    if path.is_file():
        raise SceneFormatError(
            f"{path}: not a scene file (a scene is a folder, or its transforms*.json, poses_bounds.npy or a .ply)"
        )
    if not path.is_dir():
        raise SceneFormatError(f"{path}: not found (no such scene file or folder)")
    splat_file = find_splats(path)
    if (path / "transforms.json").is_file():
        scene = read_nerfstudio(path / "transforms.json")
    elif (path / "transforms_train.json").is_file():
        scene = read_blender(path)
    elif find_model_dir(path) is not None:
        scene = read_colmap(path)
    elif (path / "poses_bounds.npy").is_file():
        scene = read_llff(path)
    elif splat_file is not None:  # an INRIA 3DGS output folder on its own
        return splat_scene(splat_file)
    else:
        raise SceneFormatError(f"{path}: not a captured scene (looked for {', '.join(LOOKED_FOR)})")
    if splat_file is not None:
        scene.splats = transform_splats(scene.transform.double().numpy(), _read_splats(splat_file))
    return scene


__all__ = [
    "SceneData",
    "load_scene",
    "read_nerfstudio",
    "read_blender",
    "read_colmap",
    "read_llff",
    "check_images",
    "write_colmap_text",
    "write_colmap_binary",
    "find_splats",
]
