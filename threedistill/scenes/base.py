"""The one structure every captured-scene reader returns (`SceneData`), in our camera convention (OpenGL axes,
+Y up, resolution-free intrinsics) and in a normalised frame, plus the checks the readers share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..cameras import Cameras
from ..errors import SceneFormatError

if TYPE_CHECKING:
    from ..export.splats import SplatParams


@dataclass
class SceneData:
    """Views (image files, OpenGL camera-to-world matrices, intrinsics as fractions of the image size), optional
    points and splats, the train/val split and the similarity `transform` that took the original frame here.
    `distortion` holds each view's OpenCV distortion coefficients (None: a pinhole view; an empty list: none has
    any); `load_images` undistorts those views to the pinhole camera that `intrinsics` describes."""

    image_paths: list[Path]
    c2w: torch.Tensor  # (N,4,4) float32, OpenGL axes, normalised frame
    intrinsics: torch.Tensor  # (N,4) float32 = (fx/W, fy/H, cx/W, cy/H)
    sizes: torch.Tensor  # (N,2) int64 (W, H) as stored
    mask_paths: list[Path | None]
    points: torch.Tensor | None  # (M,3) normalised frame
    point_colours: torch.Tensor | None  # (M,3) in [0,1]
    splats: "SplatParams | None"
    train_indices: list[int]
    val_indices: list[int]
    transform: torch.Tensor  # (4,4) original frame -> normalised frame
    source: str
    distortion: list[np.ndarray | None] = field(default_factory=list)  # per view, see undistort.py
    # per view, the indices of the `points` SfM matched in it (COLMAP tracks); None when the format has none
    point_views: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.image_paths)

    def cameras(self, indices=None) -> Cameras:
        """The views as `Cameras` (intrinsics set; orbit angles from each camera position, in degrees)."""
        idx = list(range(len(self))) if indices is None else list(indices)
        c2w, intr = self.c2w[idx].float(), self.intrinsics[idx].float()
        pos = c2w[:, :3, 3]
        radius = pos.norm(dim=-1)
        elevation = torch.rad2deg(torch.asin((pos[:, 1] / radius.clamp_min(1e-12)).clamp(-1.0, 1.0)))
        azimuth = torch.rad2deg(torch.atan2(pos[:, 0], pos[:, 2]))
        return Cameras(c2w, fovy_from(intr), azimuth, elevation, radius, intr)

    def load_images(self, indices, height: int, width: int, split_valid: bool = False):
        """RGB (N,3,H,W) in [0,1] and masks (N,1,H,W) or None, resized to height x width. RGBA images are
        composited on white and their alpha is the mask unless a mask file is given; when only some views have a
        mask, the others get an all-ones mask. A view with lens distortion is undistorted at full resolution first
        (its mask alike) and always has a mask: 0 where the pinhole image has no source pixel. With split_valid,
        (rgb, masks, valid): masks hold only the files' masks and alpha, valid (N,1,H,W) or None that region."""
        from .undistort import undistort

        rgbs, masks, valids = [], [], []
        for i in indices:
            rgb, alpha = read_image(self.image_paths[i])
            if self.mask_paths[i] is not None:
                alpha = _resize(read_image(self.mask_paths[i], as_mask=True)[0], *rgb.shape[-2:])
            valid = None
            if self.distortion and self.distortion[i] is not None:
                rgb, alpha, valid = undistort(rgb, alpha, self.intrinsics[i].tolist(), self.distortion[i])
            if valid is not None and not split_valid:
                alpha = valid if alpha is None else alpha * valid
            rgbs.append(_resize(rgb, height, width))
            masks.append(None if alpha is None else _resize(alpha, height, width).clamp(0.0, 1.0))
            valids.append(None if valid is None else _resize(valid, height, width))
        rgb = torch.stack(rgbs) if rgbs else torch.zeros(0, 3, height, width)
        if split_valid:
            return rgb, _stack_masks(masks, height, width), _stack_masks(valids, height, width)
        return rgb, _stack_masks(masks, height, width)

    def to_original(self, points: torch.Tensor) -> torch.Tensor:
        """Points (...,3) from the normalised frame back to the scene's original frame."""
        return apply_similarity(torch.linalg.inv(self.transform.double()), points)

    def from_original(self, points: torch.Tensor) -> torch.Tensor:
        """Points (...,3) from the scene's original frame into the normalised frame."""
        return apply_similarity(self.transform.double(), points)


