"""Drag input (--drag, drag_points.json, gaussian_mask.pt / .npy) and the geometric drag with no prior (issue #24)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from threedistill.editing.drag_points import DragPoints, handle_error, read_gaussian_mask, warp_gaussians
from threedistill.errors import ConfigError
from threedistill.toyworld.catalogue import get_object
from threedistill.toyworld.drags import DRAGS
from threedistill.toyworld.mesh import toy_mesh
from threedistill.toyworld.render import object_sdf


def test_drag_options_parse_and_bad_ones_are_one_line_errors():
    points = DragPoints.parse(["0,0.5,0>0.1,0.7,0", "1,2,3>4,5,6"])
    assert points.handles.tolist() == [[0, 0.5, 0], [1, 2, 3]] and points.targets[1].tolist() == [4, 5, 6]
    for bad in ("0,0,0", "0,0>1,1,1", "a,b,c>1,2,3", "0,0,0>1,1,1,1", "0,0,nan>1,1,1"):
        with pytest.raises(ConfigError, match="--drag|NaN") as err:
            DragPoints.parse([bad])
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no drag points"):
        DragPoints.parse([])


def test_drag_files_are_read_in_dygs_layout_and_checked(tmp_path):
    path = tmp_path / "drag_points.json"
    path.write_text(json.dumps({"handle_points": [[0, 0, 0], [1, 1, 1]], "target_points": [[0, 1, 0], [1, 2, 1]]}))
    assert len(DragPoints.read(path)) == 2
    for meta, fragment in (
        ({"handle_points": [[0, 0, 0]]}, "missing field target_points"),
        ({"handle_points": [[0, 0, 0], [1, 1, 1]], "target_points": [[0, 1, 0]]}, "2 handle points but 1 target"),
        ({"handle_points": [["a", 0, 0]], "target_points": [[0, 1, 0]]}, "list of \\[x, y, z\\] numbers"),
        ({"handle_points": [], "target_points": []}, "no drag points"),
    ):
        path.write_text(json.dumps(meta))
        with pytest.raises(ConfigError, match=fragment):
            DragPoints.read(path)
    points = DragPoints.parse(["0,0,0>0,5,0"])
    with pytest.raises(ConfigError, match="target point 1 .* lies outside the scene"):
        points.check_inside(torch.zeros(3), 2.0)


def test_gaussian_masks_are_read_without_unpickling_and_checked(tmp_path):
    torch.save(torch.tensor([True, False, True]), tmp_path / "gaussian_mask.pt")
    assert read_gaussian_mask(tmp_path / "gaussian_mask.pt", 3).tolist() == [True, False, True]
    np.save(tmp_path / "mask.npy", np.array([0, 1, 0], dtype=np.uint8))
    assert read_gaussian_mask(tmp_path / "mask.npy", 3).tolist() == [False, True, False]
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ConfigError, match="unreadable"):
        read_gaussian_mask(tmp_path / "evil.pt", 3)
    with pytest.raises(ConfigError, match="has 3 entries; the scene has 4"):
        read_gaussian_mask(tmp_path / "gaussian_mask.pt", 4)
    torch.save(torch.zeros(3, dtype=torch.bool), tmp_path / "empty.pt")
    with pytest.raises(ConfigError, match="selects no Gaussian"):
        read_gaussian_mask(tmp_path / "empty.pt", 3)


def _surface(name: str, n: int = 4000) -> torch.Tensor:
    mesh = toy_mesh(name, resolution=64)
    points = mesh.sample(n, seed=np.random.default_rng(0))
    return torch.tensor(np.asarray(points), dtype=torch.float32)


def test_the_geometric_drag_of_a_translated_part_lands_on_the_ground_truth_and_leaves_the_rest_untouched():
    drag = DRAGS["house-roof_up"]
    means = _surface("house")
    label = object_sdf(get_object("house"), means)[1]
    selected = torch.isin(label, torch.tensor(drag.parts))
    points = DragPoints(drag.handle_points(), drag.target_points())
    after = warp_gaussians(means, selected, points)
    assert torch.equal(after[~selected], means[~selected])  # bit-identical outside the selection
    assert torch.allclose(after[selected], drag.move(means[selected]), atol=1e-6)  # exactly the part's motion
    assert max(handle_error(means, after, points, size=2.0)) < 0.02
    assert min(handle_error(means, means, points, size=2.0)) > 0.09  # no edit: the handle error is the move


def test_with_handles_equal_to_targets_the_geometric_drag_moves_nothing():
    means = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    points = DragPoints(means[:3].clone(), means[:3].clone())
    assert torch.equal(warp_gaussians(means, means[:, 0] > 0, points), means)
