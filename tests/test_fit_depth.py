"""The sparse SfM depth loss of `t3d fit` (`lambda_depth`, gsplat's `depth_loss`): COLMAP tracks are read (text and
binary) into each view's matched points, those points are projected where the rasterizer projects them, the loss
is zero at the right depths and pulls rendered depth toward them, and a scene without tracks is a one-line error."""

import json

import numpy as np
import pytest
import torch
from conftest import FIT_FAST

from threedistill.errors import ConfigError
from threedistill.renderers.gaussian_raster import intrinsics, opencv_viewmats
from threedistill.scenes import load_scene
from threedistill.scenes.colmap import pinhole_model, read_colmap, write_colmap_model
from threedistill.scenes.views import Resolution, SceneViews, sparse_depth_loss, sparse_depths
from threedistill.workflows.fit import fit

QUIET = dict(progress=False, log=lambda s: None)


def colmap_only(scene_dir, tmp_path):
    """The toy capture as a COLMAP scene (its folder also holds transforms.json, which is read first)."""
    out = tmp_path / "colmap"
    out.mkdir()
    for name in ("images", "sparse"):
        (out / name).symlink_to(scene_dir / name)
    return out


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_tracks_become_each_views_matched_points(tmp_path, binary):
    (tmp_path / "images").mkdir()
    names = [f"{i}.png" for i in range(3)]
    for name in names:
        (tmp_path / "images" / name).write_bytes(b"")  # not decoded by the reader
    c2w = np.tile(np.eye(4), (3, 1, 1))
    c2w[:, 2, 3] = [3.0, 4.0, 5.0]
    cams, imgs = pinhole_model(c2w, names, np.tile([20.0, 20.0, 8.0, 6.0, 16, 12], (3, 1)))
    imgs = imgs[::-1]  # the file's order is not the scene's (sorted by name)
    xyz = np.random.default_rng(0).normal(size=(4, 3)) * 0.1
    tracks = [[1, 2], [3], [], [2, 3, 99]]  # IMAGE_IDs; 99 is no image of the model
    write_colmap_model(tmp_path / "sparse" / "0", cams, imgs, xyz, None, binary, tracks)
    scene = read_colmap(tmp_path)
    assert [p.tolist() for p in scene.point_views] == [[0], [0, 3], [1, 3]]


@pytest.mark.parametrize("binary", [False, True])
def test_cameras_and_points_that_disagree_are_a_one_line_error(tmp_path, binary):
    """Points3D from another reconstruction than images.bin (a public capture shipped such a pair; pycolmap
    refuses it): most matched points fall behind or outside their views, and reading the model says so."""
    from threedistill.errors import SceneFormatError

    (tmp_path / "images").mkdir()
    names = [f"{i}.png" for i in range(4)]
    for name in names:
        (tmp_path / "images" / name).write_bytes(b"")  # not decoded by the reader
    c2w = np.tile(np.eye(4), (4, 1, 1))
    c2w[:, 2, 3] = [3.0, 4.0, 5.0, 6.0]
    cams, imgs = pinhole_model(c2w, names, np.tile([20.0, 20.0, 8.0, 6.0, 16, 12], (4, 1)))
    xyz = np.random.default_rng(0).normal(size=(40, 3)) * 0.2
    tracks = [[1, 2, 3, 4]] * 40
    write_colmap_model(tmp_path / "sparse" / "0", cams, imgs, xyz, None, binary, tracks)
    assert len(read_colmap(tmp_path)) == 4  # consistent: every matched point is in front and inside
    elsewhere = xyz + np.array([0.0, 0.0, 8.0])  # the same points behind every camera
    write_colmap_model(tmp_path / "sparse" / "0", cams, imgs, elsewhere, None, binary, tracks)
    with pytest.raises(SceneFormatError, match=r"images.bin|images.txt") as err:
        read_colmap(tmp_path)
    message = str(err.value)
    assert "disagree" in message and "0% of the points" in message and "\n" not in message
    files = ("images.bin", "points3D.bin") if binary else ("images.txt", "points3D.txt")
    assert f"{files[0]} and {files[1]} probably come from different reconstructions" in message
    aside = xyz + np.array([5.0, 0.0, 0.0])  # beside the views: in front, outside the frame (x > 8 + 20 * 5 / 9)
    write_colmap_model(tmp_path / "sparse" / "0", cams, imgs, aside, None, binary, tracks)
    with pytest.raises(SceneFormatError, match="disagree"):
        read_colmap(tmp_path)
    half = np.concatenate([xyz[:30], elsewhere[30:]])  # a quarter of the points wrong: still read
    write_colmap_model(tmp_path / "sparse" / "0", cams, imgs, half, None, binary, tracks)
    assert len(read_colmap(tmp_path)) == 4


