"""COLMAP sparse models (cameras / images / points3D, .bin or .txt) read and written without pycolmap. Poses are
stored world-to-camera in OpenCV axes; `read_colmap` converts them once to our OpenGL camera-to-world matrices.
Every malformed file gives one `SceneFormatError` line naming the file."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SceneFormatError
from ..geometry import quat_to_rotmat, rotmat_to_quat
from .base import SceneData, build_scene, check_files, check_pose
from .undistort import colmap_distortion

# COLMAP's model ids, names and parameter counts (src/colmap/sensor/models.h).
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
MODEL_IDS = {name: (i, k) for i, (name, k) in CAMERA_MODELS.items()}
# Supported models: positions of (fx, fy, cx, cy) in the params; the rest is distortion (undistort.py), which
# `SceneData.load_images` removes. Fisheye, FOV and thin-prism models are refused.
PINHOLE_LIKE = {
    "SIMPLE_PINHOLE": (0, 0, 1, 2),
    "PINHOLE": (0, 1, 2, 3),
    "SIMPLE_RADIAL": (0, 0, 1, 2),
    "RADIAL": (0, 0, 1, 2),
    "OPENCV": (0, 1, 2, 3),
    "FULL_OPENCV": (0, 1, 2, 3),
}
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])  # flips camera y and z (either direction)


@dataclass
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass
class ColmapImage:
    id: int
    qvec: tuple[float, float, float, float]  # world-to-camera rotation, w first
    tvec: tuple[float, float, float]  # world-to-camera translation
    camera_id: int
    name: str


# ---------------------------------------------------------------- binary
class _Bytes:
    """A cursor over a file's bytes whose reads fail with one line ('truncated') instead of struct.error."""

    def __init__(self, data: bytes, path, what: str):
        self.data, self.pos, self.path, self.what = data, 0, path, what

    def truncated(self, n, i) -> SceneFormatError:
        return SceneFormatError(f"{self.path}: truncated: claims {n} {self.what} but ends early (in record {i + 1})")

    def unpack(self, fmt: str, n: int, i: int) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise self.truncated(n, i)
        out = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return out

    def skip(self, size: int, n: int, i: int) -> None:
        if size < 0 or self.pos + size > len(self.data):
            raise self.truncated(n, i)
        self.pos += size

    def cstring(self, n: int, i: int) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise self.truncated(n, i)
        raw, self.pos = self.data[self.pos : end], end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SceneFormatError(f"{self.path}: image name in record {i + 1} is not UTF-8") from None

    def count(self, min_record: int) -> int:
        if len(self.data) < 8:
            raise SceneFormatError(f"{self.path}: truncated: no record count")
        n = self.unpack("<Q", 0, 0)[0]
        if n * min_record > len(self.data) - self.pos:
            raise SceneFormatError(
                f"{self.path}: truncated: claims {n} {self.what} but has room for at most "
                f"{(len(self.data) - self.pos) // min_record}"
            )
        return n

    def finish(self, n: int) -> None:
        if self.pos != len(self.data):
            raise SceneFormatError(f"{self.path}: {len(self.data) - self.pos} unexpected bytes after {n} {self.what}")


def parse_cameras_bin(data: bytes, path="cameras.bin") -> dict[int, ColmapCamera]:
    """cameras.bin: u64 n, then per camera i32 id, i32 model_id, u64 width, u64 height, f64 params[k]."""
    r = _Bytes(data, path, "cameras")
    n, out = r.count(24), {}
    for i in range(n):
        cam_id, model_id, width, height = r.unpack("<iiQQ", n, i)
        if model_id not in CAMERA_MODELS:
            raise SceneFormatError(f"{path}: camera {cam_id} has unknown camera model id {model_id}")
        name, k = CAMERA_MODELS[model_id]
        _unique(out, cam_id, path, f"record {i + 1}")
        out[cam_id] = ColmapCamera(cam_id, name, width, height, r.unpack(f"<{k}d", n, i))
    r.finish(n)
    return out