def apply_similarity(transform: torch.Tensor, points) -> torch.Tensor:
    """Apply a 4x4 similarity to points (...,3); the result has the points' dtype (float32 for non-tensors)."""
    p = torch.as_tensor(points)
    dtype = p.dtype if p.is_floating_point() else torch.float32
    out = p.double() @ transform[:3, :3].double().T + transform[:3, 3].double()
    return out.to(dtype)


# ---------------------------------------------------------------- images
def read_image(path: Path, as_mask: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An image file as float (3,H,W) in [0,1] (RGBA composited on white) and its alpha (1,H,W) or None.
    With as_mask, the first element is the mask (1,H,W): alpha if there is one, else the first channel."""
    import imageio.v3 as iio

    try:
        arr = np.asarray(iio.imread(path))
    except FileNotFoundError:
        raise SceneFormatError(f"{path}: image file not found") from None
    except Exception as err:  # imageio raises many types for unreadable files
        raise SceneFormatError(f"{path}: not a readable image ({type(err).__name__}: {err})".splitlines()[0]) from None
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise SceneFormatError(f"{path}: unsupported image shape {arr.shape}")
    scale = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0
    img = torch.from_numpy(arr.astype(np.float32) / scale).permute(2, 0, 1)
    has_alpha = img.shape[0] in (2, 4)
    alpha = img[-1:] if has_alpha else None
    colour = img[:-1] if has_alpha else img
    if as_mask:
        return (alpha if alpha is not None else colour[:1]), None
    colour = colour.expand(3, -1, -1) if colour.shape[0] == 1 else colour
    if alpha is not None:
        colour = colour * alpha + (1.0 - alpha)
    return colour.contiguous(), alpha


def _stack_masks(masks: list[torch.Tensor | None], height: int, width: int) -> torch.Tensor | None:
    """(N,1,H,W) with all-ones for the views without a mask, or None when no view has one."""
    if all(m is None for m in masks):
        return None
    ones = torch.ones(1, height, width)
    return torch.stack([ones if m is None else m for m in masks])


def _resize(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Area average when shrinking, bilinear when enlarging (per axis, whichever dominates)."""
    if img.shape[-2:] == (height, width):
        return img
    shrink = height * width < img.shape[-2] * img.shape[-1]
    mode = dict(mode="area") if shrink else dict(mode="bilinear", align_corners=False)
    return torch.nn.functional.interpolate(img[None], size=(height, width), **mode)[0]


# ---------------------------------------------------------------- checks shared by the readers
def check_pose(matrix, where: str, what: str = "pose") -> np.ndarray:
    """A finite 4x4 (or 3x4) rigid transform as float64 (4,4), else a one-line error naming `where`."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise SceneFormatError(f"{where}: {what} is not a matrix of numbers") from None
    if m.shape not in ((4, 4), (3, 4)):
        raise SceneFormatError(f"{where}: {what} has shape {m.shape}, expected 4x4")
    if not np.isfinite(m).all():
        raise SceneFormatError(f"{where}: {what} contains NaN or inf")
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    rot = m[:3, :3]
    if (
        np.abs(rot.T @ rot - np.eye(3)).max() > 1e-3
        or np.linalg.det(rot) < 0
        or np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-6
    ):
        raise SceneFormatError(f"{where}: {what} is not rigid (rotation not orthonormal)")
    return m


def check_files(paths: list[Path], where: str, what: str = "image") -> None:
    """All files exist, else one line naming the first missing one and how many are missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise SceneFormatError(f"{where}: {what} file {missing[0]} not found ({len(missing)} of {len(paths)} missing)")


MAX_IMAGE_SIDE = 100_000  # pixels; larger is an overflowed or misread size
FOV_RANGE = (0.5, 170.0)  # degrees: what a pinhole camera's field of view can be
CENTRE_RANGE = (0.1, 0.9)  # the principal point lies in the image's middle 80% (as a fraction of W and H)
MAX_DISTORTION = 50.0  # |OpenCV coefficient| beyond this is no lens


def check_intrinsics(k: np.ndarray, image_paths, where: str) -> None:
    """Pixel intrinsics (N,6: fx, fy, cx, cy, W, H) that a camera can have, else one line naming the first view that
    cannot: finite and positive, sizes below MAX_IMAGE_SIDE, fields of view within FOV_RANGE and the principal
    point inside CENTRE_RANGE. A size in other units than the focal length and principal point (a camera's `w`
    given for a 10x larger image than `fl_x` and `cx`) fails the last two."""
    name = lambda i: Path(image_paths[i]).name  # noqa: E731
    bad = ~np.isfinite(k).all(1) | (k[:, [0, 1, 4, 5]] <= 0).any(1)
    if bad.any():
        raise SceneFormatError(
            f"{where}: intrinsics must be finite with positive focal lengths and image sizes "
            f"({name(int(bad.argmax()))}: fx, fy, cx, cy, w, h = {k[int(bad.argmax())].tolist()})"
        )
    big = (k[:, 4:6] > MAX_IMAGE_SIDE).any(1)
    if big.any():
        i = int(big.argmax())
        raise SceneFormatError(
            f"{where}: image size {k[i, 4]:.6g} x {k[i, 5]:.6g} of {name(i)} is beyond {MAX_IMAGE_SIDE} pixels"
        )
    fov = np.degrees(2 * np.arctan(0.5 * k[:, 4:6] / k[:, 0:2]))  # (N, 2): horizontal, vertical
    bad = ((fov < FOV_RANGE[0]) | (fov > FOV_RANGE[1])).any(1)
    if bad.any():
        i = int(bad.argmax())
        raise SceneFormatError(
            f"{where}: field of view {fov[i, 0]:.3g} x {fov[i, 1]:.3g} degrees of {name(i)} (focal {k[i, 0]:.6g}, "
            f"{k[i, 1]:.6g} px for {k[i, 4]:.6g} x {k[i, 5]:.6g}) is outside {FOV_RANGE[0]:g}-{FOV_RANGE[1]:g}; "
            "are the focal length and the image size in the same pixels?"
        )
    centre = k[:, 2:4] / k[:, 4:6]
    bad = ((centre < CENTRE_RANGE[0]) | (centre > CENTRE_RANGE[1])).any(1)
    if bad.any():
        i = int(bad.argmax())
        raise SceneFormatError(
            f"{where}: principal point ({k[i, 2]:.6g}, {k[i, 3]:.6g}) of {name(i)} is at ({centre[i, 0]:.0%}, "
            f"{centre[i, 1]:.0%}) of its {k[i, 4]:.6g} x {k[i, 5]:.6g} image, outside the middle 80%; are cx, cy and "
            "the image size in the same pixels?"
        )


def check_camera_layout(c2w: np.ndarray, image_paths, where: str, max_spread: float = 1e4) -> None:
    """Cameras that can see a scene together: not all at one pose (nothing to triangulate), and none farther from
    the cameras' median position than `max_spread` x their median distance from it (a misplaced or overflowed
    translation)."""
    n = len(c2w)
    if n < 2:
        return
    if np.abs(c2w - c2w[:1]).max() < 1e-9:
        raise SceneFormatError(
            f"{where}: all {n} cameras have the same pose; a capture needs views from different places"
        )
    centres = c2w[:, :3, 3]
    dist = np.linalg.norm(centres - np.median(centres, axis=0), axis=1)
    typical = np.median(dist)
    if typical > 0 and (dist > max_spread * typical).any():
        i = int(dist.argmax())
        raise SceneFormatError(
            f"{where}: camera of {Path(image_paths[i]).name} stands {dist[i]:.3g} from the others' median position, "
            f"{dist[i] / typical:.3g} x their typical distance; its translation is wrong"
        )


def interval_split(n: int, every: int = 8) -> tuple[list[int], list[int]]:
    """nerfstudio's interval split: every `every`-th view (0, 8, 16, ...) is held out; one view trains alone."""
    if n < 2:
        return list(range(n)), []
    return [i for i in range(n) if i % every], [i for i in range(n) if not i % every]


def fovy_from(intrinsics: torch.Tensor) -> torch.Tensor:
    """Vertical field of view (radians) from resolution-free intrinsics (fy/H in column 1)."""
    return 2.0 * torch.atan(0.5 / intrinsics[:, 1])


def build_scene(
    source: str,
    image_paths: list[Path],
    c2w: np.ndarray,
    pixel_intrinsics: np.ndarray,
    mask_paths: list[Path | None] | None = None,
    points: np.ndarray | None = None,
    colours: np.ndarray | None = None,
    split: tuple[list[int], list[int]] | None = None,
    where: str = "scene",
    distortion: list[np.ndarray | None] | None = None,
    extent_points: np.ndarray | None = None,
) -> SceneData:
    """Normalise views given in the original frame (c2w OpenGL (N,4,4); pixel_intrinsics (N,6) = fx, fy, cx, cy,
    W, H) and points, and package them as a SceneData. `distortion`: per-view OpenCV coefficients or None.
    `extent_points` stand in for missing points when normalising (e.g. LLFF's depth bounds), and are not kept."""
    from .normalize import normalization_transform, transform_c2w, transform_points

    n = len(image_paths)
    if n == 0:
        raise SceneFormatError(f"{where}: the scene has zero views")
    k = np.asarray(pixel_intrinsics, dtype=np.float64).reshape(n, 6)
    check_intrinsics(k, image_paths, where)
    check_camera_layout(np.asarray(c2w, dtype=np.float64).reshape(n, 4, 4), image_paths, where)
    for i, coeffs in enumerate(distortion or []):
        if coeffs is not None and (np.abs(coeffs) > MAX_DISTORTION).any():
            raise SceneFormatError(
                f"{where}: distortion coefficients {np.round(coeffs, 4).tolist()} of {Path(image_paths[i]).name} are "
                f"not a lens's (k1, k2, p1, p2, k3 beyond +-{MAX_DISTORTION:g}); are they in another unit or model?"
            )
    pts = None if points is None or len(points) == 0 else np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if pts is not None and not np.isfinite(pts).all():
        raise SceneFormatError(f"{where}: points contain NaN or inf")
    transform = normalization_transform(c2w, pts if pts is not None or extent_points is None else extent_points)
    w, h = k[:, 4], k[:, 5]
    intrinsics = np.stack([k[:, 0] / w, k[:, 1] / h, k[:, 2] / w, k[:, 3] / h], 1)
    train, val = split if split is not None else interval_split(n)
    cols = None
    if pts is not None:
        cols = np.full((len(pts), 3), 0.5) if colours is None else np.asarray(colours, dtype=np.float64).reshape(-1, 3)
    return SceneData(
        image_paths=list(image_paths),
        c2w=torch.from_numpy(transform_c2w(transform, c2w)).float(),
        intrinsics=torch.from_numpy(intrinsics).float(),
        sizes=torch.from_numpy(k[:, 4:6].round().astype(np.int64)),
        mask_paths=list(mask_paths) if mask_paths is not None else [None] * n,
        points=None if pts is None else torch.from_numpy(transform_points(transform, pts)).float(),
        point_colours=None if cols is None else torch.from_numpy(cols).float().clamp(0.0, 1.0),
        splats=None,
        train_indices=list(train),
        val_indices=list(val),
        transform=torch.from_numpy(transform).float(),
        source=source,
        distortion=list(distortion) if distortion is not None and any(d is not None for d in distortion) else [],
    )


__all__ = [
    "check_intrinsics",
    "check_camera_layout",
    "SceneData",
    "apply_similarity",
    "read_image",
    "check_pose",
    "check_files",
    "interval_split",
    "build_scene",
]
