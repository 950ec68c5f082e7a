"""Toy scenes and captured-scene writing: every object is seen, written poses/intrinsics/points agree, edits
change only their object, and writing is deterministic."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from plyfile import PlyData

from threedistill.cameras import Cameras, orbit_cameras
from threedistill.toyworld.capture import DEFAULT_FRAME, read_toy_scene, render_edit_ground_truth, write_captured_scene
from threedistill.toyworld.catalogue import parse_subject
from threedistill.toyworld.render import render_toy
from threedistill.toyworld.scene import (
    PlacedObject,
    SceneField,
    ToyScene,
    default_edits,
    default_scenes,
    edited_scene,
    object_bottom,
    render_scene,
    scene_cameras,
)

W, H = 32, 24


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    out = tmp_path_factory.mktemp("capture")
    return write_captured_scene("three", out, n_views=6, width=W, height=H, seed=3, val_every=3, n_points=500)


def _instances(directory) -> np.ndarray:
    names = sorted((directory / "instances").iterdir())
    return np.stack([np.array(Image.open(p)) for p in names])


def _inside_hits(pixels: np.ndarray, front: np.ndarray, masks: np.ndarray) -> tuple[float, np.ndarray]:
    """Fraction of in-image projections (views x points) on non-background, and which points land in some image."""
    x, y = pixels[..., 0], pixels[..., 1]
    inside = front & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    v, p = np.nonzero(inside)
    labels = masks[v, y[v, p].astype(int), x[v, p].astype(int)]
    return float((labels > 0).mean()), inside.any(0)


def test_render_scene_shows_every_object_and_the_ground():
    for name, scene in default_scenes().items():
        out = render_scene(scene, scene_cameras(6, seed=1), H, W)
        inst = out["instance"]
        assert inst.shape == (6, 1, H, W) and inst.dtype == torch.int64
        assert out["rgb"].shape == (6, 3, H, W) and out["depth"].shape == (6, 1, H, W)
        assert set(inst.unique().tolist()) == set(range(-1, len(scene.objects) + 1)), name
        assert (out["alpha"][inst < 0] <= 0.5).all() and (out["alpha"][inst >= 0] >= 0.5).all()
        assert (out["rgb"][:, :, 0, :] == 1.0).float().mean() > 0.5  # the top rows are mostly white background


def test_objects_stand_on_the_ground():
    for scene in default_scenes().values():
        fld = SceneField(scene)
        for o in scene.objects:
            assert o.offset[1] + o.scale * object_bottom(o.name) == pytest.approx(scene.ground_height, abs=1e-6)
            # Just above the ground under the object's centre the scene is solid or within a hair of a surface.
            probe = torch.tensor([[o.offset[0], scene.ground_height + 0.02, o.offset[2]]])
            assert fld(probe)[0].item() < 0.05


def test_placed_object_matches_render_toy_under_its_transform():
    """An object moved and scaled, seen by cameras moved and scaled alike, renders as render_toy renders it."""
    offset, scale = torch.tensor([0.3, 0.2, -0.1]), 0.5
    cams = orbit_cameras([20, 150], [10, 40], 2.9)
    c2w = cams.c2w.clone()
    c2w[:, :3, 3] = offset + scale * c2w[:, :3, 3]
    moved = Cameras(c2w, cams.fovy, cams.azimuth, cams.elevation, cams.radius)
    scene = ToyScene([PlacedObject("duck", "red", tuple(offset.tolist()), scale)], ground=False)
    a, b = render_toy("duck", "red", cams, H, W, supersample=1), render_scene(scene, moved, H, W, supersample=1)
    same = (a["alpha"] == b["alpha"]).float().mean()
    assert same > 0.99
    both = (a["alpha"] * b["alpha"]).bool().expand_as(a["rgb"])
    assert (a["rgb"][both] - b["rgb"][both]).abs().max() < 0.02
    depth_error = (b["depth"] - scale * a["depth"])[both[:, :1]].abs()
    assert depth_error.median() < 1e-3 and depth_error.max() < 0.02
    assert torch.equal(b["instance"] == 1, b["alpha"] > 0) and torch.equal(b["instance"] < 0, b["alpha"] == 0)


def test_edited_scene_changes_only_the_chosen_object():
    scene = default_scenes()["three"]
    cams = scene_cameras(4, seed=2)
    before = render_scene(scene, cams, H, W, supersample=1)
    for colour, name in (("blue", None), (None, "sphere")):
        after_scene = edited_scene(scene, 0, colour=colour, name=name)
        assert after_scene.objects[1:] == scene.objects[1:] and scene.objects[0].name == "cube"  # input untouched
        assert after_scene.objects[0].offset[0::2] == scene.objects[0].offset[0::2]
        after = render_scene(after_scene, cams, H, W, supersample=1)
        keep = (before["instance"] == after["instance"]) & (before["instance"] != 1)
        assert keep.float().mean() > 0.8
        diff = (before["rgb"] - after["rgb"]).abs().amax(1, keepdim=True)[keep]
        assert diff.max() <= (0.0 if name is None else 0.02)  # a new shape nudges rays that pass close by
        edited = (before["instance"] == 1) & (after["instance"] == 1)
        if colour:  # same geometry, new colour: the instance map is unchanged and the object turned blue
            assert torch.equal(before["instance"], after["instance"])
            rgb = after["rgb"].permute(0, 2, 3, 1)[edited[:, 0]]
            assert (rgb[:, 2] > rgb[:, 0] + 0.2).float().mean() > 0.9
        else:
            assert not torch.equal(before["instance"], after["instance"])
    with pytest.raises(IndexError):
        edited_scene(scene, 3, colour="blue")


def test_default_edits_speak_the_prior_vocabulary():
    scenes, edits = default_scenes(), default_edits()
    assert len(edits) >= 6 and {e["scene"] for e in edits} == set(scenes)
    assert {e["kind"] for e in edits} >= {"colour", "replace"}
    for e in edits:
        old = scenes[e["scene"]].objects[e["index"]]
        assert parse_subject(e["source_prompt"]) == (old.colour, old.name)
        new = edited_scene(scenes[e["scene"]], e["index"], e.get("colour"), e.get("object")).objects[e["index"]]
        assert parse_subject(e["prompt"]) == (new.colour, new.name) and e["prompt"] != e["source_prompt"]


def test_transforms_json_poses_intrinsics_and_points_agree(capture):
    tf = json.loads((capture / "transforms.json").read_text())
    assert tf["camera_model"] == "PINHOLE" and (tf["w"], tf["h"]) == (W, H)
    assert len(tf["frames"]) == 6 and len(tf["val_filenames"]) == 2 and len(tf["train_filenames"]) == 4
    assert all((capture / f["file_path"]).exists() for f in tf["frames"])
    assert Image.open(capture / tf["frames"][0]["file_path"]).size == (W, H)
    ply = PlyData.read(str(capture / tf["ply_file_path"]))["vertex"]
    points = np.stack([ply["x"], ply["y"], ply["z"]], -1).astype(np.float64)
    w2c = np.linalg.inv(np.array([f["transform_matrix"] for f in tf["frames"]]))
    cam = np.einsum("bij,nj->bni", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]  # OpenGL: looks down -Z, +Y up
    depth = -cam[..., 2]
    pixels = np.stack([tf["fl_x"] * cam[..., 0] / depth + tf["cx"], -tf["fl_y"] * cam[..., 1] / depth + tf["cy"]], -1)
    frac, seen = _inside_hits(pixels, depth > 0, _instances(capture))
    assert frac > 0.9 and seen.mean() > 0.97


def _colmap(capture):
    folder = capture / "sparse" / "0"
    rows = lambda name: [  # noqa: E731
        line.split() for line in (folder / name).read_text().splitlines() if not line.startswith("#")
    ]
    cam = rows("cameras.txt")[0]
    assert cam[1] == "PINHOLE" and (int(cam[2]), int(cam[3])) == (W, H)
    lines = rows("images.txt")
    assert all(line == [] for line in lines[1::2])  # empty POINTS2D lines
    poses = []
    for row in lines[0::2]:
        qw, qx, qy, qz, tx, ty, tz = map(float, row[1:8])
        r = np.array(
            [
                [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy)],
                [2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx)],
                [2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy)],
            ]
        )
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = r, (tx, ty, tz)
        poses.append(m)
    points = np.array([list(map(float, row[1:4])) for row in rows("points3D.txt")])
    return list(map(float, cam[4:8])), np.stack(poses), [row[9] for row in lines[0::2]], points


def test_colmap_text_poses_intrinsics_and_points_agree(capture):
    (fx, fy, cx, cy), w2c, names, points = _colmap(capture)
    assert names == sorted(p.name for p in (capture / "images").iterdir()) and len(points) == 500
    cam = np.einsum("bij,nj->bni", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]  # OpenCV: +Z forward, +Y down
    pixels = np.stack([fx * cam[..., 0] / cam[..., 2] + cx, fy * cam[..., 1] / cam[..., 2] + cy], -1)
    frac, seen = _inside_hits(pixels, cam[..., 2] > 0, _instances(capture))
    assert frac > 0.9 and seen.mean() > 0.97
    # The same cameras as transforms.json, and the same points as the ply.
    tf = json.loads((capture / "transforms.json").read_text())
    c2w_gl = np.linalg.inv(w2c) @ np.diag([1.0, -1.0, -1.0, 1.0])
    assert np.allclose(c2w_gl, np.array([f["transform_matrix"] for f in tf["frames"]]), atol=1e-6)
    assert np.allclose((fx, fy, cx, cy), (tf["fl_x"], tf["fl_y"], tf["cx"], tf["cy"]))
    ply = PlyData.read(str(capture / "sparse_pc.ply"))["vertex"]
    assert np.allclose(np.stack([ply["x"], ply["y"], ply["z"]], -1), points, atol=1e-4)


def test_capture_records_its_ground_truth_in_another_frame(capture):
    scene, frame, cams = read_toy_scene(capture)
    assert scene == default_scenes()["three"] and np.allclose(frame, DEFAULT_FRAME) and len(cams) == 6
    tf = json.loads((capture / "transforms.json").read_text())
    written = np.array([f["transform_matrix"] for f in tf["frames"]])
    centres = cams.positions.double().numpy() @ frame[:3, :3].T + frame[:3, 3]
    assert np.allclose(written[:, :3, 3], centres, atol=1e-5)
    up = written[:, :3, 3].mean(0) - frame[:3, 3]  # cameras sit above the scene: +Z up in the written frame
    assert up[2] > 0 and abs(up[2]) > abs(up[1])
    # The instance masks are the renderer's, and a colour edit keeps them.
    masks = _instances(capture)
    assert set(np.unique(masks)) == {0, 1, 2, 3, 4}
    edit = next(e for e in default_edits() if e["scene"] == "three" and e["kind"] == "colour")
    truth = render_edit_ground_truth(capture, edit, views=[0, 2])
    assert truth["names"] == ["frame_00001.png", "frame_00003.png"] and truth["edited_instance"] == edit["index"] + 1
    assert np.array_equal(truth["instance"][:, 0].numpy() + 1, masks[[0, 2]])
    before = np.stack([np.array(Image.open(capture / "images" / n)) for n in truth["names"]])
    after = (truth["rgb"].permute(0, 2, 3, 1) * 255).round().numpy()
    edited = torch.from_numpy(masks[[0, 2]] == truth["edited_instance"] + 1).float()[:, None]
    near_edit = torch.nn.functional.max_pool2d(edited, 3, 1, 1)[:, 0].bool().numpy()  # edge pixels mix colours
    other = (masks[[0, 2]] > 0) & ~near_edit
    assert np.abs(before[other] - after[other]).max() <= 1


def test_write_captured_scene_is_deterministic(tmp_path):
    scene = default_scenes()["four"]
    kw = dict(n_views=3, width=16, height=12, n_points=100)
    dirs = [
        write_captured_scene(scene, tmp_path / name, seed=seed, **kw) for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    files = sorted(p.relative_to(dirs[0]) for p in dirs[0].rglob("*") if p.is_file())
    assert len(files) == 3 + 3 + 3 + 3
    assert all((dirs[0] / f).read_bytes() == (dirs[1] / f).read_bytes() for f in files)
    assert (dirs[0] / "transforms.json").read_bytes() != (dirs[2] / "transforms.json").read_bytes()
