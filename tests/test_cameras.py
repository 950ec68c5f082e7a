import math

import torch

from threedistill.cameras import camera_rays, look_at, orbit_cameras, project_points, sample_orbit


def test_azimuth_zero_sits_in_front_on_plus_z():
    cams = orbit_cameras(0.0, 0.0, 3.0)
    assert torch.allclose(cams.positions[0], torch.tensor([0.0, 0.0, 3.0]), atol=1e-6)
    side = orbit_cameras(90.0, 0.0, 3.0)
    assert torch.allclose(side.positions[0], torch.tensor([3.0, 0.0, 0.0]), atol=1e-6)
    top = orbit_cameras(0.0, 90.0, 2.0)
    assert torch.allclose(top.positions[0], torch.tensor([0.0, 2.0, 0.0]), atol=1e-5)


def test_look_at_is_orthonormal_and_looks_at_target_including_straight_down():
    eye = torch.tensor([[1.0, 2.0, 3.0], [0.0, 3.0, 0.0], [0.0, -3.0, 0.0]])
    c2w = look_at(eye)
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand(3, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(3), atol=1e-5)
    forward = -rot[:, :, 2]
    assert torch.allclose(forward, -torch.nn.functional.normalize(eye, dim=-1), atol=1e-5)


def test_central_ray_points_at_origin_and_projection_inverts_rays():
    cams = orbit_cameras([0.0, 70.0, -120.0], [10.0, 45.0, -5.0], [2.5, 3.0, 4.0], 40.0)
    origins, dirs = camera_rays(cams, 8, 8)
    centre = dirs[:, 3:5, 3:5].mean(dim=(1, 2))
    assert torch.allclose(torch.nn.functional.normalize(centre, dim=-1),
                          -torch.nn.functional.normalize(cams.positions, dim=-1), atol=1e-4)
    points = origins[0, 2, 5] + 1.7 * dirs[0, 2, 5]
    pix, depth = project_points(points[None], cams[0], 8, 8)
    assert torch.allclose(pix[0, 0], torch.tensor([5.5, 2.5]), atol=1e-4)
    assert depth[0, 0] > 0


def test_field_of_view_matches_corner_ray_angle():
    cams = orbit_cameras(0.0, 0.0, 3.0, 60.0)
    _, dirs = camera_rays(cams, 64, 64)
    top = dirs[0, 0, 31:33].mean(0)  # top edge centre, half a pixel inside
    angle = math.degrees(math.acos(float(torch.nn.functional.normalize(top, dim=0) @ torch.tensor([0.0, 0.0, -1.0]))))
    assert abs(angle - 30.0) < 1.0


def test_sample_orbit_is_seeded_and_in_range():
    a = sample_orbit(torch.Generator().manual_seed(3), 100, elevation=(0, 30), radius=(2, 3))
    b = sample_orbit(torch.Generator().manual_seed(3), 100, elevation=(0, 30), radius=(2, 3))
    assert torch.equal(a.c2w, b.c2w)
    assert a.elevation.min() >= 0 and a.elevation.max() <= 30 and a.radius.min() >= 2 and a.radius.max() <= 3
    assert len(a[3:7]) == 4 and len(a[5]) == 1
