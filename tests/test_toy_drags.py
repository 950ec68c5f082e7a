"""Toy drags (issue #24, part 1): parametric part moves with exact ground truth, written as a capture, DYG's
drag_points.json, a region and the edited capture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cli import assert_one_line_error, t3d

from threedistill.errors import UnknownNameError
from threedistill.toyworld.catalogue import get_object
from threedistill.toyworld.drag_capture import write_drag_scene
from threedistill.toyworld.drags import DRAGS, drag_region, get_drag, get_drag_object
from threedistill.toyworld.render import object_sdf


def test_there_are_ten_drags_or_more_over_five_objects_some_with_several_point_pairs():
    assert len(DRAGS) >= 10
    assert len({d.object for d in DRAGS.values()}) >= 5
    assert sum(len(d.handles) > 1 for d in DRAGS.values()) >= 3


@pytest.mark.parametrize("name", sorted(DRAGS))
def test_a_drag_moves_its_handles_with_its_parts_and_nothing_else(name):
    drag = DRAGS[name]
    source, edited = get_object(drag.object), get_object(f"{drag.object}@{name}")
    handles, targets = drag.handle_points(), drag.target_points()
    assert object_sdf(source, handles)[0].abs().max() < 0.02  # handles on the object's surface
    assert object_sdf(edited, targets)[0].abs().max() < 0.02  # and carried to the edited surface
    assert (targets - handles).norm(dim=1).min() >= 0.1 * 2 - 1e-6  # a move of at least a tenth of the object's size
    for i, (a, b) in enumerate(zip(source.parts, edited.parts)):
        assert (a is b) == (i not in drag.parts), i  # the other parts are the catalogue's own
    points = torch.rand(100000, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    inside = object_sdf(edited, points)[0] < 0
    assert points[inside].norm(dim=1).max() <= 1.0  # still inside the unit sphere, as every toy object
    centre, radius = drag_region(drag)
    assert (torch.cat([handles, targets]) - centre).norm(dim=1).max() < radius


def test_unknown_drags_and_mismatched_objects_are_one_line_errors():
    with pytest.raises(UnknownNameError, match="known: snowman-head_left"):
        get_drag("snowman-wave")
    with pytest.raises(UnknownNameError, match="moves a duck, not a robot"):
        get_drag_object("robot@duck-head_raise")
    assert_one_line_error(t3d("toyworld", "drag-scene", "nope", "--out", "x"), "unknown toy drag 'nope'")


def test_the_drag_scene_holds_the_capture_the_points_the_region_and_the_edited_capture(tmp_path):
    name = "robot-left_arm_up"
    out = write_drag_scene(name, tmp_path / "drag", n_views=4, width=32, height=24)
    points = json.loads((out / "drag_points.json").read_text())
    handles, targets = np.array(points["handle_points"]), np.array(points["target_points"])
    assert handles.shape == targets.shape == (1, 3)
    record = json.loads((out / "toy_scene.json").read_text())
    edited_record = json.loads((out / "edited" / "toy_scene.json").read_text())
    assert edited_record["cameras"] == record["cameras"] and edited_record["frame"] == record["frame"]
    assert edited_record["scene"]["objects"][0]["name"] == f"robot@{name}"
    # capture coordinates: the object's move times its placement scale (0.5) and the written frame's scale
    drag = DRAGS[name]
    expected = (drag.target_points() - drag.handle_points()).norm(dim=1).numpy() * 0.5 * record["frame_scale"]
    assert np.allclose(np.linalg.norm(targets - handles, axis=1), expected, rtol=1e-5)
    region = json.loads((out / "region.json").read_text())
    centre, radius = np.array(region["sphere"]["centre"]), region["sphere"]["radius"]
    assert np.linalg.norm(np.concatenate([handles, targets]) - centre, axis=1).max() < radius
    assert region["mask"].startswith("sphere:") and region["prompt"] == "a red robot with its left arm raised"
    from PIL import Image

    before = [np.asarray(Image.open(p)) for p in sorted((out / "images").glob("*.png"))]
    after = [np.asarray(Image.open(p)) for p in sorted((out / "edited" / "images").glob("*.png"))]
    assert len(before) == len(after) == 4
    assert any((a != b).any() for a, b in zip(before, after))  # the arm moved in some view