def parse_images_bin(data: bytes, path="images.bin") -> list[ColmapImage]:
    """images.bin: u64 n, then per image i32 id, f64 qvec[4], f64 tvec[3], i32 camera_id, NUL-terminated name,
    u64 n_points2D and that many (f64 x, f64 y, i64 point3D_id), which we skip."""
    r = _Bytes(data, path, "images")
    n, out = r.count(73), []
    for i in range(n):
        image_id, qw, qx, qy, qz, tx, ty, tz, cam_id = r.unpack("<i7di", n, i)
        name = r.cstring(n, i)
        n2d = r.unpack("<Q", n, i)[0]
        r.skip(24 * n2d, n, i)
        out.append(ColmapImage(image_id, (qw, qx, qy, qz), (tx, ty, tz), cam_id, name))
    r.finish(n)
    return out


def parse_points3d_bin(data: bytes, path="points3D.bin", tracks: bool = False):
    """points3D.bin: u64 n, then per point u64 id, f64 xyz[3], u8 rgb[3], f64 error, u64 track_len and that many
    (i32 image_id, i32 point2D_idx). Returns xyz (M,3) float64 and rgb (M,3) uint8; with `tracks`, also each
    point's IMAGE_IDs (a list of M int arrays: the images that saw it)."""
    r = _Bytes(data, path, "points")
    n = r.count(51)
    xyz, rgb, seen = np.empty((n, 3)), np.empty((n, 3), np.uint8), []
    for i in range(n):
        rec = r.unpack("<Q3d3BdQ", n, i)
        xyz[i], rgb[i] = rec[1:4], rec[4:7]
        start = r.pos
        r.skip(8 * rec[8], n, i)
        if tracks:
            seen.append(np.frombuffer(data, "<i4", count=2 * rec[8], offset=start)[0::2].astype(np.int64))
    r.finish(n)
    return (xyz, rgb, seen) if tracks else (xyz, rgb)


# ---------------------------------------------------------------- text
def _records(text: str):
    """(line number, tokens) of the non-empty, non-comment lines."""
    for ln, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if s and not s.startswith("#"):
            yield ln, s


def _numbers(tokens, kind, path, ln, what):
    try:
        return [kind(t) for t in tokens]
    except ValueError:
        raise SceneFormatError(f"{path} line {ln}: {what} are not all {kind.__name__}s") from None


def parse_cameras_txt(text: str, path="cameras.txt") -> dict[int, ColmapCamera]:
    """cameras.txt: one camera per line, `CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]`."""
    out = {}
    for ln, line in _records(text):
        tok = line.split()
        if len(tok) < 4:
            raise SceneFormatError(f"{path} line {ln}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]")
        if tok[1] not in MODEL_IDS:
            raise SceneFormatError(f"{path} line {ln}: unknown camera model {tok[1]!r}")
        k = MODEL_IDS[tok[1]][1]
        if len(tok) != 4 + k:
            raise SceneFormatError(f"{path} line {ln}: {tok[1]} takes {k} parameters, found {len(tok) - 4}")
        cam_id, width, height = _numbers([tok[0], tok[2], tok[3]], int, path, ln, "CAMERA_ID WIDTH HEIGHT")
        _unique(out, cam_id, path, f"line {ln}")
        out[cam_id] = ColmapCamera(cam_id, tok[1], width, height, tuple(_numbers(tok[4:], float, path, ln, "params")))
    return out


def _unique(seen, key, path, where: str) -> None:
    if key in seen:
        raise SceneFormatError(f"{path} {where}: id {key} is defined twice")


def _all_numbers(line: str) -> bool:
    try:
        [float(t) for t in line.split()]
    except ValueError:
        return False
    return True


