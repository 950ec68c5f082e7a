"""Captured scenes from the toy world: what a phone capture processed by COLMAP and nerfstudio would hand over
(images, poses, intrinsics, sparse points), plus the ground truth (scene, instances, cameras) to score against.

Layout of the directory:
  images/frame_00001.png        RGB views
  instances/frame_00001.png     ground-truth instance ids, 8-bit: 0 background, 1 ground, 2.. objects
  transforms.json               nerfstudio: PINHOLE intrinsics, camera-to-world OpenGL poses, split, ply_file_path
  sparse_pc.ply                 the sparse points with colours (what nerfstudio's COLMAP import writes)
  sparse/0/{cameras,images,points3D}.txt   the same views and points as a COLMAP text model
  toy_scene.json                the scene, the `frame` similarity, the split and the cameras in the renderer frame
Poses and points are written in a different world frame than the renderer's (by default +Z up, scaled and
moved, like a real capture), so readers must normalise; `frame` maps renderer coordinates to written ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..cameras import Cameras, pixel_intrinsics
from ..scenes.colmap import write_colmap_text
from ..scenes.normalize import similarity_scale, transform_c2w, transform_points
from .scene import ToyScene, apply_edit, default_edits, default_scenes, render_scene, scene_cameras, surface_samples

FORMAT = "threedistill.toy_scene"


def similarity(rotation=None, scale: float = 1.0, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 matrix of x -> scale * R x + t."""
    m = np.eye(4)
    m[:3, :3] = scale * (np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64))
    m[:3, 3] = translation
    return m


# +Y up -> +Z up (a rotation of +90 degrees about X), scaled by 2.5, then moved: a typical COLMAP world.
DEFAULT_FRAME = similarity([[1, 0, 0], [0, 0, -1], [0, 1, 0]], 2.5, (0.7, -0.3, 1.1))
DEFAULT_FRAME.flags.writeable = False


