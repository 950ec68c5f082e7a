"""Captured-scene readers: round trips through nerfstudio json, COLMAP text and binary and the Blender layout land
every point on the pixel the original camera model gives; normalisation; one-line errors; fuzzed binary input."""

import json
import math
import struct
import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from threedistill.cameras import look_at, project_points
from threedistill.errors import SceneFormatError, ThreeDistillError
from threedistill.export.splats import SplatParams, read_ply, write_ply
from threedistill.geometry import quat_to_rotmat
from threedistill.renderers.gaussian_raster import sh_to_rgb
from threedistill.scenes import load_scene
from threedistill.scenes.colmap import (
    ColmapCamera,
    ColmapImage,
    parse_cameras_bin,
    parse_cameras_txt,
    parse_images_bin,
    parse_images_txt,
    parse_points3d_bin,
    parse_points3d_txt,
    write_colmap_binary,
    write_colmap_model,
    write_colmap_text,
)
from threedistill.scenes.nerfstudio import read_points_ply

W, H = 8, 6
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------- a synthetic capture, in COLMAP terms
def synthetic(n=6, n_points=200, seed=0):
    """Cameras around a centre in a tilted world (COLMAP's usual 'up' is about -Y), as OpenCV world-to-camera
    R, t plus the same poses as OpenGL camera-to-world; points in a ball; non-square pinhole intrinsics."""
    rng = np.random.default_rng(seed)
    centre = np.array([1.5, -2.0, 0.7])
    up = np.array([0.2, -1.0, 0.3]) / np.linalg.norm([0.2, -1.0, 0.3])
    a = np.cross(up, [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    eyes = []
    for i in range(n):
        az, el = 2 * math.pi * i / n, math.radians(rng.uniform(5, 40))
        eyes.append(centre + 4.0 * (math.cos(el) * (math.cos(az) * a + math.sin(az) * b) + math.sin(el) * up))
    c2w_gl = look_at(torch.tensor(np.array(eyes)), torch.tensor(centre).expand(n, 3), up=tuple(up)).numpy()
    c2w_cv = c2w_gl @ np.diag([1.0, -1.0, -1.0, 1.0])
    w2c = np.linalg.inv(c2w_cv)
    d = rng.normal(size=(n_points, 3))
    points = centre + 1.2 * d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(0, 1, (n_points, 1)) ** (1 / 3)
    k = np.array([[7.5 + 0.1 * i, 7.0, 4.3, 2.9, W, H] for i in range(n)])
    colours = rng.integers(0, 256, (n_points, 3), dtype=np.uint8)
    return dict(
        R=w2c[:, :3, :3],
        t=w2c[:, :3, 3],
        c2w=c2w_gl,
        points=points,
        colours=colours,
        k=k,
        names=[f"img_{i:02d}.png" for i in range(n)],
    )


def expected_pixels(s, pts):
    """Plain OpenCV pinhole projection with the COLMAP R, t: (N_cams, N_pts, 2)."""
    cam = np.einsum("bij,nj->bni", s["R"], pts) + s["t"][:, None]
    fx, fy, cx, cy = (s["k"][:, i, None] for i in range(4))
    return np.stack([fx * cam[..., 0] / cam[..., 2] + cx, fy * cam[..., 1] / cam[..., 2] + cy], -1)


def write_images(folder, names, rgba=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(folder / name, rng.integers(0, 256, (H, W, 4 if rgba else 3), dtype=np.uint8))


def write_colmap_by_hand(root, s, binary=False):
    """The model written from R, t with an independent quaternion (scipy), not through our writer's maths."""
    quats = Rotation.from_matrix(s["R"]).as_quat()[:, [3, 0, 1, 2]]
    cams = [ColmapCamera(i + 1, "PINHOLE", W, H, tuple(s["k"][i, :4])) for i in range(len(quats))]
    imgs = [
        ColmapImage(10 + i, tuple(q), tuple(t), i + 1, name)
        for i, (q, t, name) in enumerate(zip(quats, s["t"], s["names"]))
    ]
    write_colmap_model(root / "sparse" / "0", cams, imgs, s["points"], s["colours"], binary=binary)
    write_images(root / "images", s["names"])
    return root


def write_nerfstudio(root, s, per_frame=False, extra=None, frame_extra=None):
    frames = []
    for i, (name, pose) in enumerate(zip(s["names"], s["c2w"])):
        f = {"file_path": f"images/{name}", "transform_matrix": pose.tolist()}
        if per_frame:
            f.update(dict(zip(("fl_x", "fl_y", "cx", "cy", "w", "h"), s["k"][i].tolist())))
        f.update(frame_extra or {})
        frames.append(f)
    meta = {"camera_model": "OPENCV", "frames": frames}
    if not per_frame:
        meta.update(dict(zip(("fl_x", "fl_y", "cx", "cy", "w", "h"), s["k"][0].tolist())))
    meta.update(extra or {})
    root.mkdir(parents=True, exist_ok=True)
    (root / "transforms.json").write_text(json.dumps(meta))
    write_images(root / "images", s["names"])
    return root


def check_against_original(scene, s, same_intrinsics=False):
    """Centres, view directions, intrinsics and projected pixels all match the original capture."""
    k = s["k"][:1].repeat(len(s["k"]), 0) if same_intrinsics else s["k"]
    t = scene.transform.double()
    scale = torch.linalg.det(t[:3, :3]) ** (1 / 3)
    rot = (t[:3, :3] / scale).numpy()
    centres = scene.to_original(scene.c2w[:, :3, 3].double()).numpy()
    np.testing.assert_allclose(centres, np.einsum("bji,bj->bi", s["R"], -s["t"]), atol=1e-4)
    forward = -scene.c2w[:, :3, 2].double().numpy() @ rot  # back to the original frame: R^T v
    np.testing.assert_allclose(forward, s["R"][:, 2], atol=1e-5)  # OpenCV +Z in world = third row of R
    np.testing.assert_allclose(scene.intrinsics.numpy(), k[:, :4] / k[:, [4, 5, 4, 5]], rtol=1e-6)
    assert scene.sizes.tolist() == [[W, H]] * len(k)
    pts = s["points"][:20]
    px, depth = project_points(scene.from_original(torch.tensor(pts)).float(), scene.cameras(), H, W)
    want = expected_pixels(dict(s, k=k), pts)
    assert (depth > 0).all()
    np.testing.assert_allclose(px.numpy(), want, atol=2e-3)


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("binary", [False, True])
def test_colmap_round_trip_projects_points_where_opencv_does(tmp_path, binary):
    s = synthetic()
    scene = load_scene(write_colmap_by_hand(tmp_path, s, binary))
    assert scene.source == "colmap" and len(scene.image_paths) == 6
    assert [p.name for p in scene.image_paths] == s["names"]
    check_against_original(scene, s)
    assert scene.points.shape == (200, 3) and scene.point_colours.shape == (200, 3)
    np.testing.assert_allclose(scene.point_colours.numpy(), s["colours"] / 255, atol=1e-6)
    np.testing.assert_allclose(scene.to_original(scene.points.double()).numpy(), s["points"], atol=1e-4)
    assert scene.val_indices == [0] and scene.train_indices == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("writer", [write_colmap_text, write_colmap_binary])
def test_colmap_writers_round_trip_opengl_poses(tmp_path, writer):
    s = synthetic(n=4)
    writer(tmp_path / "sparse" / "0", s["c2w"], s["names"], s["k"], s["points"], s["colours"])
    write_images(tmp_path / "images", s["names"])
    check_against_original(load_scene(tmp_path), s)


def test_colmap_text_and_binary_read_the_same(tmp_path):
    s = synthetic(n=3)
    a = load_scene(write_colmap_by_hand(tmp_path / "a", s, binary=False))
    b = load_scene(write_colmap_by_hand(tmp_path / "b", s, binary=True))
    for key in ("c2w", "intrinsics", "points", "transform"):
        torch.testing.assert_close(getattr(a, key), getattr(b, key))


def test_colmap_distortion_models_use_focal_and_centre_and_keep_their_coefficients(tmp_path):
    s = synthetic(n=3)
    write_colmap_by_hand(tmp_path, s)
    k = s["k"]
    cams = [
        ColmapCamera(1, "OPENCV", W, H, (*k[0, :4], 0.1, -0.02, 0.001, 0.0)),
        ColmapCamera(2, "SIMPLE_RADIAL", W, H, (k[1, 0], k[1, 2], k[1, 3], 0.05)),
        ColmapCamera(3, "SIMPLE_PINHOLE", W, H, (k[2, 0], k[2, 2], k[2, 3])),
    ]
    quats = Rotation.from_matrix(s["R"]).as_quat()[:, [3, 0, 1, 2]]
    imgs = [
        ColmapImage(i + 1, tuple(q), tuple(t), i + 1, n) for i, (q, t, n) in enumerate(zip(quats, s["t"], s["names"]))
    ]
    write_colmap_model(tmp_path / "sparse" / "0", cams, imgs, s["points"], s["colours"], binary=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # distortion is undone at load now, not warned about
        scene = load_scene(tmp_path)
    np.testing.assert_allclose(scene.distortion[0], [0.1, -0.02, 0.001, 0.0])
    np.testing.assert_allclose(scene.distortion[1], [0.05, 0.0, 0.0, 0.0])
    assert scene.distortion[2] is None
    s["k"] = np.array([k[0], [k[1, 0], k[1, 0], *k[1, 2:]], [k[2, 0], k[2, 0], *k[2, 2:]]])
    check_against_original(scene, s)


@pytest.mark.parametrize("per_frame", [False, True])
def test_nerfstudio_round_trip_projects_points_where_opencv_does(tmp_path, per_frame):
    s = synthetic()
    scene = load_scene(write_nerfstudio(tmp_path, s, per_frame))
    assert scene.source == "nerfstudio" and scene.points is None
    check_against_original(scene, s, same_intrinsics=not per_frame)
    rgb, masks = scene.load_images([0, 1], H, W)
    assert rgb.shape == (2, 3, H, W) and masks is None
    np.testing.assert_allclose(rgb[0].permute(1, 2, 0).numpy(), iio.imread(scene.image_paths[0]) / 255, atol=1e-6)


def test_nerfstudio_points_masks_splits_and_distortion(tmp_path):
    from plyfile import PlyData, PlyElement

    s = synthetic(n=10)
    vertex = np.empty(
        len(s["points"]), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    for i, key in enumerate("xyz"):
        vertex[key] = s["points"][:, i]
    for i, key in enumerate(("red", "green", "blue")):
        vertex[key] = s["colours"][:, i]
    tmp_path.mkdir(exist_ok=True)
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "sparse_pc.ply"))
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in s["names"]:
        iio.imwrite(masks / name, np.full((H, W), 255, np.uint8))
    extra = {
        "ply_file_path": "sparse_pc.ply",
        "k1": 0.01,
        "train_filenames": [f"images/{n}" for n in s["names"][:7]],
        "val_filenames": [f"./images/{n}" for n in s["names"][7:]],
    }
    frame_extra = None
    write_nerfstudio(tmp_path, s, extra=extra, frame_extra=frame_extra)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    meta["frames"] = meta["frames"][::-1]  # frames are sorted by file_path, as nerfstudio does
    for f in meta["frames"]:
        f["mask_path"] = f["file_path"].replace("images/", "masks/")
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scene = load_scene(tmp_path / "transforms.json")
    assert all(list(d) == [0.01, 0.0, 0.0, 0.0] for d in scene.distortion)
    assert scene.train_indices == list(range(7)) and scene.val_indices == [7, 8, 9]
    assert [p.name for p in scene.image_paths] == s["names"]
    np.testing.assert_allclose(scene.to_original(scene.points.double()).numpy(), s["points"], atol=1e-4)
    np.testing.assert_allclose(scene.point_colours.numpy(), s["colours"] / 255, atol=1e-6)
    _, m = scene.load_images([3], H, W)
    assert m.shape == (1, 1, H, W) and bool((m == 1).all())
    s["k"] = s["k"][:1].repeat(10, 0)
    check_against_original(scene, s)
    xyz, rgb = read_points_ply(tmp_path / "sparse_pc.ply")
    assert xyz.shape == (200, 3) and rgb.max() <= 1.0


def test_nerfstudio_without_split_holds_out_every_eighth_view(tmp_path):
    scene = load_scene(write_nerfstudio(tmp_path, synthetic(n=17, n_points=0)))
    assert scene.val_indices == [0, 8, 16] and len(scene.train_indices) == 14


def test_blender_layout_rgba_becomes_mask_on_white(tmp_path):
    s = synthetic(n=5)
    angle = 0.69
    for split, idx in (("train", range(3)), ("test", range(3, 5))):
        frames = [
            {"file_path": f"./{split}/r_{i}", "rotation": 0.0, "transform_matrix": s["c2w"][i].tolist()} for i in idx
        ]
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
        write_images(tmp_path / split, [f"r_{i}.png" for i in idx], rgba=True, seed=len(split))
    scene = load_scene(tmp_path)
    assert scene.source == "blender" and scene.train_indices == [0, 1, 2] and scene.val_indices == [3, 4]
    f = 0.5 / math.tan(angle / 2)
    np.testing.assert_allclose(scene.intrinsics.numpy(), [[f, f * W / H, 0.5, 0.5]] * 5, rtol=1e-6)
    cams = scene.cameras()
    np.testing.assert_allclose(cams.fovy.numpy(), 2 * np.arctan(0.5 / (f * W / H)), rtol=1e-6)
    rgb, mask = scene.load_images([0, 4], H, W)
    for j, path in enumerate((scene.image_paths[0], scene.image_paths[4])):
        raw = iio.imread(path).astype(np.float64) / 255
        alpha = raw[..., 3:]
        np.testing.assert_allclose(mask[j, 0].numpy(), alpha[..., 0], atol=1e-6)
        np.testing.assert_allclose(rgb[j].permute(1, 2, 0).numpy(), raw[..., :3] * alpha + 1 - alpha, atol=1e-5)
    small, small_mask = scene.load_images([1], 3, 4)
    assert small.shape == (1, 3, 3, 4) and small_mask.shape == (1, 1, 3, 4)
    assert float(small.min()) >= 0.0 and float(small.max()) <= 1.0


# ---------------------------------------------------------------- normalisation
def test_normalisation_puts_points_in_the_unit_sphere_and_up_along_y(tmp_path):
    s = synthetic(n=8)
    scene = load_scene(write_colmap_by_hand(tmp_path, s))
    dist = scene.points.norm(dim=-1)
    assert float(dist.max()) < 1.0
    assert abs(float(torch.quantile(dist, 0.95)) - 0.9) < 1e-3
    centre = scene.to_original(torch.zeros(1, 3, dtype=torch.float64)).numpy()[0]  # the origin is the points' median
    np.testing.assert_allclose(centre, np.median(s["points"], axis=0), atol=1e-5)
    up = scene.c2w[:, :3, 1]
    mean_up = up.mean(0) / up.mean(0).norm()
    torch.testing.assert_close(mean_up, torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    assert bool((up[:, 1] > 0.7).all())
    rot = scene.c2w[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(8, 3, 3), atol=1e-5, rtol=0)
    cams = scene.cameras()
    assert bool((cams.elevation > 0).all())  # the synthetic cameras are above the centre
    gaps = np.diff(np.sort(cams.azimuth.numpy()))  # eight cameras around the centre, one every ~45 degrees
    assert gaps.min() > 35 and gaps.max() < 55


def test_normalisation_without_points_centres_where_cameras_look(tmp_path):
    s = synthetic(n=6, n_points=0)
    scene = load_scene(write_nerfstudio(tmp_path, s))
    pos = scene.c2w[:, :3, 3]
    np.testing.assert_allclose(pos.norm(dim=-1).mean().item(), 3.0, rtol=1e-5)
    # every optical axis passes through the origin (the synthetic cameras all look at one point)
    fwd = -scene.c2w[:, :3, 2]
    off_axis = pos - (pos * fwd).sum(-1, keepdim=True) * fwd
    assert float(off_axis.norm(dim=-1).max()) < 1e-4


def random_splats(n=40, degree=2, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return SplatParams(f(n, 3) + [1.5, -2.0, 0.7], f(n, 3) - 3, f(n, 4), f(n), 0.3 * f(n, (degree + 1) ** 2, 3))


def test_splats_move_into_the_normalised_frame_with_their_colours(tmp_path):
    s = synthetic(n=5)
    write_colmap_by_hand(tmp_path, s)
    splats = random_splats()
    write_ply(splats, tmp_path / "point_cloud" / "iteration_7000" / "point_cloud.ply")
    write_ply(random_splats(seed=1), tmp_path / "point_cloud" / "iteration_300" / "point_cloud.ply")
    scene = load_scene(tmp_path)
    moved = scene.splats
    t = scene.transform.double()
    scale = float(torch.linalg.det(t[:3, :3]) ** (1 / 3))
    rot = t[:3, :3] / scale
    np.testing.assert_allclose(scene.to_original(torch.tensor(moved.means).double()).numpy(), splats.means, atol=1e-4)
    np.testing.assert_allclose(moved.log_scales - splats.log_scales, math.log(scale), atol=1e-5)
    r_new = quat_to_rotmat(torch.tensor(moved.quats).double())
    r_old = quat_to_rotmat(torch.tensor(splats.quats).double())
    torch.testing.assert_close(r_new, rot @ r_old, atol=1e-5, rtol=0)
    d = torch.nn.functional.normalize(torch.randn(len(splats.means), 3, dtype=torch.float64), dim=-1)
    before = sh_to_rgb(torch.tensor(splats.sh).double(), d)
    after = sh_to_rgb(torch.tensor(moved.sh).double(), d @ rot.T)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=0)


def test_a_lone_ply_is_a_splat_scene(tmp_path):
    path = write_ply(random_splats(n=100, degree=0), tmp_path / "scene.ply")
    scene = load_scene(path)
    assert scene.source == "ply" and len(scene.image_paths) == 0 and scene.c2w.shape == (0, 4, 4)
    dist = np.linalg.norm(scene.splats.means, axis=1)
    assert abs(np.percentile(dist, 95) - 0.9) < 1e-3
    assert len(scene.cameras()) == 0
    inria = tmp_path / "output"
    write_ply(random_splats(n=100, degree=0), inria / "point_cloud" / "iteration_30000" / "point_cloud.ply")
    np.testing.assert_array_equal(load_scene(inria).splats.means, scene.splats.means)


# ---------------------------------------------------------------- one-line errors
def _edit_json(root, fn):
    meta = json.loads((root / "transforms.json").read_text())
    fn(meta)
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def _ns(root, fn):
    return _edit_json(write_nerfstudio(root, synthetic(n=3, n_points=0)), fn)


def _colmap(root, binary=True, n=3):
    return write_colmap_by_hand(root, synthetic(n=n), binary)


def _set(d, key, value):
    d[key] = value


def _case_truncated_images(root):
    _colmap(root)
    f = root / "sparse/0/images.bin"
    f.write_bytes(f.read_bytes()[:-30])
    return root


def _case_claims_five_images(root):
    _colmap(root)
    f = root / "sparse/0/images.bin"
    f.write_bytes(struct.pack("<Q", 5) + f.read_bytes()[8:])
    return root


def _case_images_text(root, fn):
    _colmap(root, binary=False)
    f = root / "sparse/0/images.txt"
    f.write_text(fn(f.read_text()))
    return root


def _case_cameras_text(root, text):
    _colmap(root, binary=False)
    (root / "sparse/0/cameras.txt").write_text(text)
    return root


def _case_model(root, model, params):
    _colmap(root, n=1)
    cam = ColmapCamera(1, model, W, H, params)
    img = parse_images_bin((root / "sparse/0/images.bin").read_bytes())
    write_colmap_model(root / "sparse/0", [cam], img, binary=True)
    return root


def _case_unknown_model_id(root):
    _colmap(root)
    f = root / "sparse/0/cameras.bin"
    data = bytearray(f.read_bytes())
    data[12:16] = struct.pack("<i", 42)
    f.write_bytes(bytes(data))
    return root


def _case_missing_images(root):
    _colmap(root)
    for name in ("img_00.png", "img_02.png"):
        (root / "images" / name).unlink()
    return root


def _case_blender_no_angle(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "transforms_train.json").write_text(json.dumps({"frames": []}))
    return root


def _case_bad_ply(root):
    write_nerfstudio(root, synthetic(n=2, n_points=0), extra={"ply_file_path": "pc.ply"})
    (root / "pc.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\n")
    return root


def _case_bad_splat_ply(root):
    _colmap(root)
    (root / "point_cloud.ply").write_bytes(b"not a ply at all")
    return root


def _case_nan_points(root):
    _colmap(root, binary=False)
    f = root / "sparse/0/points3D.txt"
    lines = f.read_text().splitlines()
    lines[-1] = "999 nan 0 0 1 2 3 0.0"
    f.write_text("\n".join(lines))
    return root


def _list_property_ply(path, names):
    """A text PLY whose `x` is a list property, with scalar float properties `names` besides."""
    from plyfile import PlyData, PlyElement

    vertex = np.empty(3, dtype=[(n, "f4") for n in names] + [("x", "O")])
    for n in names:
        vertex[n] = 1.0
    vertex["x"] = [np.array([1.0, 2.0], "f4")] * 3
    el = PlyElement.describe(vertex, "vertex", val_types={"x": "f4"}, len_types={"x": "u1"})
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([el], text=True).write(str(path))
    return path


def _case_list_points(root):
    write_nerfstudio(root, synthetic(n=2, n_points=0), extra={"ply_file_path": "pc.ply"})
    _list_property_ply(root / "pc.ply", ["y", "z"])
    return root


def _empty_splat_ply(root):
    from plyfile import PlyData, PlyElement

    root.mkdir(parents=True)
    vertex = np.empty(0, dtype=[(n, "f4") for n in ["x"] + SPLAT_NAMES])
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(root / "e.ply"))
    return root / "e.ply"


SPLAT_NAMES = [
    "y",
    "z",
    "f_dc_0",
    "f_dc_1",
    "f_dc_2",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
]

ERROR_CASES = {
    "list property in splat ply": (
        lambda r: _list_property_ply(r / "s.ply", SPLAT_NAMES),
        "s.ply",
        "property x is not a scalar",
    ),
    "empty splat ply": (_empty_splat_ply, "e.ply", "zero Gaussians"),
    "list property in points ply": (_case_list_points, "pc.ply", "property x is not a scalar"),
    "missing transforms file": (lambda r: r / "transforms.json", "transforms.json", "not found"),
    "invalid json": (
        lambda r: (r.mkdir(exist_ok=True), (r / "transforms.json").write_text("{frames: ["), r)[-1],
        "transforms.json",
        "invalid JSON",
    ),
    "top level not an object": (
        lambda r: (r.mkdir(exist_ok=True), (r / "transforms.json").write_text("[1]"), r)[-1],
        "transforms.json",
        "JSON object",
    ),
    "missing frames": (lambda r: _ns(r, lambda m: m.pop("frames")), "transforms.json", "missing field frames"),
    "zero views": (lambda r: _ns(r, lambda m: _set(m, "frames", [])), "transforms.json", "zero views"),
    "missing fl_x": (lambda r: _ns(r, lambda m: m.pop("fl_x")), "transforms.json", "missing field fl_x"),
    "missing transform_matrix": (
        lambda r: _ns(r, lambda m: m["frames"][1].pop("transform_matrix")),
        "transforms.json",
        "missing field transform_matrix",
    ),
    "fl_x wrong type": (lambda r: _ns(r, lambda m: _set(m, "fl_x", "big")), "transforms.json", "fl_x must be a number"),
    "frames wrong type": (
        lambda r: _ns(r, lambda m: _set(m, "frames", {"a": 1})),
        "transforms.json",
        "frames must be a list",
    ),
    "matrix wrong shape": (
        lambda r: _ns(r, lambda m: _set(m["frames"][0], "transform_matrix", [[1, 0], [0, 1]])),
        "transforms.json",
        "shape",
    ),
    "matrix not numbers": (
        lambda r: _ns(r, lambda m: _set(m["frames"][0], "transform_matrix", [["a"] * 4] * 4)),
        "transforms.json",
        "not a matrix of numbers",
    ),
    "nan pose": (
        lambda r: _ns(r, lambda m: _set(m["frames"][0]["transform_matrix"][0], 3, float("nan"))),
        "transforms.json",
        "NaN",
    ),
    "scaled pose": (
        lambda r: _ns(r, lambda m: _set(m["frames"][2], "transform_matrix", (np.diag([2.0, 2.0, 2.0, 1.0])).tolist())),
        "transforms.json",
        "not rigid",
    ),
    "fisheye": (
        lambda r: _ns(r, lambda m: _set(m, "camera_model", "OPENCV_FISHEYE")),
        "transforms.json",
        "only pinhole-like",
    ),
    "equirectangular": (
        lambda r: _ns(r, lambda m: _set(m["frames"][0], "camera_model", "EQUIRECTANGULAR")),
        "transforms.json",
        "only pinhole-like",
    ),
    "missing nerfstudio image": (
        lambda r: _ns(r, lambda m: _set(m["frames"][1], "file_path", "images/gone.png")),
        "transforms.json",
        "images/gone.png not found (1 of 3 missing)",
    ),
    "missing mask": (
        lambda r: _ns(r, lambda m: _set(m["frames"][1], "mask_path", "masks/m.png")),
        "transforms.json",
        "mask file",
    ),
    "unknown split name": (
        lambda r: _ns(r, lambda m: _set(m, "train_filenames", ["images/zzz.png"])),
        "transforms.json",
        "train_filenames",
    ),
    "bad ply_file_path": (_case_bad_ply, "pc.ply", "PLY"),
    "blender without camera_angle_x": (_case_blender_no_angle, "transforms_train.json", "camera_angle_x"),
    "truncated images.bin": (_case_truncated_images, "images.bin", "truncated"),
    "images.bin claims five": (_case_claims_five_images, "images.bin", "claims 5 images"),
    "unknown model id": (_case_unknown_model_id, "cameras.bin", "unknown camera model id 42"),
    "fisheye colmap model": (
        lambda r: _case_model(r, "OPENCV_FISHEYE", (7.0, 7.0, 4.0, 3.0, 0.1, 0.0, 0.0, 0.0)),
        "cameras.bin",
        "OPENCV_FISHEYE",
    ),
    "FOV colmap model": (lambda r: _case_model(r, "FOV", (7.0, 7.0, 4.0, 3.0, 0.1)), "cameras.bin", "FOV model"),
    "missing camera id": (
        lambda r: _case_images_text(r, lambda t: t.replace(" 2 img_01.png", " 9 img_01.png")),
        "images.txt",
        "camera_id 9",
    ),
    "zero quaternion": (
        lambda r: _case_images_text(
            r,
            lambda t: "\n".join(
                " ".join(["11", "0", "0", "0", "0"] + line.split()[5:]) if line.startswith("11 ") else line
                for line in t.splitlines()
            ),
        ),
        "images.txt",
        "zero quaternion",
    ),
    "images text not numbers": (
        lambda r: _case_images_text(r, lambda t: t.replace("10 ", "ten ", 1)),
        "images.txt",
        "line",
    ),
    "images text too short": (
        lambda r: _case_images_text(r, lambda t: t + "\n12 1 0 0\n"),
        "images.txt",
        "expected IMAGE_ID",
    ),
    "wrong param count": (
        lambda r: _case_cameras_text(r, "1 PINHOLE 8 6 7 7 4\n"),
        "cameras.txt",
        "takes 4 parameters",
    ),
    "unknown model name": (lambda r: _case_cameras_text(r, "1 WEIRD 8 6 7\n"), "cameras.txt", "WEIRD"),
    "camera size not int": (
        lambda r: _case_cameras_text(r, "1 PINHOLE eight 6 7 7 4 3\n"),
        "cameras.txt",
        "not all ints",
    ),
    "nan points": (_case_nan_points, "points3D.txt", "NaN"),
    "missing images file": (
        lambda r: (_colmap(r), (r / "sparse/0/images.bin").unlink(), r)[-1],
        "sparse/0",
        "missing file images.bin or images.txt",
    ),
    "missing colmap images": (_case_missing_images, "images.bin", "img_00.png not found (2 of 3 missing)"),
    "no images folder": (
        lambda r: (_colmap(r), [p.unlink() for p in (r / "images").iterdir()], (r / "images").rmdir(), r)[-1],
        "",
        "no images/ folder",
    ),
    "bad splat ply": (_case_bad_splat_ply, "point_cloud.ply", "PLY"),
    "empty folder": (lambda r: (r.mkdir(exist_ok=True), r)[-1], "", "looked for a .ply file, transforms.json"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_malformed_scenes_give_one_line_naming_the_file(tmp_path, case):
    build, filename, words = ERROR_CASES[case]
    root = tmp_path / "scene"
    path = build(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SceneFormatError) as err:
            load_scene(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(root) in message and filename in message and words in message, message


# ---------------------------------------------------------------- fuzzing
def _valid_binaries():
    s = synthetic(n=3, n_points=5)
    cams, imgs = [ColmapCamera(1, "OPENCV", W, H, (7.0, 7.0, 4.0, 3.0, 0.1, 0.0, 0.0, 0.0))], []
    for i, (q, t) in enumerate(zip(Rotation.from_matrix(s["R"]).as_quat(), s["t"])):
        imgs.append(ColmapImage(i + 1, tuple(q[[3, 0, 1, 2]]), tuple(t), 1, f"im{i}.png"))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        write_colmap_model(Path(d), cams, imgs, s["points"], s["colours"], binary=True)
        # a few 2D points and a track, so the skipped parts are fuzzed too
        images = bytearray((Path(d) / "images.bin").read_bytes())
        end = images.index(b"im0.png\0") + 8
        images[end : end + 8] = struct.pack("<Q", 2)
        images[end + 8 : end + 8] = struct.pack("<ddq", 1.0, 2.0, 1) * 2
        points = bytearray((Path(d) / "points3D.bin").read_bytes())
        points[8 + 43 : 8 + 51] = struct.pack("<Q", 1)
        points[8 + 51 : 8 + 51] = struct.pack("<ii", 1, 0)
        return {"cameras": (Path(d) / "cameras.bin").read_bytes(), "images": bytes(images), "points": bytes(points)}


BINARIES = _valid_binaries()
PARSERS = {"cameras": parse_cameras_bin, "images": parse_images_bin, "points": parse_points3d_bin}


def test_valid_binaries_parse():
    assert len(PARSERS["cameras"](BINARIES["cameras"])) == 1
    assert [im.name for im in PARSERS["images"](BINARIES["images"])] == ["im0.png", "im1.png", "im2.png"]
    assert PARSERS["points"](BINARIES["points"])[0].shape == (5, 3)


def _only_scene_errors(fn, *args):
    try:
        fn(*args)
    except ThreeDistillError as err:
        assert "\n" not in str(err)


@FUZZ
@given(kind=st.sampled_from(sorted(PARSERS)), cut=st.floats(0, 1, exclude_max=True))
def test_fuzz_truncated_colmap_binaries(kind, cut):
    data = BINARIES[kind]
    with pytest.raises(SceneFormatError, match="truncated"):
        PARSERS[kind](data[: int(cut * len(data))], f"{kind}.bin")


@FUZZ
@given(
    kind=st.sampled_from(sorted(PARSERS)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=8),
)
def test_fuzz_flipped_colmap_binaries(kind, flips):
    data = bytearray(BINARIES[kind])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    _only_scene_errors(PARSERS[kind], bytes(data), f"{kind}.bin")


@FUZZ
@given(kind=st.sampled_from(sorted(PARSERS)), data=st.binary(max_size=300))
def test_fuzz_random_colmap_binaries(kind, data):
    _only_scene_errors(PARSERS[kind], data, f"{kind}.bin")


@FUZZ
@given(text=st.text(alphabet="0123456789 .-#\nabcPINHOLE_eE", max_size=200))
def test_fuzz_colmap_text(text):
    for parse in (parse_cameras_txt, parse_images_txt, parse_points3d_txt):
        _only_scene_errors(parse, text)


def _ply_bytes():
    import io
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        write_ply(random_splats(n=4, degree=1), Path(d) / "p.ply")
        binary = (Path(d) / "p.ply").read_bytes()
    from plyfile import PlyData

    ascii_buf = io.BytesIO()
    ply = PlyData.read(io.BytesIO(binary))
    ply.text = True
    ply.write(ascii_buf)
    return [binary, ascii_buf.getvalue()]


PLYS = _ply_bytes()


@FUZZ
@given(
    which=st.integers(0, 1),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=6),
    noise=st.binary(max_size=40),
)
def test_fuzz_ply_readers(tmp_path, which, cut, flips, noise):
    data = bytearray(PLYS[which])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    data = bytes(data[: int(cut * len(data))]) + noise
    path = tmp_path / "fuzz.ply"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _only_scene_errors(read_ply, path)
        _only_scene_errors(read_points_ply, path)
        _only_scene_errors(load_scene, path)
