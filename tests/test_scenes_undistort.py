"""Lens undistortion at load: photos synthesised through each supported distortion model (OpenCV's own inverse,
cv2.undistortPoints, not the code under test) come back as the pinhole image, masks alike, pixels without a
source masked out; unsupported models are a one-line error naming the model and the file."""

import json

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from threedistill.cameras import look_at
from threedistill.errors import SceneFormatError
from threedistill.scenes import load_scene
from threedistill.scenes.colmap import ColmapCamera, pinhole_model, write_colmap_model

W, H = 160, 120
FX, FY, CX, CY = 100.0, 104.0, 81.3, 58.7
K = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])


def pattern(u, v):
    """The pinhole image as a smooth function of pixel coordinates (smooth, so bilinear resampling is exact
    to a few 1e-3), RGB in [0,1]."""
    a, b = np.sin(2 * np.pi * u / 23.0), np.cos(2 * np.pi * v / 17.0)
    return np.stack([0.5 + 0.4 * a * b, 0.5 + 0.4 * np.sin(2 * np.pi * (u + v) / 31.0), 0.5 + 0.3 * a], -1)


def half_mask(u, v):
    return (u < 70.0).astype(np.float64)


def pixel_grid():
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return u, v


def camera_matrix(model):
    """K of a model: one focal length (FX) for the SIMPLE_* and RADIAL models."""
    return np.array([[FX, 0.0, CX], [0.0, FX, CY], [0.0, 0.0, 1.0]]) if "RADIAL" in model or "SIMPLE" in model else K


def distorted(fn, dist, k=K):
    """The photo a camera with k and `dist` takes of the pinhole image `fn`: each distorted pixel shows the
    pinhole image at its undistorted position (OpenCV's iterative inverse, tight tolerance)."""
    u, v = pixel_grid()
    pts = np.stack([u.ravel(), v.ravel()], -1)[:, None]
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)
    und = cv2.undistortPoints(pts, k, np.asarray(dist, np.float64), R=None, P=k, criteria=crit)[:, 0]
    return fn(und[:, 0], und[:, 1]).reshape(H, W, -1)


def save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.clip(np.round(arr * 255), 0, 255).astype(np.uint8).squeeze())


def psnr(a, b, mask=None):
    err = (np.asarray(a) - np.asarray(b)) ** 2
    if mask is not None:
        err = err[np.broadcast_to(mask, err.shape)]
    return float(10 * np.log10(1.0 / err.mean()))


def cameras(n):
    eyes = torch.tensor([[np.cos(a) * 3.0, 0.5, np.sin(a) * 3.0] for a in np.linspace(0, 1, n)])
    return look_at(eyes.double()).numpy()


def colmap_scene(root, model, params, dist, masks=False):
    """A one-camera COLMAP text model, two views of the same distorted photo (and mask)."""
    names = ["a.png", "b.png"]
    _, images = pinhole_model(cameras(2), names, [[FX, FY, CX, CY, W, H]] * 2)
    for im in images:
        im.camera_id = 1
    write_colmap_model(root / "sparse" / "0", [ColmapCamera(1, model, W, H, params)], images)
    k = camera_matrix(model)
    for name in names:
        save(root / "images" / name, distorted(pattern, dist, k))
        if masks:
            save(root / "masks" / name, distorted(half_mask, dist, k))
    return root