def test_matched_points_project_where_the_rasterizer_projects_them(captured, tmp_path):
    scene = load_scene(colmap_only(captured[0], tmp_path))
    assert scene.point_views is not None and sum(len(v) for v in scene.point_views) == len(scene.points)
    idx = scene.train_indices[:3]
    sizes = [Resolution(height=24).size(scene, i) for i in idx]
    for i, (h, w), (grid, dist) in zip(idx, sizes, sparse_depths(scene, idx, sizes, torch.device("cpu"))):
        cam = scene.cameras([i])
        points = scene.points[scene.point_views[i]]
        local = (opencv_viewmats(cam)[0] @ torch.cat([points, torch.ones(len(points), 1)], -1).T).T[:, :3]
        pix = (intrinsics(cam, h, w)[0] @ local.T).T
        pix = pix[:, :2] / pix[:, 2:]
        inside = (local[:, 2] > 0) & (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
        assert len(grid) == int(inside.sum()) > 0
        expected = pix[inside] / torch.tensor([w, h]) * 2 - 1
        assert torch.allclose(grid, expected, atol=1e-4)
        assert torch.allclose(dist, local[inside].norm(dim=-1), atol=1e-4)


def test_sparse_depth_loss_is_zero_at_the_right_depth_and_pulls_toward_it():
    grid = torch.tensor([[-0.5, 0.0], [0.5, 0.5]])
    right = torch.full((1, 1, 8, 8), 2.0)
    assert float(sparse_depth_loss(right, [(grid, torch.tensor([2.0, 2.0]))])) < 1e-7
    wrong = torch.full((1, 1, 8, 8), 4.0, requires_grad=True)
    loss = sparse_depth_loss(wrong, [(grid, torch.tensor([2.0, 2.0]))])
    assert float(loss.detach()) == pytest.approx(0.25)
    loss.backward()
    assert float(wrong.grad.sum()) > 0  # the loss grows with the too-far depth: descent brings it nearer
    assert float(sparse_depth_loss(right, [(grid[:0], torch.zeros(0))])) == 0.0  # no points: nothing


def test_a_fit_with_depth_logs_the_term_and_a_scene_without_tracks_is_refused(captured, tmp_path):
    scene = str(colmap_only(captured[0], tmp_path))
    run = fit(scene=scene, steps=4, out=str(tmp_path / "a"), overrides=[*FIT_FAST, "lambda_depth=0.1"], **QUIET)
    rows = [json.loads(line) for line in (run.dir / "log.jsonl").read_text().splitlines()]
    depth = [r["loss_depth"] for r in rows if "loss_depth" in r]
    assert depth and all(np.isfinite(depth)), rows[-1]
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "transforms.json").write_text((captured[0] / "transforms.json").read_text())
    (bare / "images").symlink_to(captured[0] / "images")
    data = json.loads((bare / "transforms.json").read_text())
    data.pop("ply_file_path", None)
    (bare / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="lambda_depth needs SfM points"):
        fit(scene=str(bare), steps=2, out=str(tmp_path / "b"), overrides=[*FIT_FAST, "lambda_depth=0.1"], **QUIET)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="lambda_depth must be"):
        fit(scene=scene, steps=2, out=str(tmp_path / "c"), overrides=[*FIT_FAST, "lambda_depth=-1"], **QUIET)


def test_views_carry_each_drawn_views_points(captured, tmp_path):
    scene = load_scene(colmap_only(captured[0], tmp_path))
    views = SceneViews(scene, scene.train_indices, 24, torch.device("cpu"), depth_points=True)
    batch = views.sample(torch.Generator().manual_seed(0), 1)
    ((grid, dist),) = batch.targets["points"]
    assert grid.shape[1] == 2 and len(grid) == len(dist) > 0
    plain = SceneViews(scene, scene.train_indices, 24, torch.device("cpu"))
    assert "points" not in plain.sample(torch.Generator().manual_seed(0), 1).targets