def parse_images_txt(text: str, path="images.txt") -> list[ColmapImage]:
    """images.txt: two lines per image, `IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME` then its 2D points (skipped;
    the second line may be empty). A file written without the POINTS2D lines (hand-made, or by tools that drop
    them) is read too: a line after an image line that is not all numbers is the next image."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        s = lines[i].strip()
        i += 1
        if not s or s.startswith("#"):
            continue
        tok = s.split(maxsplit=9)
        if len(tok) < 10:
            raise SceneFormatError(f"{path} line {i}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        image_id, cam_id = _numbers([tok[0], tok[8]], int, path, i, "IMAGE_ID CAMERA_ID")
        q = _numbers(tok[1:8], float, path, i, "QW QX QY QZ TX TY TZ")
        out.append(ColmapImage(image_id, tuple(q[:4]), tuple(q[4:]), cam_id, tok[9]))
        if i < len(lines) and _all_numbers(lines[i]):
            i += 1  # the POINTS2D line (empty or x y point3D_id triples)
    return out


def parse_points3d_txt(text: str, path="points3D.txt", tracks: bool = False):
    """points3D.txt: one point per line, `POINT3D_ID X Y Z R G B ERROR TRACK[]`; with `tracks`, also each point's
    IMAGE_IDs (as `parse_points3d_bin`)."""
    xyz, rgb, seen = [], [], []
    for ln, line in _records(text):
        tok = line.split()
        if len(tok) < 8 or len(tok) % 2:
            raise SceneFormatError(f"{path} line {ln}: expected POINT3D_ID X Y Z R G B ERROR TRACK[] (pairs)")
        xyz.append(_numbers(tok[1:4], float, path, ln, "X Y Z"))
        colour = _numbers(tok[4:7], int, path, ln, "R G B")
        if not all(0 <= c <= 255 for c in colour):
            raise SceneFormatError(f"{path} line {ln}: colour {colour} outside 0-255")
        rgb.append(colour)
        if tracks:
            seen.append(np.array(_numbers(tok[8::2], int, path, ln, "track IMAGE_IDs"), dtype=np.int64))
    xyz, rgb = np.array(xyz, dtype=np.float64).reshape(-1, 3), np.array(rgb, dtype=np.uint8).reshape(-1, 3)
    return (xyz, rgb, seen) if tracks else (xyz, rgb)


# ---------------------------------------------------------------- files
def _read(path: Path, binary: bool):
    try:
        return path.read_bytes() if binary else path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SceneFormatError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise SceneFormatError(f"{path}: cannot read ({err.strerror or err})") from None


def _model_file(folder: Path, stem: str, required: bool = True) -> Path | None:
    for ext in (".bin", ".txt"):
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    if required:
        raise SceneFormatError(f"{folder}: missing file {stem}.bin or {stem}.txt")
    return None


def read_cameras(path: Path) -> dict[int, ColmapCamera]:
    path = Path(path)
    parse = parse_cameras_bin if path.suffix == ".bin" else parse_cameras_txt
    return parse(_read(path, path.suffix == ".bin"), path)


def read_images(path: Path) -> list[ColmapImage]:
    path = Path(path)
    parse = parse_images_bin if path.suffix == ".bin" else parse_images_txt
    return parse(_read(path, path.suffix == ".bin"), path)


def read_points3d(path: Path, tracks: bool = False):
    """(xyz, rgb) of points3D.bin / .txt, and with `tracks` each point's IMAGE_IDs."""
    path = Path(path)
    parse = parse_points3d_bin if path.suffix == ".bin" else parse_points3d_txt
    return parse(_read(path, path.suffix == ".bin"), path, tracks=tracks)


def find_model_dir(path: Path) -> Path | None:
    """The folder holding cameras.{bin,txt}: `sparse/0/`, `sparse/` or the folder itself."""
    for folder in (path / "sparse" / "0", path / "sparse", path):
        if _model_file(folder, "cameras", required=False):
            return folder
    return None


def image_c2w(image: ColmapImage, where: str) -> np.ndarray:
    """OpenGL camera-to-world (4,4) from a COLMAP world-to-camera pose in OpenCV axes."""
    q, t = np.asarray(image.qvec, dtype=np.float64), np.asarray(image.tvec, dtype=np.float64)
    if not (np.isfinite(q).all() and np.isfinite(t).all()):
        raise SceneFormatError(f"{where}: pose of image {image.name!r} contains NaN or inf")
    if np.linalg.norm(q) < 1e-12:
        raise SceneFormatError(f"{where}: pose of image {image.name!r} has a zero quaternion (no rotation)")
    rot = quat_to_rotmat(torch.from_numpy(q)[None])[0].numpy()  # normalises q, as COLMAP does on reading
    c2w_cv = np.eye(4)
    c2w_cv[:3, :3], c2w_cv[:3, 3] = rot.T, -rot.T @ t
    return check_pose(c2w_cv @ OPENCV_TO_OPENGL, where, f"pose of image {image.name!r}")


