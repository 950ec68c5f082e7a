"""nerfstudio `transforms.json` and the Blender / NeRF-synthetic `transforms_{train,val,test}.json` variant. Both
store OpenGL camera-to-world matrices, so poses need no axis change; intrinsics become fractions of the image size
and nerfstudio's distortion terms OpenCV coefficients (undistorted at load, see undistort.py).
Every malformed file gives one `SceneFormatError` line naming the file and the field."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import SceneFormatError
from ..utils.files import read_json
from .base import SceneData, build_scene, check_files, check_pose, interval_split
from .undistort import opencv_coefficients

# nerfstudio's perspective models; their distortion is always the k1..p2 keys (nerfstudio's OPENCV-style model:
# radial 1 + k1 r^2 + k2 r^4 + k3 r^6 + k4 r^8, tangential p1, p2). Fisheye and equirectangular are refused.
PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
DISTORTION_KEYS = ("k1", "k2", "p1", "p2", "k3", "k4")  # OpenCV's order, then k4


def load_json(path: Path) -> dict:
    """A JSON object from a file, or one line saying why not."""
    return read_json(path, "transforms file", error=SceneFormatError)


def _number(value, path, name: str, where: str = "") -> float:
    at = f" ({where})" if where else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SceneFormatError(f"{path}: field {name} must be a number, found {type(value).__name__}{at}")
    if not math.isfinite(value):
        raise SceneFormatError(f"{path}: field {name} is NaN or inf{at}")
    return float(value)


def _string(value, path, name: str, where: str = "") -> str:
    if not isinstance(value, str) or not value:
        at = f" ({where})" if where else ""
        raise SceneFormatError(f"{path}: field {name} must be a non-empty string, found {type(value).__name__}{at}")
    return value


def _frames(meta: dict, path) -> list[dict]:
    frames = meta.get("frames")
    if frames is None:
        raise SceneFormatError(f"{path}: missing field frames")
    if not isinstance(frames, list):
        raise SceneFormatError(f"{path}: field frames must be a list, found {type(frames).__name__}")
    if not frames:
        raise SceneFormatError(f"{path}: the scene has zero views (frames is empty)")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise SceneFormatError(f"{path}: frames[{i}] must be an object, found {type(frame).__name__}")
        for key in ("file_path", "transform_matrix"):
            if key not in frame:
                raise SceneFormatError(f"{path}: missing field {key} in frames[{i}]")
    return frames


def _focal(get, axis: str, size: float, path, where: str) -> float:
    """fl_x (fl_y) in pixels, else from camera_angle_x (_y), the field of view in radians (Blender's layout)."""
    if get(f"fl_{axis}") is not None:
        return _number(get(f"fl_{axis}"), path, f"fl_{axis}", where)
    if get(f"camera_angle_{axis}") is None:
        raise SceneFormatError(f"{path}: missing field fl_{axis} (or camera_angle_{axis}) (in {where})")
    angle = _number(get(f"camera_angle_{axis}"), path, f"camera_angle_{axis}", where)
    if not 0 < angle < math.pi:
        raise SceneFormatError(
            f"{path}: camera_angle_{axis} = {angle:g} is not a field of view in radians (0 to pi) (in {where})"
        )
    return 0.5 * size / math.tan(0.5 * angle)


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image file, from its header."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise SceneFormatError(f"{path}: image file not found") from None
    except Exception as err:  # PIL raises several types for unreadable files
        raise SceneFormatError(f"{path}: not a readable image ({type(err).__name__})") from None


def read_points_ply(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Points (M,3) and colours (M,3) in [0,1] (None without red/green/blue) from a point-cloud .ply."""
    from plyfile import PlyData

    if not path.is_file():
        raise SceneFormatError(f"{path}: point cloud file not found")
    try:
        vertex = PlyData.read(str(path))["vertex"].data
        names = vertex.dtype.names or ()
        if not {"x", "y", "z"} <= set(names):
            raise SceneFormatError(f"{path}: the vertex element has no x, y, z properties")
        listed = [
            k for k in ("x", "y", "z", "red", "green", "blue") if k in names and vertex.dtype[k].kind not in "fiu"
        ]
        if listed:
            raise SceneFormatError(f"{path}: vertex property {listed[0]} is not a scalar number (a list?)")
        xyz = np.stack([np.asarray(vertex[k], dtype=np.float64) for k in "xyz"], 1)
        rgb = None
        if {"red", "green", "blue"} <= set(names):
            raw = np.stack([np.asarray(vertex[k]) for k in ("red", "green", "blue")], 1)
            scale = float(np.iinfo(raw.dtype).max) if np.issubdtype(raw.dtype, np.integer) else 1.0
            rgb = raw.astype(np.float64) / scale
    except SceneFormatError:
        raise
    except Exception as err:  # plyfile raises many types for malformed files
        raise SceneFormatError(
            f"{path}: not a readable point-cloud PLY ({type(err).__name__}: {err})".splitlines()[0]
        ) from None
    if not np.isfinite(xyz).all():
        raise SceneFormatError(f"{path}: points contain NaN or inf")
    return xyz, rgb


def _split(meta: dict, path, names: list[str], root: Path) -> tuple[list[int], list[int]]:
    """Indices of the train/val views from train_filenames / val_filenames (test_filenames stands in for val),
    the complement when only one list is given, else nerfstudio's every-8th hold-out."""
    lists = {}
    index = {os.path.normpath(root / n): i for i, n in enumerate(names)}
    for key in ("train_filenames", "val_filenames", "test_filenames"):
        if key not in meta:
            continue
        entries = meta[key]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise SceneFormatError(f"{path}: field {key} must be a list of file names")
        missing = [e for e in entries if os.path.normpath(root / e) not in index]
        if missing:
            raise SceneFormatError(
                f"{path}: {key} names {missing[0]!r}, which is no frame's file_path ({len(missing)} such)"
            )
        lists[key] = [index[os.path.normpath(root / e)] for e in entries]
    train, val = lists.get("train_filenames"), lists.get("val_filenames", lists.get("test_filenames"))
    if train is None and val is None:
        return interval_split(len(names))
    everything = range(len(names))
    train = train if train is not None else [i for i in everything if i not in set(val)]
    val = val if val is not None else [i for i in everything if i not in set(train)]
    return sorted(train), sorted(val)


def read_nerfstudio(path) -> SceneData:
    """A nerfstudio `transforms.json` (the file or its folder) as SceneData. Intrinsics and distortion (k1, k2, k3,
    p1, p2) may be top-level or per frame; fisheye and equirectangular cameras, and k4 (no OpenCV equivalent), are
    a one-line error."""
    path = Path(path)
    path = path / "transforms.json" if path.is_dir() else path
    meta = load_json(path)
    root = path.parent
    frames = _frames(meta, path)
    order = sorted(range(len(frames)), key=lambda j: str(frames[j]["file_path"]))  # nerfstudio sorts by file name
    names, c2w, masks, distortion = [], [], [], []
    for i in order:
        frame = frames[i]
        where = f"frames[{i}] ({frame['file_path']!r})" if isinstance(frame["file_path"], str) else f"frames[{i}]"
        names.append(_string(frame["file_path"], path, "file_path", where))
        c2w.append(check_pose(frame["transform_matrix"], str(path), f"transform_matrix of {where}"))
        model = frame.get("camera_model", meta.get("camera_model", "OPENCV"))
        if model not in PINHOLE_MODELS:
            raise SceneFormatError(
                f"{path}: camera_model {model!r} is not supported ({where}); only pinhole-like models are "
                f"({', '.join(PINHOLE_MODELS)}, with k1, k2, k3, p1, p2 distortion)"
            )
        mask = frame.get("mask_path")
        masks.append(None if mask is None else root / _string(mask, path, "mask_path", where))
        coeffs = [_number(frame.get(key, meta.get(key, 0.0)), path, key, where) for key in DISTORTION_KEYS]
        if coeffs[5] != 0.0:
            raise SceneFormatError(
                f"{path}: k4 = {coeffs[5]} is not supported for camera_model {model} ({where}); OpenCV's model has "
                f"k1, k2, k3, p1, p2 (no r^8 term)"
            )
        distortion.append(opencv_coefficients(coeffs[:5]))
    paths = [root / n for n in names]
    check_files(paths, str(path))
    check_files([m for m in masks if m is not None], str(path), "mask")
    intrinsics = []
    for i, image in zip(order, paths):
        get = lambda key: frames[i].get(key, meta.get(key))  # noqa: E731
        where = f"frames[{i}] or top level"
        if get("w") is None or get("h") is None:
            w, h = image_size(image)
        else:
            w, h = _number(get("w"), path, "w", where), _number(get("h"), path, "h", where)
        fx = _focal(get, "x", w, path, where)
        fy = fx if get("fl_y") is None and get("camera_angle_y") is None else _focal(get, "y", h, path, where)
        cx = w / 2 if get("cx") is None else _number(get("cx"), path, "cx", where)
        cy = h / 2 if get("cy") is None else _number(get("cy"), path, "cy", where)
        if min(fx, fy, w, h) <= 0:
            raise SceneFormatError(f"{path}: focal lengths and image size must be positive (in {where})")
        intrinsics.append([fx, fy, cx, cy, w, h])
    points = colours = None
    if meta.get("ply_file_path") is not None:
        points, colours = read_points_ply(root / _string(meta["ply_file_path"], path, "ply_file_path"))
    return build_scene(
        "nerfstudio",
        paths,
        np.stack(c2w),
        np.array(intrinsics),
        masks,
        points,
        colours,
        _split(meta, path, names, root),
        where=str(path),
        distortion=distortion,
    )


def _blender_views(path: Path) -> tuple[list[Path], list[np.ndarray], list[list[float]]]:
    """Image paths, c2w and (fx, fy, cx, cy, w, h) of one transforms_<split>.json."""
    meta = load_json(path)
    if "camera_angle_x" not in meta:
        raise SceneFormatError(f"{path}: missing field camera_angle_x")
    angle = _number(meta["camera_angle_x"], path, "camera_angle_x")
    if not 0.0 < angle < math.pi:
        raise SceneFormatError(f"{path}: camera_angle_x {angle} is not an angle in (0, pi) radians")
    frames = _frames(meta, path)
    paths, c2w = [], []
    for i, frame in enumerate(frames):
        name = _string(frame["file_path"], path, "file_path", f"frames[{i}]")
        image = path.parent / name
        paths.append(
            image if image.suffix.lower() in (".png", ".jpg", ".jpeg") else image.with_name(image.name + ".png")
        )
        c2w.append(check_pose(frame["transform_matrix"], str(path), f"transform_matrix of frames[{i}] ({name!r})"))
    check_files(paths, str(path))
    intrinsics = []
    for image in paths:
        w, h = image_size(image)
        f = 0.5 * w / math.tan(0.5 * angle)
        intrinsics.append([f, f, w / 2, h / 2, w, h])
    return paths, c2w, intrinsics


def read_blender(path) -> SceneData:
    """A Blender / NeRF-synthetic folder: transforms_train.json (+ transforms_val.json, or else
    transforms_test.json, as the validation views), `camera_angle_x`, file paths without extension (.png)."""
    path = Path(path)
    path = path.parent if path.is_file() else path
    train = _blender_views(path / "transforms_train.json")
    val_file = next(
        (path / f"transforms_{s}.json" for s in ("val", "test") if (path / f"transforms_{s}.json").is_file()), None
    )
    val = _blender_views(val_file) if val_file else ([], [], [])
    n_train, n_val = len(train[0]), len(val[0])
    return build_scene(
        "blender",
        train[0] + val[0],
        np.stack(train[1] + val[1]),
        np.array(train[2] + val[2]),
        split=(list(range(n_train)), list(range(n_train, n_train + n_val))),
        where=str(path / "transforms_train.json"),
    )


__all__ = ["read_nerfstudio", "read_blender", "read_points_ply", "load_json", "image_size"]