# (model, COLMAP params, the same camera's OpenCV coefficients); strong enough to move corners by 10-25 px
MODELS = {
    "SIMPLE_RADIAL": ((FX, CX, CY, -0.15), [-0.15, 0, 0, 0]),
    "RADIAL": ((FX, CX, CY, -0.12, 0.03), [-0.12, 0.03, 0, 0]),
    "OPENCV": ((FX, FY, CX, CY, -0.1, 0.02, 0.004, -0.003), [-0.1, 0.02, 0.004, -0.003]),
    "FULL_OPENCV": (
        (FX, FY, CX, CY, -0.1, 0.02, 0.004, -0.003, 0.01, 0.05, 0.01, 0.0),
        [-0.1, 0.02, 0.004, -0.003, 0.01, 0.05, 0.01, 0.0],
    ),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_colmap_distortion_models_undistort_to_the_pinhole_image(tmp_path, model):
    params, dist = MODELS[model]
    scene = load_scene(colmap_scene(tmp_path, model, params, dist, masks=True))
    np.testing.assert_allclose(scene.distortion[0][: len(dist)], dist)
    rgb, masks = scene.load_images([0, 1], H, W)
    u, v = pixel_grid()
    want, want_mask = pattern(u, v), half_mask(u, v)
    got = rgb[0].permute(1, 2, 0).numpy()
    raw = iio.imread(scene.image_paths[0]) / 255.0
    assert masks.shape == (2, 1, H, W)
    valid = masks[0, 0].numpy() > 0  # the mask file's white half: only there is the photo compared
    inner = np.zeros((H, W), bool)
    inner[4:-4, 4:-4] = True
    assert psnr(got, want, (valid & inner)[..., None]) > 38.0
    assert psnr(raw, want, (valid & inner)[..., None]) < 25.0  # the test has teeth: the photo itself is far off
    # the mask went through the same warp: its edge is straight at u = 70 again (within the pixel a hard edge
    # resampled twice can move)
    m, want_m = masks[0, 0].numpy()[10:-10, 10:-10], want_mask[10:-10, 10:-10]
    away = np.abs(u[10:-10, 10:-10] - 69.5) > 1.5
    np.testing.assert_allclose(m[away], want_m[away], atol=0.02)
    assert np.abs(m - want_m).mean() < 0.01
    torch.testing.assert_close(rgb[0], rgb[1])
    _, object_masks, valid = scene.load_images([0], H, W, split_valid=True)  # barrel: every pixel has a source
    assert bool((valid == 1).all()) and np.abs(object_masks[0, 0].numpy() - want_mask)[10:-10, 10:-10].mean() < 0.01


def test_corners_of_a_checkerboard_land_within_a_pixel(tmp_path):
    """Checkerboard corners drawn on the pinhole image, photographed through OPENCV distortion, are found again
    (cv2.findChessboardCornersSB) where they were drawn."""
    params, dist = MODELS["OPENCV"]
    square = 12.0

    def board(u, v):
        i, j = np.floor((u - 20.0) / square), np.floor((v - 16.0) / square)
        inside = (i >= 0) & (i < 10) & (j >= 0) & (j < 7)
        value = np.where(inside, ((i + j) % 2).astype(float), 1.0)
        return np.repeat(value[..., None], 3, -1)

    root = tmp_path / "board"
    colmap_scene(root, "OPENCV", params, dist)
    for name in ("a.png", "b.png"):  # supersampled board, to give it clean edges
        acc = sum(distorted(lambda u, v: board(u + dx, v + dy), dist) for dx in (-0.25, 0.25) for dy in (-0.25, 0.25))
        save(root / "images" / name, acc / 4)
    scene = load_scene(root)
    rgb, _ = scene.load_images([0], H, W)
    xs, ys = 20.0 + square * np.arange(1, 10), 16.0 + square * np.arange(1, 7)
    want = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)  # pixel centres at integers, as OpenCV's

    def corner_error(gray):
        found, corners = cv2.findChessboardCornersSB(gray, (9, 6))
        assert found
        return np.linalg.norm(corners.reshape(-1, 2)[:, None] - want[None], axis=-1).min(1).max()

    assert corner_error((rgb[0].mean(0).numpy() * 255).astype(np.uint8)) < 0.5
    assert corner_error(iio.imread(scene.image_paths[0])[..., 0]) > 1.5  # in the photo itself they are off


