import math

import torch

from threedistill.cameras import Cameras, camera_rays, look_at, orbit_cameras, project_points, sample_orbit


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
    assert torch.allclose(
        torch.nn.functional.normalize(centre, dim=-1), -torch.nn.functional.normalize(cams.positions, dim=-1), atol=1e-4
    )
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


def test_centred_intrinsics_match_the_fovy_camera_and_offsets_shift_the_projection():
    """Captured cameras carry (fx/W, fy/H, cx/W, cy/H): centred square-pixel values reproduce the fovy camera,
    and a shifted principal point / stretched fx move projections and rays consistently."""
    from threedistill.cameras import camera_rays, focal_length, project_points

    cams = orbit_cameras([0.0, 70.0], [10.0, 30.0], 3.0, fovy=40.0)
    h, w = 24, 32
    fy = focal_length(cams.fovy, h) / h
    same = Cameras(
        *[getattr(cams, f) for f in ("c2w", "fovy", "azimuth", "elevation", "radius")],
        intrinsics=torch.stack([fy * h / w, fy, torch.full_like(fy, 0.5), torch.full_like(fy, 0.5)], -1),
    )
    pts = torch.randn(10, 3) * 0.5
    for a, b in zip(project_points(pts, cams, h, w), project_points(pts, same, h, w)):
        assert torch.allclose(a, b, atol=1e-4)
    for a, b in zip(camera_rays(cams, h, w), camera_rays(same, h, w)):
        assert torch.allclose(a, b, atol=1e-5)
    moved = Cameras(
        *[getattr(same, f) for f in ("c2w", "fovy", "azimuth", "elevation", "radius")],
        intrinsics=same.intrinsics * torch.tensor([2.0, 1.0, 1.0, 1.0]) + torch.tensor([0, 0, 0.1, -0.05]),
    )
    xy0, _ = project_points(pts, same, h, w)
    xy1, _ = project_points(pts, moved, h, w)
    expect_x = (xy0[..., 0] - 0.5 * w) * 2 + 0.6 * w
    assert torch.allclose(xy1[..., 0], expect_x, atol=1e-3)
    assert torch.allclose(xy1[..., 1], xy0[..., 1] - 0.05 * h, atol=1e-3)
    # A ray through a projected point's pixel position points at that point.
    o, d = camera_rays(moved[0], h, w)
    px = xy1[0, 0]
    i, j = int(px[1].floor()), int(px[0].floor())
    if 0 <= i < h and 0 <= j < w:
        to_pt = torch.nn.functional.normalize(pts[0] - o[0, i, j], dim=-1)
        assert torch.dot(to_pt, d[0, i, j]) > 0.99
    assert moved[1].intrinsics.shape == (1, 4) and moved.to("cpu").intrinsics is not None
