"""LLFF poses_bounds.npy: cameras we know, written as LLFF and as COLMAP, read back the same; downscaled image
folders scale the focal length; malformed files are one line naming the file."""

import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from threedistill.cameras import look_at
from threedistill.errors import SceneFormatError
from threedistill.scenes import load_scene
from threedistill.scenes.colmap import write_colmap_text

W, H, F = 40, 30, 36.0
NEAR, FAR = 2.0, 9.0


def forward_facing(n=9, seed=0):
    """OpenGL camera-to-world matrices of a forward-facing capture: cameras on a small grid, all looking roughly
    at a point 5 units ahead, in a tilted world."""
    rng = np.random.default_rng(seed)
    eyes = np.stack([rng.uniform(-0.6, 0.6, n), rng.uniform(-0.4, 0.4, n), np.zeros(n)], 1)
    targets = np.array([0.0, 0.0, -5.0]) + rng.normal(scale=0.2, size=(n, 3))
    c2w = look_at(torch.tensor(eyes), torch.tensor(targets)).numpy()
    tilt = np.eye(4)
    tilt[:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    if np.linalg.det(tilt[:3, :3]) < 0:
        tilt[:3, 0] *= -1
    tilt[:3, 3] = [1.0, -2.0, 0.5]
    return tilt[None] @ c2w


def poses_bounds(c2w, h=H, w=W, focal=F, near=NEAR, far=FAR):
    """LLFF's layout: [down, right, back, t, hwf] columns per camera, rows flattened, then near and far."""
    rows = []
    for m in c2w:
        right, up, back, t = m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3]
        pose = np.stack([-up, right, back, t, [h, w, focal]], 1)  # 3x5
        rows.append(np.concatenate([pose.reshape(-1), [near, far]]))
    return np.array(rows)


def write_images(folder, n, w=W, h=H, ext="png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    names = [f"IMG_{i:03d}.{ext}" for i in range(n)]
    for name in names:
        iio.imwrite(folder / name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return names


def llff(root, c2w, **kw):
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", poses_bounds(c2w, **kw))
    return write_images(root / "images", len(c2w))


def original_c2w(scene):
    """The scene's poses back in the frame they were given in."""
    t = scene.transform.double()
    inv = torch.linalg.inv(t)
    out = inv[None] @ scene.c2w.double()
    out[:, :3, :3] *= torch.linalg.det(t[:3, :3]) ** (1 / 3)
    return out.numpy()


def test_llff_reads_the_cameras_colmap_reads(tmp_path):
    c2w = forward_facing()
    names = llff(tmp_path / "llff", c2w)
    write_colmap_text(tmp_path / "colmap" / "sparse" / "0", c2w, names, [[F, F, W / 2, H / 2, W, H]] * len(c2w))
    write_images(tmp_path / "colmap" / "images", len(c2w))
    a, b = load_scene(tmp_path / "llff"), load_scene(tmp_path / "colmap")
    assert a.source == "llff" and a.points is None and a.distortion == []
    assert [p.name for p in a.image_paths] == [p.name for p in b.image_paths] == names
    np.testing.assert_allclose(original_c2w(a), c2w, atol=1e-5)
    np.testing.assert_allclose(original_c2w(a), original_c2w(b), atol=1e-5)
    torch.testing.assert_close(a.intrinsics, b.intrinsics)
    assert a.sizes.tolist() == b.sizes.tolist() == [[W, H]] * len(c2w)
    assert a.val_indices == [0, 8] and a.train_indices == list(range(1, 8))  # LLFF holds out every 8th view
    # the depth bounds frame the normalisation: what the cameras see (2..9 units ahead) lands about the unit ball
    t = a.transform.double().numpy()
    axes = -c2w[:, :3, 2]
    seen = np.concatenate([c2w[:, :3, 3] + axes * d for d in np.linspace(NEAR, FAR, 8)])
    radius = np.linalg.norm(seen @ t[:3, :3].T + t[:3, 3], axis=1)
    assert radius.max() < 1.3 and np.median(radius) < 0.7
    # the same file read directly
    torch.testing.assert_close(load_scene(tmp_path / "llff" / "poses_bounds.npy").c2w, a.c2w)


def test_llff_downscaled_images_scale_the_focal_length(tmp_path):
    c2w = forward_facing(n=4)
    root = tmp_path / "s"
    root.mkdir()
    np.save(root / "poses_bounds.npy", poses_bounds(c2w))
    write_images(root / "images_2", 4, W // 2, H // 2, "jpg")
    write_images(root / "images_4", 4, W // 4 + 1, H // 4 + 1, "jpg")  # a rounding pixel off: still a scaled copy
    scene = load_scene(root)
    assert scene.image_paths[0].parent.name == "images_2"  # the least downscaled folder
    assert scene.sizes.tolist() == [[W // 2, H // 2]] * 4
    np.testing.assert_allclose(scene.intrinsics[0].numpy(), [F / W, F / H, 0.5, 0.5], rtol=1e-6)
    write_images(root / "images", 4)  # full resolution wins when it is there
    scene = load_scene(root)
    assert scene.image_paths[0].parent.name == "images" and scene.sizes.tolist() == [[W, H]] * 4


def _case(root, fn):
    c2w = forward_facing(n=3)
    llff(root, c2w)
    fn(root, poses_bounds(c2w))
    return root


def _save(root, arr):
    np.save(root / "poses_bounds.npy", arr)


ERRORS = {
    "wrong shape": (lambda r, a: _save(r, a[:, :15]), "expected N x 17"),
    "one dimension": (lambda r, a: _save(r, a.reshape(-1)), "expected N x 17"),
    "nan": (lambda r, a: (a.__setitem__((1, 3), np.nan), _save(r, a)), "row 1 contains NaN"),
    "count mismatch": (lambda r, a: _save(r, a[:2]), "2 poses but"),
    "bad bounds": (lambda r, a: (a.__setitem__((2, 16), 0.5), _save(r, a)), "row 2 has bounds"),
    "negative focal": (lambda r, a: (a.__setitem__((0, 14), -1.0), _save(r, a)), "row 0 has hwf"),
    "not rigid": (lambda r, a: (a.__setitem__((0, 0), 3.0), _save(r, a)), "not rigid"),
    "not an npy": (lambda r, a: (r / "poses_bounds.npy").write_bytes(b"garbage"), "not a readable .npy"),
    "strings": (lambda r, a: _save(r, np.array([["x"] * 17] * 3)), "expected N x 17 numbers"),
    "other aspect": (
        lambda r, a: iio.imwrite(r / "images" / "IMG_001.png", np.zeros((W, H, 3), np.uint8)),
        "IMG_001.png: stored 30x40 but",
    ),
    "no images": (
        lambda r, a: [p.rename(r / p.name) for p in (r / "images").iterdir()] and (r / "images").rmdir(),
        "no images/ folder",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_malformed_llff_is_one_line_naming_the_file(tmp_path, case):
    fn, words = ERRORS[case]
    root = _case(tmp_path / "scene", fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SceneFormatError) as err:
            load_scene(root)
    msg = str(err.value)
    assert "\n" not in msg and str(root) in msg and words in msg, msg
    assert "poses_bounds.npy" in msg or case in ("other aspect", "no images")