def test_pixels_without_a_source_are_masked_not_black(tmp_path):
    """Pincushion distortion: the pinhole image's corners come from outside the photo; barrel distortion past
    the fold: they would come from a mirrored part of it. Both are masked; the colour there is not black."""
    for k1, name in ((0.3, "pincushion"), (-0.6, "folded")):
        root = colmap_scene(tmp_path / name, "SIMPLE_RADIAL", (FX, CX, CY, k1), [k1, 0, 0, 0])
        scene = load_scene(root)
        rgb, masks = scene.load_images([0], H, W)
        m = masks[0, 0]
        assert m[0, 0] == 0 and m[-1, -1] == 0 and m[H // 2, W // 2] == 1
        assert 0.05 < float((m == 0).float().mean()) < 0.6
        assert float(rgb[0][:, m == 0].mean()) > 0.2  # edge pixels repeated, not the zero border
        # the same region on its own, apart from object masks (none here)
        rgb2, object_masks, valid = scene.load_images([0], H // 2, W // 2, split_valid=True)
        assert object_masks is None and valid.shape == (1, 1, H // 2, W // 2)
        torch.testing.assert_close(valid, torch.nn.functional.interpolate(masks, size=(H // 2, W // 2), mode="area"))


def test_resized_loads_undistort_at_full_resolution_first(tmp_path):
    params, dist = MODELS["OPENCV"]
    scene = load_scene(colmap_scene(tmp_path, "OPENCV", params, dist))
    full, full_mask = scene.load_images([0], H, W)
    half, half_mask_ = scene.load_images([0], H // 2, W // 2)
    want = torch.nn.functional.interpolate(full, size=(H // 2, W // 2), mode="area")
    torch.testing.assert_close(half, want, atol=1e-5, rtol=0)
    assert half_mask_.shape == (1, 1, H // 2, W // 2) and full_mask is not None


def test_pinhole_views_load_as_before(tmp_path):
    """SIMPLE_PINHOLE and all-zero coefficients are no distortion: no mask, the photo unchanged."""
    root = colmap_scene(tmp_path / "p", "SIMPLE_PINHOLE", (FX, CX, CY), [0, 0, 0, 0])
    scene = load_scene(root)
    assert scene.distortion == []
    rgb, masks = scene.load_images([0], H, W)
    assert masks is None
    np.testing.assert_allclose(rgb[0].permute(1, 2, 0).numpy(), iio.imread(scene.image_paths[0]) / 255, atol=1e-6)
    zero = load_scene(colmap_scene(tmp_path / "z", "OPENCV", (FX, FY, CX, CY, 0, 0, 0, 0), [0, 0, 0, 0]))
    assert zero.distortion == [] and zero.load_images([0], H, W)[1] is None


def nerfstudio_scene(root, frames_extra, extra, per_frame_photos):
    names = ["f0.png", "f1.png", "f2.png"]
    frames = []
    for i, (name, pose) in enumerate(zip(names, cameras(3))):
        frames.append({"file_path": f"images/{name}", "transform_matrix": pose.tolist(), **frames_extra.get(i, {})})
        save(root / "images" / name, distorted(pattern, per_frame_photos[i]))
    meta = {"camera_model": "OPENCV", "fl_x": FX, "fl_y": FY, "cx": CX, "cy": CY, "w": W, "h": H, "frames": frames}
    (root / "transforms.json").write_text(json.dumps({**meta, **extra}))
    return root / "transforms.json"


def test_nerfstudio_k1_p1_global_and_per_frame(tmp_path):
    """Top-level k1, p1, k3 for every frame; frame 1 overrides k1; frame 2 sets every term to 0."""
    glob = {"k1": -0.12, "p1": 0.005, "k3": 0.01}
    dists = [[-0.12, 0, 0.005, 0, 0.01], [-0.05, 0, 0.005, 0, 0.01], [0, 0, 0, 0, 0]]
    frames = {1: {"k1": -0.05}, 2: {"k1": 0.0, "p1": 0.0, "k3": 0.0}}
    scene = load_scene(nerfstudio_scene(tmp_path, frames, glob, dists))
    np.testing.assert_allclose(scene.distortion[0], dists[0])
    np.testing.assert_allclose(scene.distortion[1], dists[1])
    assert scene.distortion[2] is None
    rgb, masks = scene.load_images([0, 1, 2], H, W)
    u, v = pixel_grid()
    inner = np.zeros((H, W, 1), bool)
    inner[4:-4, 4:-4] = True
    for i in range(3):
        assert psnr(rgb[i].permute(1, 2, 0).numpy(), pattern(u, v), inner) > 38.0
    assert bool((masks[2] == 1).all())  # the pinhole view among distorted ones gets an all-ones mask


@pytest.mark.parametrize(
    "model, params",
    [
        ("OPENCV_FISHEYE", (FX, FY, CX, CY, 0.1, 0, 0, 0)),
        ("SIMPLE_RADIAL_FISHEYE", (FX, CX, CY, 0.1)),
        ("RADIAL_FISHEYE", (FX, CX, CY, 0.1, 0.0)),
        ("FOV", (FX, FY, CX, CY, 0.1)),
        ("THIN_PRISM_FISHEYE", (FX, FY, CX, CY) + (0.0,) * 8),
    ],
)
def test_unsupported_colmap_models_are_one_line_naming_model_and_file(tmp_path, model, params):
    colmap_scene(tmp_path, model, params, [0, 0, 0, 0])
    with pytest.raises(SceneFormatError) as err:
        load_scene(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and model in msg and "cameras.txt" in msg and "supported: SIMPLE_PINHOLE" in msg
    assert "OPENCV, FULL_OPENCV" in msg


@pytest.mark.parametrize(
    "frames, extra, words",
    [
        ({}, {"camera_model": "OPENCV_FISHEYE"}, "'OPENCV_FISHEYE' is not supported"),
        ({1: {"camera_model": "EQUIRECTANGULAR"}}, {}, "'EQUIRECTANGULAR' is not supported (frames[1]"),
        ({}, {"k4": 0.01}, "k4 = 0.01 is not supported"),
    ],
)
def test_unsupported_nerfstudio_cameras_are_one_line(tmp_path, frames, extra, words):
    path = nerfstudio_scene(tmp_path, frames, extra, [[0, 0, 0, 0]] * 3)
    with pytest.raises(SceneFormatError) as err:
        load_scene(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and words in msg, msg