def read_colmap(path) -> SceneData:
    """A COLMAP scene folder (with `sparse/0/`, `sparse/` or the model files themselves; images in `images/`)
    as SceneData. Pinhole camera models and OpenCV-style distortion (SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV),
    which `SceneData.load_images` undistorts; other models are a one-line error."""
    path = Path(path)
    model = find_model_dir(path)
    if model is None:
        raise SceneFormatError(f"{path}: no COLMAP model (looked for sparse/0/, sparse/ and cameras.bin/.txt)")
    cam_file, img_file = _model_file(model, "cameras"), _model_file(model, "images")
    cameras, images = read_cameras(cam_file), read_images(img_file)
    pts_file = _model_file(model, "points3D", required=False)
    xyz, rgb, tracks = read_points3d(pts_file, tracks=True) if pts_file else (None, None, None)
    if xyz is not None and not np.isfinite(xyz).all():
        raise SceneFormatError(f"{pts_file}: points contain NaN or inf")
    if not images:
        raise SceneFormatError(f"{img_file}: the scene has zero views")
    for key, what in ((lambda im: im.id, "IMAGE_ID"), (lambda im: im.name, "NAME")):
        seen: set = set()
        for im in images:
            if key(im) in seen:
                raise SceneFormatError(f"{img_file}: {what} {key(im)!r} appears twice; each image is registered once")
            seen.add(key(im))
    images = sorted(images, key=lambda im: im.name)
    root = next((d for d in (path, model.parent, model.parent.parent) if (d / "images").is_dir()), None)
    if root is None:
        raise SceneFormatError(f"{path}: no images/ folder next to the COLMAP model {model}")
    c2w, intr, distortion = [], [], []
    for im in images:
        cam = cameras.get(im.camera_id)
        if cam is None:
            raise SceneFormatError(
                f"{img_file}: image {im.name!r} uses camera_id {im.camera_id}, which is not in {cam_file}"
            )
        if cam.model not in PINHOLE_LIKE:
            raise SceneFormatError(
                f"{cam_file}: camera {cam.id} uses the {cam.model} model, which is not supported (supported: "
                f"{', '.join(PINHOLE_LIKE)}; `colmap image_undistorter` turns other models into PINHOLE)"
            )
        if cam.width <= 0 or cam.height <= 0:
            raise SceneFormatError(f"{cam_file}: camera {cam.id} has size {cam.width}x{cam.height}")
        focal_centre = [cam.params[j] for j in PINHOLE_LIKE[cam.model]]
        if not np.isfinite(focal_centre).all() or min(focal_centre[:2]) <= 0:
            raise SceneFormatError(
                f"{cam_file}: camera {cam.id} has a non-finite or non-positive focal length or principal point"
            )
        c2w.append(image_c2w(im, str(img_file)))
        intr.append(focal_centre + [cam.width, cam.height])
        if not np.isfinite(cam.params).all():
            raise SceneFormatError(f"{cam_file}: camera {cam.id} has a non-finite distortion parameter")
        distortion.append(colmap_distortion(cam.model, cam.params))
    paths = [root / "images" / im.name for im in images]
    check_files(paths, str(img_file))
    masks_dir = root / "masks"
    masks = (
        [next((m for m in (masks_dir / im.name, masks_dir / f"{im.name}.png") if m.is_file()), None) for im in images]
        if masks_dir.is_dir()
        else None
    )
    colours = None if rgb is None else rgb.astype(np.float64) / 255.0
    scene = build_scene(
        "colmap",
        paths,
        np.stack(c2w),
        np.array(intr, dtype=np.float64),
        masks,
        xyz,
        colours,
        where=str(img_file),
        distortion=distortion,
    )
    if tracks and scene.points is not None and any(len(t) for t in tracks):
        scene.point_views = point_views(tracks, [im.id for im in images])
        check_point_views(scene, img_file, pts_file)
    return scene


