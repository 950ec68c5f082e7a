"""A real capture (tests/data/skull_capture: 44 photos of a skull on a stand, CC BY 4.0, poses by COLMAP; its
ATTRIBUTION.md): the fit densifies on photographs, and a mask drawn on one photo lifts to the object's Gaussians,
judged from the held-out views against the object's silhouette (threedistill/bench/lift_bench.py; issue #23: on a
real phone capture the lifting once selected 13% of what a mask covered)."""

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from threedistill.bench.lift_bench import (
    mask_view_indices,
    near_gaussians,
    object_mask,
    silhouette_scores,
    view_masks,
)
from threedistill.editing.lift import lift_view_mask

SKULL = Path(__file__).parent / "data" / "skull_capture"
# Measured on this fit (300 steps at 200 px, seed 0; x86_64, 2 threads): the mask of the first training view gives
# held-out precision 0.894 and coverage 0.886 where the fit itself covers 0.914 of the silhouettes; all the
# Gaussians within the cameras' reach give precision 0.68 (the floaters and the stand's surroundings).
MIN_PRECISION, MIN_COVERAGE_SHARE = 0.84, 0.85
# Under pytest-xdist the module's tests share one worker, so the fit below is made once, not once per worker.
pytestmark = pytest.mark.xdist_group("lift_real")


@pytest.fixture(scope="module")
def skull_fit(tmp_path_factory):
    from threedistill.scenes import load_scene
    from threedistill.workflows.fit import fit, load_fit_model

    out, lines = tmp_path_factory.mktemp("skull"), []
    run = fit(str(SKULL), steps=600, seed=0, out=str(out), progress=False, log=lines.append, max_side=200)
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return events, load_scene(str(SKULL)), load_fit_model(run.dir)


def test_the_real_capture_loads_with_its_lens_distortion_and_every_photo():
    from threedistill.scenes import load_scene

    scene = load_scene(str(SKULL))
    assert len(scene.image_paths) == 44 and len(scene.val_indices) >= 5
    assert all(d is not None for d in scene.distortion)  # SIMPLE_RADIAL: undistorted at load
    assert scene.points is not None and len(scene.points) > 2000


def test_densification_fires_on_photographs_and_the_gaussians_grow(skull_fit):
    events, _, gaussians = skull_fit
    rounds = [e["densify"] for e in events if "densify" in e]
    assert rounds, "no densification round was logged"
    grown = sum(r["cloned"] + r["split"] - r["pruned"] for r in rounds)  # a split replaces its parent by two
    assert grown > 1000 and len(gaussians) == rounds[-1]["count"], rounds


def test_the_object_mask_rule_finds_the_skull_not_the_backdrop():
    from threedistill.scenes.base import read_image

    rgb = read_image(SKULL / "images" / "05.jpg")[0]
    mask = object_mask(rgb)
    assert 0.1 < mask.mean() < 0.6  # the skull fills part of the frame
    assert not mask[0].any() and not mask[:, 0].any()  # the dark backdrop at the top and left edges
    assert rgb[:, torch.from_numpy(mask)].mean() > 2 * rgb[:, torch.from_numpy(~mask)].mean()  # bright on dark


def test_a_mask_drawn_on_one_photo_selects_the_object_seen_from_the_held_out_views(skull_fit, tmp_path):
    _, scene, gaussians = skull_fit
    view = mask_view_indices(scene, 1)[0]
    name = scene.image_paths[view].name
    drawn = view_masks(scene, [view], undistorted=False)[view]  # on the photo as taken
    iio.imwrite(tmp_path / "mask.png", drawn.astype(np.uint8) * 255)
    selected, framing = lift_view_mask(scene, gaussians, f"view:{name}:{tmp_path / 'mask.png'}")
    held_out = view_masks(scene, list(scene.val_indices), undistorted=True)
    scores = silhouette_scores(scene, gaussians, selected, held_out)
    assert scores["precision"] >= MIN_PRECISION, scores
    assert scores["coverage"] >= MIN_COVERAGE_SHARE * scores["fit_coverage"], scores
    everything = silhouette_scores(scene, gaussians, near_gaussians(scene, gaussians), held_out)
    assert everything["precision"] < scores["precision"] - 0.1  # the score tells a selection from taking it all
    assert framing.contains(gaussians.means.detach()[selected]).float().mean() > 0.9


def test_a_mask_on_a_distorted_photo_is_undistorted_like_its_photo(skull_fit, tmp_path):
    """A spot drawn near a corner of a photo with strong barrel distortion lands, in the view's pinhole image, where
    OpenCV's undistortPoints puts the spot's centre (the fixture's own k = 0.15 moves it by under a pixel)."""
    import dataclasses

    import cv2

    from threedistill.editing.lift import read_view_mask
    from threedistill.scenes.undistort import camera_matrix

    _, scene, _ = skull_fit
    view = 0
    strong = list(scene.distortion)
    strong[view] = np.array([-2.0, 0.0, 0.0, 0.0])  # OpenCV k1 k2 p1 p2
    scene = dataclasses.replace(scene, distortion=strong)
    w, h = (int(v) for v in scene.sizes[view])
    ys, xs = np.mgrid[:h, :w]
    spot = (xs - 40.0) ** 2 + (ys - 30.0) ** 2 <= 8**2
    iio.imwrite(tmp_path / "spot.png", spot.astype(np.uint8) * 255)
    read = read_view_mask(scene, f"view:{scene.image_paths[view].name}:{tmp_path / 'spot.png'}").mask.numpy()
    k = camera_matrix(tuple(scene.intrinsics[view].tolist()), w, h)
    expected = cv2.undistortPoints(np.array([[[40.0, 30.0]]]), k, strong[view], P=k)[0, 0]
    ry, rx = np.nonzero(read)
    centre = np.array([rx.mean(), ry.mean()])
    assert np.abs(centre - expected).max() < 1.0, (centre, expected)
    assert np.abs(expected - [40.0, 30.0]).max() > 3.0  # the spot did move: the check can fail


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--scene", "/nonexistent"], "/nonexistent: not a captured scene"),
        (["--scene", str(SKULL), "--views", "0"], "--views, --steps and --max-side must be at least 1, 1 and 8"),
        (["--scene", str(SKULL), "--run", "/nonexistent"], "--run /nonexistent: not a run directory"),
    ],
)
def test_bench_lift_rejects_bad_arguments_in_one_line(args, fragment, tmp_path):
    from test_cli import assert_one_line_error, t3d

    assert_one_line_error(t3d("bench", "lift", *args, "--out", str(tmp_path / "r.md"), cwd=tmp_path), fragment)
    assert not (tmp_path / "r.md").exists()
