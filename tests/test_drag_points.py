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


def _body_and_arm(n_body: int = 600, n_arm: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat slab (the body, y in [-0.1, 0]) and an arm standing on it: a line of points from (0, 0.02, 0) up to
    (0, 0.6, 0); the arm is selected."""
    g = torch.Generator().manual_seed(0)
    body = torch.rand(n_body, 3, generator=g) * torch.tensor([1.0, 0.1, 1.0]) - torch.tensor([0.5, 0.1, 0.5])
    arm = torch.zeros(n_arm, 3)
    arm[:, 1] = torch.linspace(0.02, 0.6, n_arm)
    arm[:, 0] = 0.01 * torch.randn(n_arm, generator=g)
    means = torch.cat([body, arm])
    return means, torch.arange(len(means)) >= n_body


def test_a_part_attached_at_one_end_turns_about_its_joint():
    from threedistill.editing.drag_points import joint_motion
    from threedistill.toyworld.catalogue import rotation

    means, arm = _body_and_arm()
    turn = rotation("z", 60.0)
    tip = torch.tensor([[0.0, 0.6, 0.0]])
    points = DragPoints(tip, tip @ turn.T)  # the arm's tip turned 60 degrees about the joint (the origin)
    motion = joint_motion(means, arm, points)
    assert motion.kind == "turn"
    assert motion.pivot.norm() < 0.1  # found where the arm meets the body
    assert torch.allclose(motion.apply(tip), points.targets, atol=1e-5)  # the handle lands on its target
    moved = motion.apply(means[arm])
    assert torch.allclose(moved, means[arm] @ turn.T, atol=0.1)  # the whole arm turned (about a pivot 0.08 up)
    shifted = means[arm] + (points.targets - points.handles)
    assert (shifted - means[arm] @ turn.T).norm(dim=1).max() > 0.2  # (a shift would have been far off)


def test_a_drag_a_turn_cannot_explain_or_a_free_part_is_a_shift():
    from threedistill.editing.drag_points import joint_motion

    means, arm = _body_and_arm()
    # straight up, away from the joint: no turn about it reaches the target
    up = DragPoints(torch.tensor([[0.0, 0.6, 0.0]]), torch.tensor([[0.0, 0.9, 0.0]]))
    motion = joint_motion(means, arm, up)
    assert motion.kind == "shift" and motion.miss > 0.2
    assert torch.allclose(motion.apply(means[arm]), means[arm] + torch.tensor([0.0, 0.3, 0.0]), atol=1e-6)
    # two pairs moved alike, far from any turn about the joint: a shift
    handles = torch.tensor([[0.0, 0.6, 0.0], [0.0, 0.3, 0.0]])
    pairs = DragPoints(handles, handles + torch.tensor([0.4, 0.0, 0.0]))
    assert joint_motion(means, arm, pairs).kind == "shift"
    # handles on their targets: nothing moves
    still = DragPoints(torch.tensor([[0.0, 0.6, 0.0]]), torch.tensor([[0.0, 0.6, 0.0]]))
    assert torch.equal(joint_motion(means, arm, still).apply(means[arm]), means[arm])


def test_the_rigid_move_turns_orientations_with_the_part_and_leaves_the_rest_bit_identical():
    from types import SimpleNamespace

    from threedistill.editing.drag_points import RigidMotion
    from threedistill.geometry import quat_to_rotmat
    from threedistill.toyworld.catalogue import rotation

    g = torch.Generator().manual_seed(1)
    quats = torch.nn.functional.normalize(torch.randn(50, 4, generator=g), dim=-1)
    means = torch.randn(50, 3, generator=g)
    scene = SimpleNamespace(means=torch.nn.Parameter(means.clone()), quats=torch.nn.Parameter(quats.clone()))
    turn = rotation("y", 35.0)
    motion = RigidMotion(turn, torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.0, 0.5, 0.0]), "turn")
    selected = torch.arange(50) < 20
    out = motion.moved(scene, selected)
    assert torch.equal(out.means[~selected], means[~selected]) and torch.equal(out.quats[~selected], quats[~selected])
    assert torch.allclose(out.means[selected], (means[selected] - motion.pivot) @ turn.T + motion.pivot + motion.shift)
    # each turned orientation is the turn times the old one
    assert torch.allclose(quat_to_rotmat(out.quats[selected]), turn @ quat_to_rotmat(quats[selected]), atol=1e-5)
    assert torch.equal(scene.means, means)  # the source is not touched


def test_on_the_toy_turns_the_joint_is_found_near_the_true_pivot():
    from threedistill.editing.drag_points import joint_motion

    for name in ("duck-head_turn", "cone-lean"):
        drag = DRAGS[name]
        means = _surface(drag.object)
        label = object_sdf(get_object(drag.object), means)[1]
        selected = torch.isin(label, torch.tensor(drag.parts))
        if name == "cone-lean":  # the cone stands on the ground: a floor of points under it
            g = torch.Generator().manual_seed(0)
            floor = torch.rand(2000, 3, generator=g) * torch.tensor([2.0, 0.0, 2.0]) - torch.tensor([1.0, 0.63, 1.0])
            means, selected = torch.cat([means, floor]), torch.cat([selected, torch.zeros(2000, dtype=torch.bool)])
        points = DragPoints(drag.handle_points(), drag.target_points())
        motion = joint_motion(means, selected, points)
        assert motion.kind == "turn", name
        moved = motion.apply(means[selected])
        truth = drag.move(means[selected])
        # the part lands closer to the truth than the rigid shift of the same drag puts it
        shift = means[selected] + (points.targets - points.handles).mean(0)
        assert (moved - truth).norm(dim=1).mean() < 0.6 * (shift - truth).norm(dim=1).mean(), name


def test_the_handle_error_of_the_exact_drag_is_zero_for_turns_too_and_no_edit_scores_the_drag_length():
    for drag in DRAGS.values():  # sparse samples, as a fit's few Gaussians on a small part
        means = _surface(drag.object, n=1500)
        label = object_sdf(get_object(drag.object), means)[1]
        part = torch.isin(label, torch.tensor(drag.parts))
        exact = means.clone()
        exact[part] = drag.move(means[part])
        points = DragPoints(drag.handle_points(), drag.target_points())
        assert max(handle_error(means, exact, points, size=2.0, part=part)) < 1e-3, drag.name
        lengths = (points.targets - points.handles).norm(dim=1) / 2.0
        assert torch.allclose(torch.tensor(handle_error(means, means, points, size=2.0, part=part)), lengths, atol=1e-4)


def test_a_part_too_small_to_fix_a_rotation_moves_the_handle_by_its_mean_displacement():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(200, 3, generator=g)
    part = torch.zeros(200, dtype=torch.bool)
    part[:5] = True
    after = means.clone()
    after[:5] += torch.tensor([0.3, 0.0, 0.0]) + 0.05 * torch.randn(5, 3, generator=g)  # a shift, unevenly
    handle = means[:5].mean(0, keepdim=True) + torch.tensor([[0.2, 0.0, 0.0]])
    points = DragPoints(handle, handle + torch.tensor([[0.3, 0.0, 0.0]]))
    expected = float((handle[0] + (after[:5] - means[:5]).mean(0) - points.targets[0]).norm())
    assert handle_error(means, after, points, size=1.0, part=part)[0] == pytest.approx(expected, abs=1e-6)