AGREEMENT_MIN = 0.5  # the median view must see at least this share of its matched points


def check_point_views(scene: SceneData, images_file: Path, points_file: Path, margin: float = 0.1) -> None:
    """One-line SceneFormatError when the cameras and the SfM points disagree. Each view's matched points (the
    points whose track names it) must lie in front of it and inside its frame (widened by `margin` of its size on
    every side, since this pinhole projection ignores lens distortion): in a consistent model nearly all do. When
    the median view sees fewer than half, the images file and the points file come from different
    reconstructions (pycolmap refuses to read such a model), and a fit from it only paints fog (a public capture
    did this)."""
    from ..cameras import project_points

    shares = []
    for i, matched in enumerate(scene.point_views):
        if len(matched) == 0:
            continue
        w, h = (int(v) for v in scene.sizes[i])
        xy, depth = (v[0] for v in project_points(scene.points[matched].float(), scene.cameras([i]), h, w))
        x, y = xy.unbind(-1)
        inside = (depth > 0) & (x > -margin * w) & (x < (1 + margin) * w) & (y > -margin * h) & (y < (1 + margin) * h)
        shares.append(float(inside.float().mean()))
    median = float(np.median(shares)) if shares else 1.0
    if median < AGREEMENT_MIN:
        raise SceneFormatError(
            f"{images_file}: the cameras and the SfM points disagree: in the median view only "
            f"{median:.0%} of the points matched in it lie in front of it and inside its frame (a "
            f"consistent model has nearly all); {images_file.name} and {points_file.name} probably come from "
            f"different reconstructions: export the model again"
        )


def point_views(tracks: list[np.ndarray], image_ids: list[int]) -> list[torch.Tensor]:
    """Per view (in `image_ids`' order), the indices of the points whose track holds that view's IMAGE_ID: the
    points SfM matched in it (visible there). Track entries of unknown images are ignored."""
    where = {image_id: k for k, image_id in enumerate(image_ids)}
    owners = [np.full(len(t), i, np.int64) for i, t in enumerate(tracks)]
    point = np.concatenate(owners) if owners else np.zeros(0, np.int64)
    view = np.array([where.get(int(v), -1) for t in tracks for v in t], dtype=np.int64)
    keep = view >= 0
    point, view = point[keep], view[keep]
    order = np.lexsort((point, view))
    point, view = point[order], view[order]
    bounds = np.searchsorted(view, np.arange(len(image_ids) + 1))
    return [torch.from_numpy(np.unique(point[bounds[k] : bounds[k + 1]])) for k in range(len(image_ids))]


