"""LLFF's `poses_bounds.npy` (Mildenhall et al., Local Light Field Fusion; the NeRF forward-facing scenes): an N x 17
array, per image a 3x5 matrix [R | t | hwf] flattened row by row, then the near and far depth bounds. R's columns
are the camera's [down, right, back] axes in the world; hwf is (height, width, focal) of the full-resolution
images in `images/`. Every malformed file gives one `SceneFormatError` line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SceneFormatError
from .base import SceneData, build_scene, check_pose
from .nerfstudio import image_size

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # LLFF's loader takes JPG, jpg and png


def llff_image_dir(root: Path) -> Path:
    """`images/` (the resolution hwf refers to), else the least downscaled `images_N/` there is."""
    if (root / "images").is_dir():
        return root / "images"
    scaled = sorted(
        (p for p in root.glob("images_*") if p.is_dir() and p.name[7:].isdigit()), key=lambda p: int(p.name[7:])
    )
    if not scaled:
        raise SceneFormatError(f"{root}: no images/ folder next to poses_bounds.npy")
    return scaled[0]


def read_llff(path) -> SceneData:
    """An LLFF folder (`poses_bounds.npy` + `images/`, the file itself also accepted) as SceneData: poses turned
    into OpenGL camera-to-world matrices ([right, up, back] = [R1, -R0, R2], LLFF's own conversion), a centred
    principal point, the focal length scaled to the images' actual size (an `images_N/` folder alone is fine), every
    8th view held out as LLFF does. No points; the depth bounds frame the normalisation instead."""
    path = Path(path)
    npy = path if path.is_file() else path / "poses_bounds.npy"
    try:
        arr = np.load(npy, allow_pickle=False)
    except FileNotFoundError:
        raise SceneFormatError(f"{npy}: file not found") from None
    except Exception as err:  # numpy raises several types for a file that is not an .npy
        raise SceneFormatError(f"{npy}: not a readable .npy array ({type(err).__name__})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or len(arr) == 0 or not np.issubdtype(arr.dtype, np.number):
        raise SceneFormatError(
            f"{npy}: array of shape {arr.shape} ({arr.dtype}), expected N x 17 numbers (3x5 pose|hwf and near, far)"
        )
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        row = int(np.nonzero(~np.isfinite(arr).all(1))[0][0])
        raise SceneFormatError(f"{npy}: row {row} contains NaN or inf")
    folder = llff_image_dir(npy.parent)
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(images) != len(arr):
        raise SceneFormatError(
            f"{npy}: {len(arr)} poses but {folder} holds {len(images)} images (.jpg/.png); they pair up in sorted order"
        )
    poses, (near, far) = arr[:, :15].reshape(-1, 3, 5), arr[:, 15:].T
    bad = np.nonzero((near <= 0) | (far <= near))[0]
    if len(bad):
        raise SceneFormatError(
            f"{npy}: row {bad[0]} has bounds near={near[bad[0]]}, far={far[bad[0]]}; need 0 < near < far"
        )
    c2w, intrinsics = [], []
    for i, (pose, image) in enumerate(zip(poses, images)):
        h, w, focal = pose[:, 4]
        if min(h, w, focal) <= 0:
            raise SceneFormatError(f"{npy}: row {i} has hwf ({h}, {w}, {focal}); all must be positive")
        rot = np.stack([pose[:, 1], -pose[:, 0], pose[:, 2]], 1)  # [down, right, back] -> [right, up, back]
        c2w.append(check_pose(np.hstack([rot, pose[:, 3:4]]), str(npy), f"pose in row {i} ({image.name})"))
        actual_w, actual_h = image_size(image)
        if abs(actual_w * h - actual_h * w) > max(h, w):  # more than rounding apart: not a scaled copy
            raise SceneFormatError(
                f"{image}: stored {actual_w}x{actual_h} but {npy.name} row {i} declares {w:g}x{h:g} "
                f"(a different aspect ratio)"
            )
        sx, sy = actual_w / w, actual_h / h
        intrinsics.append([focal * sx, focal * sy, actual_w / 2, actual_h / 2, actual_w, actual_h])
    c2w = np.stack(c2w)
    # The depth range along each optical axis stands in for the missing points, so that a forward-facing capture
    # is centred on what it looks at rather than on where its nearly parallel axes happen to cross.
    axes = -c2w[:, :3, 2]
    extent = np.concatenate([c2w[:, :3, 3] + axes * near[:, None], c2w[:, :3, 3] + axes * far[:, None]])
    return build_scene("llff", images, c2w, np.array(intrinsics), where=str(npy), extent_points=extent)


__all__ = ["read_llff", "llff_image_dir"]