def _split_similarity(frame: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    scale = similarity_scale(frame)
    if scale <= 0:
        raise ValueError("frame must be a similarity with a positive scale (no reflection)")
    return frame[:3, :3] / scale, scale, frame[:3, 3]


def _write_ply(path: Path, points: np.ndarray, colours: np.ndarray) -> None:
    from plyfile import PlyData, PlyElement

    vertex = np.empty(
        len(points), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    for i, axis in enumerate("xyz"):
        vertex[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = colours[:, i]
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(path))


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _cameras_dict(cameras: Cameras) -> dict:
    return {f: getattr(cameras, f).tolist() for f in ("c2w", "fovy", "azimuth", "elevation", "radius", "intrinsics")}


def _cameras_from_dict(d: dict) -> Cameras:
    t = {k: torch.tensor(v, dtype=torch.float32) for k, v in d.items()}
    return Cameras(t["c2w"], t["fovy"], t["azimuth"], t["elevation"], t["radius"], t["intrinsics"])


def write_captured_scene(
    scene: ToyScene | str,
    out_dir,
    n_views: int = 48,
    width: int = 96,
    height: int = 72,
    seed: int = 0,
    val_every: int = 8,
    frame=DEFAULT_FRAME,
    n_points: int = 4000,
    point_noise: float = 0.004,
    supersample: int = 2,
) -> Path:
    """Render `scene` (or a `default_scenes` name) from `scene_cameras(n_views, seed)` and write the directory
    laid out in the module docstring; views i with i % val_every == 0 are held out for validation. Points are
    visible surface samples with Gaussian noise of std `point_noise` (renderer units). Deterministic per seed."""
    from ..errors import ThreeDistillError

    scenes = default_scenes()
    if isinstance(scene, str) and scene not in scenes:
        raise ThreeDistillError(f"unknown toy scene {scene!r}; known: {', '.join(scenes)}")
    if n_views < 2 or width < 8 or height < 8:
        raise ThreeDistillError("a captured scene needs at least 2 views of at least 8x8 pixels")
    scene_name = scene if isinstance(scene, str) else None
    scene = scenes[scene] if isinstance(scene, str) else scene
    frame = np.asarray(frame, dtype=np.float64)
    rot, scale, _ = _split_similarity(frame)
    out = Path(out_dir)
    for sub in ("images", "instances"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    cameras = scene_cameras(n_views, seed=seed, width=width, height=height)
    views = render_scene(scene, cameras, height, width, supersample=supersample)
    names = [f"frame_{i + 1:05d}.png" for i in range(n_views)]
    for i, name in enumerate(names):
        Image.fromarray(_to_u8(views["rgb"][i].permute(1, 2, 0))).save(out / "images" / name)
        Image.fromarray((views["instance"][i, 0] + 1).to(torch.uint8).numpy()).save(out / "instances" / name)

    gen = torch.Generator().manual_seed(seed + 1)
    samples = surface_samples(scene, cameras, height, width, n_points, gen)
    noise = point_noise * torch.randn(n_points, 3, generator=gen)
    points = transform_points(frame, (samples["points"] + noise).double().numpy())
    colours = _to_u8(samples["colour"])
    # Pixel intrinsics to 1e-4 px: the float32 fractions would otherwise give fl_x != fl_y by ~1e-5.
    fx, fy, cx, cy = (round(float(v[0]), 4) for v in pixel_intrinsics(cameras, height, width))

    c2w = transform_c2w(frame, cameras.c2w.double().numpy())
    intrinsics = np.tile([fx, fy, cx, cy, width, height], (n_views, 1))
    tracks = samples["view"][:, None].tolist()  # the view whose ray found each point (one per point)
    write_colmap_text(out / "sparse" / "0", c2w, names, intrinsics, points, colours, tracks)
    _write_ply(out / "sparse_pc.ply", points, colours)

    paths = [f"images/{n}" for n in names]
    val = [i for i in range(n_views) if val_every > 0 and i % val_every == 0]
    train = [i for i in range(n_views) if i not in val]
    transforms = {
        "camera_model": "PINHOLE",
        "fl_x": fx,
        "fl_y": fy,
        "cx": cx,
        "cy": cy,
        "w": width,
        "h": height,
        "frames": [{"file_path": p, "transform_matrix": m.tolist()} for p, m in zip(paths, c2w)],
        "train_filenames": [paths[i] for i in train],
        "val_filenames": [paths[i] for i in val],
        "ply_file_path": "sparse_pc.ply",
    }
    (out / "transforms.json").write_text(json.dumps(transforms, indent=2) + "\n")
    record = {
        "format": FORMAT,
        "version": 1,
        "scene_name": scene_name,
        "scene": scene.to_dict(),
        "instances": {str(i + 1): n for i, n in enumerate(scene.instance_names())},
        "frame": frame.tolist(),
        "frame_scale": scale,
        "frame_rotation": rot.tolist(),
        "width": width,
        "height": height,
        "seed": seed,
        "supersample": supersample,
        "images": names,
        "train": [names[i] for i in train],
        "val": [names[i] for i in val],
        "cameras": _cameras_dict(cameras),
        "edits": [e for e in default_edits() if e["scene"] == scene_name],
    }
    (out / "toy_scene.json").write_text(json.dumps(record, indent=1) + "\n")
    return out


def read_toy_scene(directory) -> tuple[ToyScene, np.ndarray, Cameras]:
    """The ground truth of a captured scene: the scene, the 4x4 `frame` (renderer -> written coordinates) and
    the cameras in the renderer frame, in image order."""
    record = json.loads((Path(directory) / "toy_scene.json").read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{directory} has no toy scene record (toy_scene.json of format {FORMAT!r})")
    return ToyScene.from_dict(record["scene"]), np.array(record["frame"]), _cameras_from_dict(record["cameras"])


def render_edit_ground_truth(directory, edit: dict, views=None, supersample: int | None = None) -> dict:
    """Ground truth after an edit (a record of `default_edits`): the edited scene rendered from the capture's
    cameras at its resolution, `render_scene`'s images plus `names` (image names), `scene` (the edited
    ToyScene) and `edited_instance` (the edited object's id in `instance`). `views` picks image indices."""
    record = json.loads((Path(directory) / "toy_scene.json").read_text())
    if edit.get("scene") not in (None, record["scene_name"]):
        raise ValueError(
            f"edit is for scene {edit['scene']!r}, the capture in {directory} is of {record['scene_name']!r}"
        )
    scene, _, cameras = read_toy_scene(directory)
    names = record["images"]
    if views is not None:
        views = list(views)
        cameras, names = cameras[torch.tensor(views)], [names[i] for i in views]
    after = apply_edit(scene, edit)
    out = render_scene(
        after,
        cameras,
        record["height"],
        record["width"],
        supersample=record["supersample"] if supersample is None else supersample,
    )
    return {**out, "names": names, "scene": after, "edited_instance": edit["index"] + 1}


__all__ = ["DEFAULT_FRAME", "similarity", "write_captured_scene", "read_toy_scene", "render_edit_ground_truth"]