# ---------------------------------------------------------------- writers
def _quat_str(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def write_colmap_model(
    folder,
    cameras: list[ColmapCamera],
    images: list[ColmapImage],
    xyz=None,
    rgb=None,
    binary: bool = False,
    tracks=None,
) -> Path:
    """Write cameras / images / points3D (.bin or .txt) into `folder` (created); no 2D points. `tracks`: per point,
    the IMAGE_IDs that saw it (written with POINT2D_IDX 0, as there are no 2D points); none by default."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    xyz = np.zeros((0, 3)) if xyz is None else np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    rgb = np.full((len(xyz), 3), 128, np.uint8) if rgb is None else np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    tracks = [[int(v) for v in t] for t in tracks] if tracks is not None else [[] for _ in range(len(xyz))]
    if binary:
        cams = [struct.pack("<Q", len(cameras))] + [
            struct.pack(f"<iiQQ{len(c.params)}d", c.id, MODEL_IDS[c.model][0], c.width, c.height, *c.params)
            for c in cameras
        ]
        imgs = [struct.pack("<Q", len(images))] + [
            struct.pack("<i7di", im.id, *im.qvec, *im.tvec, im.camera_id)
            + im.name.encode()
            + b"\0"
            + struct.pack("<Q", 0)
            for im in images
        ]
        pts = [struct.pack("<Q", len(xyz))] + [
            struct.pack("<Q3d3BdQ", i + 1, *p, *c, 0.0, len(t))
            + struct.pack(f"<{2 * len(t)}i", *[x for v in t for x in (v, 0)])
            for i, (p, c, t) in enumerate(zip(xyz.tolist(), rgb.tolist(), tracks))
        ]
        for name, parts in (("cameras", cams), ("images", imgs), ("points3D", pts)):
            (folder / f"{name}.bin").write_bytes(b"".join(parts))
        return folder
    cams = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    cams += [f"{c.id} {c.model} {c.width} {c.height} {_quat_str(c.params)}" for c in cameras]
    imgs = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
    ]
    for im in images:
        imgs += [f"{im.id} {_quat_str(im.qvec)} {_quat_str(im.tvec)} {im.camera_id} {im.name}", ""]
    pts = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
    ]
    pts += [
        f"{i + 1} {_quat_str(p)} {c[0]} {c[1]} {c[2]} 0.0" + "".join(f" {v} 0" for v in t)
        for i, (p, c, t) in enumerate(zip(xyz.tolist(), rgb.tolist(), tracks))
    ]
    for name, lines in (("cameras", cams), ("images", imgs), ("points3D", pts)):
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def pinhole_model(c2w, names, intrinsics) -> tuple[list[ColmapCamera], list[ColmapImage]]:
    """COLMAP cameras (PINHOLE, one per image) and images from OpenGL camera-to-world matrices (N,4,4), names and
    per-image (fx, fy, cx, cy, w, h) in pixels."""
    c2w = np.asarray(c2w, dtype=np.float64).reshape(-1, 4, 4)
    k = np.asarray(intrinsics, dtype=np.float64).reshape(-1, 6)
    if not len(c2w) == len(k) == len(names):
        raise ValueError(f"{len(c2w)} poses, {len(k)} intrinsics and {len(names)} names: counts differ")
    cameras, images = [], []
    for i, (pose, (fx, fy, cx, cy, w, h), name) in enumerate(zip(c2w, k, names)):
        w2c = np.linalg.inv(pose @ OPENCV_TO_OPENGL)
        cameras.append(ColmapCamera(i + 1, "PINHOLE", int(round(w)), int(round(h)), (fx, fy, cx, cy)))
        images.append(ColmapImage(i + 1, tuple(rotmat_to_quat(w2c[:3, :3])), tuple(w2c[:3, 3]), i + 1, str(name)))
    return cameras, images


def write_colmap_text(folder, c2w, names, intrinsics, points=None, colours=None, tracks=None) -> Path:
    """A COLMAP text model (cameras.txt, images.txt, points3D.txt) in `folder` from OpenGL camera-to-world matrices
    (N,4,4), image names (relative to the scene's images/), per-image (fx, fy, cx, cy, w, h) pinhole intrinsics in
    pixels, points (M,3), their colours (M,3) uint8 and optionally their tracks (per point, the 0-based indices of
    the views that saw it). Put it in `<root>/sparse/0/` for `read_colmap(<root>)`."""
    ids = None if tracks is None else [[int(v) + 1 for v in t] for t in tracks]  # pinhole_model's IMAGE_IDs
    return write_colmap_model(folder, *pinhole_model(c2w, names, intrinsics), points, colours, False, ids)


def write_colmap_binary(folder, c2w, names, intrinsics, points=None, colours=None) -> Path:
    """The same as `write_colmap_text`, as cameras.bin, images.bin and points3D.bin."""
    return write_colmap_model(folder, *pinhole_model(c2w, names, intrinsics), points, colours, binary=True)


__all__ = [
    "read_colmap",
    "write_colmap_text",
    "write_colmap_binary",
    "write_colmap_model",
    "pinhole_model",
    "ColmapCamera",
    "ColmapImage",
    "CAMERA_MODELS",
    "read_cameras",
    "read_images",
    "read_points3d",
    "parse_cameras_bin",
    "parse_images_bin",
    "parse_points3d_bin",
    "parse_cameras_txt",
    "parse_images_txt",
    "parse_points3d_txt",
]
