"""Lens distortion: camera models given as OpenCV distortion coefficients `(k1, k2, p1, p2[, k3[, k4, k5, k6]])`
(OpenCV's radial-tangential and rational models, which are COLMAP's SIMPLE_RADIAL, RADIAL, OPENCV and FULL_OPENCV
and nerfstudio's perspective k1..p2), and the undistortion of images to the pinhole camera with the SAME
intrinsics. Readers store the coefficients per view (`SceneData.distortion`); `SceneData.load_images` undistorts
each full-resolution image once, before resizing. Pixels of the pinhole image with no source pixel (off the
photo, or past the radius where the distortion polynomial folds back) get mask 0."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

# Positions in COLMAP's params of (k1, k2, p1, p2, k3, k4, k5, k6), in that order, per supported model; the
# coefficients a model lacks are 0 (pinhole models have none).
COLMAP_DISTORTION = {
    "SIMPLE_PINHOLE": (),
    "PINHOLE": (),
    "SIMPLE_RADIAL": (3,),  # f, cx, cy, k
    "RADIAL": (3, 4),  # f, cx, cy, k1, k2
    "OPENCV": (4, 5, 6, 7),  # fx, fy, cx, cy, k1, k2, p1, p2
    "FULL_OPENCV": (4, 5, 6, 7, 8, 9, 10, 11),  # ..., k3, k4, k5, k6 (OpenCV's rational model)
}


def opencv_coefficients(values) -> np.ndarray | None:
    """OpenCV coefficients (float64, length 4, 5 or 8, trailing zero terms dropped) from (k1, k2, p1, p2, k3, k4,
    k5, k6) given in that order (missing ones 0); None when every coefficient is 0 (a pinhole camera)."""
    d = np.zeros(8)
    d[: len(values)] = np.asarray(values, dtype=np.float64)
    if not d.any():
        return None
    return d if d[5:].any() else d[:5] if d[4] else d[:4]


def colmap_distortion(model: str, params) -> np.ndarray | None:
    """The OpenCV coefficients of a COLMAP camera of a supported model (a key of COLMAP_DISTORTION), or None."""
    return opencv_coefficients([params[j] for j in COLMAP_DISTORTION[model]])


def camera_matrix(intrinsics, width: int, height: int) -> np.ndarray:
    """The 3x3 pixel camera matrix for an image of width x height from resolution-free (fx/W, fy/H, cx/W, cy/H)."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return np.array([[fx * width, 0.0, cx * width], [0.0, fy * height, cy * height], [0.0, 0.0, 1.0]])


FOLD_STEP = 4  # pixels between the samples of the fold test


@lru_cache(maxsize=1)  # views that share a camera come one after another: one full-resolution map is kept
def undistort_maps(intrinsics: tuple, distortion: tuple, width: int, height: int):
    """(map_x, map_y, valid) for `cv2.remap`: for each pixel of the pinhole image (width x height, the same camera
    matrix), where to sample the distorted photo; valid (H,W) bool is False where that lies off the photo or where
    the distortion folds over (its Jacobian is not positive, so the pixel would show a wrong, mirrored part)."""
    import cv2

    k = camera_matrix(intrinsics, width, height)
    map_x, map_y = cv2.initUndistortRectifyMap(k, np.array(distortion), None, k, (width, height), cv2.CV_32FC1)
    valid = (map_x >= -0.5) & (map_x <= width - 0.5) & (map_y >= -0.5) & (map_y <= height - 0.5)
    sub_x, sub_y = map_x[::FOLD_STEP, ::FOLD_STEP], map_y[::FOLD_STEP, ::FOLD_STEP]  # a fold is smooth: coarse grid
    if min(sub_x.shape) >= 2:
        (xr, xc), (yr, yc) = np.gradient(sub_x), np.gradient(sub_y)  # d/d(row), d/d(column)
        folded = (xc * yr - xr * yc <= 0).astype(np.uint8)
        valid &= cv2.resize(folded, (width, height), interpolation=cv2.INTER_NEAREST) == 0
    return map_x, map_y, valid


def undistort(rgb: torch.Tensor, alpha: torch.Tensor | None, intrinsics, distortion):
    """A distorted photo (3,H,W) in [0,1] and its mask (1,H,W) or None as the pinhole image with the same
    resolution-free intrinsics: (rgb, mask or None, valid (1,H,W) float). Bilinear samples; edge pixels are repeated
    where there is no source (so nothing dark bleeds in) and `valid` is 0 there."""
    import cv2

    height, width = rgb.shape[-2:]
    key = tuple(float(v) for v in intrinsics), tuple(float(v) for v in distortion)
    map_x, map_y, valid = undistort_maps(*key, width, height)
    planes = rgb if alpha is None else torch.cat([rgb, alpha])
    remap = lambda p: cv2.remap(p, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # noqa: E731
    # plane by plane: several times faster than OpenCV's interleaved channels, and no transposes
    out = torch.from_numpy(np.stack([remap(np.ascontiguousarray(p.numpy())) for p in planes]))
    mask = None if alpha is None else out[3:].clamp(0.0, 1.0)
    return out[:3], mask, torch.from_numpy(valid.astype(np.float32))[None]


__all__ = [
    "COLMAP_DISTORTION",
    "opencv_coefficients",
    "colmap_distortion",
    "camera_matrix",
    "undistort_maps",
    "undistort",
]
