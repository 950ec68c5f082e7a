import math

import numpy as np
import pytest
import torch

from threedistill.cameras import camera_rays, orbit_cameras
from threedistill.errors import UnknownNameError
from threedistill.prompting import view_name, view_prompts
from threedistill.toyworld import sdf
from threedistill.toyworld.catalogue import COLOURS, OBJECTS, catalogue_subjects, parse_subject
from threedistill.toyworld.dataset import ToyDataset, generate_dataset
from threedistill.toyworld.mesh import toy_mesh
from threedistill.toyworld.render import render_toy


def test_catalogue_has_primitives_colours_and_fronted_objects():
    assert {"sphere", "cube", "cone", "cylinder", "torus"} <= set(OBJECTS)
    assert len(COLOURS) >= 6 and "white" not in COLOURS  # white would vanish on the white background
    fronted = [o for o in OBJECTS.values() if o.has_front]
    assert len(fronted) >= 4
    assert len(catalogue_subjects()) == len(OBJECTS) * len(COLOURS)


def test_sphere_silhouette_area_depth_and_normal():
    radius_cam, fov, res = 3.0, 40.0, 128
    out = render_toy("sphere", "red", orbit_cameras(0.0, 0.0, radius_cam, fov), res, res, supersample=2)
    r = 0.68
    focal = 0.5 * res / math.tan(math.radians(fov) / 2)
    # A sphere's silhouette is a circle of angular radius asin(r/d): its projected radius in pixels.
    px_radius = focal * math.tan(math.asin(r / radius_cam))
    area = out["alpha"].sum().item()
    assert area == pytest.approx(math.pi * px_radius**2, rel=0.02)
    c = res // 2
    centre_depth = out["depth"][0, 0, c - 1 : c + 1, c - 1 : c + 1].mean().item()
    assert centre_depth == pytest.approx(radius_cam - r, abs=0.01)
    normal = out["normal"][0, :, c - 1 : c + 1, c - 1 : c + 1].mean(dim=(1, 2))
    assert torch.allclose(normal, torch.tensor([0.0, 0.0, 1.0]), atol=0.05)
    assert out["rgb"][0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]  # white background


def test_render_outputs_are_batched_and_colour_follows_prompt():
    cams = orbit_cameras([0, 90, 180], [10, 20, 70], 2.9)
    red = render_toy("duck", "red", cams, 24, 32)
    blue = render_toy("duck", "blue", cams, 24, 32)
    assert red["rgb"].shape == (3, 3, 24, 32) and red["alpha"].shape == (3, 1, 24, 32)
    assert red["depth"].shape == (3, 1, 24, 32) and red["normal"].shape == (3, 3, 24, 32)
    mask = red["alpha"][:, 0] > 0.99
    assert red["rgb"][:, 0][mask].mean() > red["rgb"][:, 2][mask].mean() + 0.2
    assert blue["rgb"][:, 2][mask].mean() > blue["rgb"][:, 0][mask].mean() + 0.2
    assert torch.equal(red["alpha"], blue["alpha"])


def test_front_differs_from_back_for_fronted_objects():
    for name in ("snowman", "duck", "house", "robot"):
        out = render_toy(name, "green", orbit_cameras([0, 180], [10, 10], 2.9), 32, 32)
        # Mirror the back view: a symmetric object without a front would then match the front view.
        diff = (out["rgb"][0] - out["rgb"][1].flip(-1)).abs().mean().item()
        assert diff > 0.01, name


@pytest.mark.parametrize("name", list(OBJECTS))
def test_objects_fit_in_unit_sphere_and_mesh_matches_render(name):
    mesh = toy_mesh(name, resolution=64)
    assert np.linalg.norm(mesh.vertices, axis=1).max() < 1.0
    cams = orbit_cameras(35.0, 20.0, 2.9, 40.0)
    res = 24
    out = render_toy(name, "red", cams, res, res, supersample=1)
    origins, dirs = camera_rays(cams, res, res)
    locs, ray_idx, _ = mesh.ray.intersects_location(
        origins.reshape(-1, 3).numpy(), dirs.reshape(-1, 3).numpy(), multiple_hits=False
    )
    mesh_hit = np.zeros(res * res, bool)
    mesh_hit[ray_idx] = True
    render_hit = out["alpha"].reshape(-1).numpy() > 0.5
    assert (mesh_hit != render_hit).mean() < 0.02
    both = np.zeros(res * res, bool)
    both[ray_idx] = render_hit[ray_idx]
    mesh_depth = np.zeros(res * res)
    mesh_depth[ray_idx] = np.linalg.norm(locs - origins.reshape(-1, 3).numpy()[ray_idx], axis=1)
    assert np.median(np.abs(mesh_depth[both] - out["depth"].reshape(-1).numpy()[both])) < 0.02


def test_sdf_primitives_have_known_values():
    p = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    assert torch.allclose(sdf.sphere(p, 1.0), torch.tensor([-1.0, 1.0]))
    assert torch.allclose(sdf.box(p, (0.5, 0.5, 0.5)), torch.tensor([-0.5, 1.5]))
    assert torch.allclose(sdf.cylinder(p, 0.5, 1.0), torch.tensor([-0.5, 1.5]))
    assert torch.allclose(sdf.torus(torch.tensor([[1.0, 0.0, 0.0]]), 1.0, 0.25), torch.tensor([-0.25]))
    assert torch.allclose(sdf.cone(torch.tensor([[0.0, 2.0, 0.0]]), 0.5, 1.0), torch.tensor([1.0]), atol=1e-6)
    assert torch.allclose(
        sdf.ellipsoid(torch.tensor([[0.0, 3.0, 0.0]]), (1.0, 2.0, 1.0)), torch.tensor([1.0]), atol=1e-5
    )


def test_view_suffixes_follow_dreamfusion():
    assert view_name(0, 0) == "front view" and view_name(44, 30) == "front view"
    assert view_name(90, 0) == "side view" and view_name(-100, 10) == "side view"
    assert (
        view_name(180, 0) == "back view"
        and view_name(-170, 0) == "back view"
        and view_name(200, 0) == "back view"
        and view_name(250, 0) == "side view"
    )
    assert view_name(0, 61) == "overhead view"
    assert view_prompts("a red cube", torch.tensor([0.0, 180.0]), torch.tensor([0.0, 0.0])) == [
        "a red cube, front view",
        "a red cube, back view",
    ]


def test_parse_subject_and_errors():
    assert parse_subject("a red duck, side view") == ("red", "duck")
    assert parse_subject("Blue Cone") == ("blue", "cone")
    for bad, fragment in [
        ("red duk", "unknown toy object 'duk'"),
        ("pink duck", "unknown toy colour 'pink'"),
        ("duck", "expected '<colour> <object>'"),
    ]:
        with pytest.raises(UnknownNameError, match=fragment):
            parse_subject(bad)


def test_render_rejects_bad_resolution():
    with pytest.raises(ValueError, match="resolution"):
        render_toy("cube", "red", orbit_cameras(0, 0, 3), 0, 16)


def test_dataset_is_seeded_and_round_trips(tmp_path):
    a = generate_dataset(1, 16, seed=5, progress=False)
    b = generate_dataset(1, 16, seed=5, progress=False)
    assert np.array_equal(a.images, b.images) and len(a) == len(catalogue_subjects())
    a.save(tmp_path / "d.npz")
    c = ToyDataset.load(tmp_path / "d.npz")
    assert np.array_equal(c.images, a.images) and c.prompt(0) == a.prompt(0) and c.subjects == a.subjects
