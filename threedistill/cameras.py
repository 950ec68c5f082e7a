"""Camera model shared by every renderer.

Convention (stated once, used everywhere): world is +Y up with the object's front facing +Z.
Cameras are OpenGL-style: camera-to-world matrices whose camera looks along its local -Z with +Y up and
+X to the right. Azimuth 0 puts the camera on the +Z axis looking at the front; positive azimuth moves it
toward +X; elevation is measured up from the XZ plane. Angles in the public API are degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CAMERA_FIELDS = ("c2w", "fovy", "azimuth", "elevation", "radius", "intrinsics")


@dataclass
class Cameras:
    """A batch of pinhole cameras: c2w (B,4,4), vertical field of view fovy (B,) in radians, and the
    orbit parameters (degrees / world units) they were made from, used for view-dependent prompts.
    Captured cameras also carry `intrinsics` (B,4) = (fx/W, fy/H, cx/W, cy/H), resolution-free, for
    non-square pixels and off-centre principal points; None means square pixels centred (from fovy)."""

    c2w: torch.Tensor
    fovy: torch.Tensor
    azimuth: torch.Tensor
    elevation: torch.Tensor
    radius: torch.Tensor
    intrinsics: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def positions(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]

    def to(self, device, dtype=None) -> "Cameras":
        """The same cameras with every tensor on `device` (and of `dtype` if given; a no-op when they are so)."""
        move = lambda t: None if t is None else t.to(device, dtype) if dtype else t.to(device)  # noqa: E731
        return Cameras(*(move(getattr(self, f)) for f in CAMERA_FIELDS))

    def __getitem__(self, idx) -> "Cameras":
        pick = lambda t: t if t is None else t[idx] if t.ndim and t.shape[0] == len(self) else t  # noqa: E731
        out = Cameras(*(pick(getattr(self, f)) for f in CAMERA_FIELDS))
        if out.c2w.ndim == 2:  # a single index: keep the batch dimension
            out = Cameras(*(t if t is None else t[None] for t in (getattr(out, f) for f in CAMERA_FIELDS)))
        return out


def _as_batch(x, n: int) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
    return t.expand(n).clone() if t.numel() == 1 else t


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """OpenGL camera-to-world matrices (B,4,4) for cameras at eye (B,3) looking at target (default origin)."""
    target = torch.zeros_like(eye) if target is None else target
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    up_t = torch.tensor(up, dtype=eye.dtype).expand_as(eye)
    right = torch.linalg.cross(forward, up_t, dim=-1)
    # Straight up or down: the up vector is parallel to the view direction, use +Z/-Z as a tie-breaker.
    degenerate = right.norm(dim=-1) < 1e-6
    if degenerate.any():
        alt = torch.tensor([0.0, 0.0, -1.0], dtype=eye.dtype).expand_as(eye)
        right = torch.where(
            degenerate[:, None], torch.linalg.cross(forward, alt * forward[:, 1:2].sign(), dim=-1), right
        )
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, -forward, eye
    return c2w


def orbit_cameras(azimuth, elevation, radius, fovy=40.0) -> Cameras:
    """Cameras on a sphere around the origin looking at it. Each argument is a scalar or a sequence (degrees)."""
    n = max(torch.as_tensor(v).numel() for v in (azimuth, elevation, radius, fovy))
    az, el, r, fov = (_as_batch(v, n) for v in (azimuth, elevation, radius, fovy))
    az_r, el_r = torch.deg2rad(az), torch.deg2rad(el)
    eye = torch.stack(
        [r * torch.cos(el_r) * torch.sin(az_r), r * torch.sin(el_r), r * torch.cos(el_r) * torch.cos(az_r)], -1
    )
    return Cameras(look_at(eye), torch.deg2rad(fov), az, el, r)


def focal_length(fovy: torch.Tensor, height: int) -> torch.Tensor:
    """Focal length in pixels for a vertical field of view (radians)."""
    return 0.5 * height / torch.tan(0.5 * fovy)


def pixel_intrinsics(cameras: Cameras, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Focal lengths and principal point in pixels at this resolution: fx, fy, cx, cy, each (B,)."""
    if cameras.intrinsics is None:
        f = focal_length(cameras.fovy, height)
        return f, f, torch.full_like(f, 0.5 * width), torch.full_like(f, 0.5 * height)
    fx, fy, cx, cy = cameras.intrinsics.unbind(-1)
    return fx * width, fy * height, cx * width, cy * height


def camera_rays(cameras: Cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions through pixel centres, each (B,H,W,3) in world space."""
    fx, fy, cx, cy = (v[:, None, None] for v in pixel_intrinsics(cameras, height, width))  # (B,1,1)
    dev = cameras.c2w.device
    j = torch.arange(width, dtype=torch.float32, device=dev) + 0.5
    i = torch.arange(height, dtype=torch.float32, device=dev) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    dirs_cam = torch.stack(
        [(jj[None] - cx) / fx, -(ii[None] - cy) / fy, -torch.ones_like(ii)[None].expand(len(cameras), -1, -1)], -1
    )
    dirs = torch.einsum("bij,bhwj->bhwi", cameras.c2w[:, :3, :3], dirs_cam)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = cameras.positions[:, None, None, :].expand_as(dirs)
    return origins, dirs


def project_points(
    points: torch.Tensor, cameras: Cameras, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points (N,3) into every camera: pixel coordinates (B,N,2) as (x, y) and view depth (B,N)."""
    w2c = torch.linalg.inv(cameras.c2w)
    p = torch.einsum("bij,nj->bni", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
    depth = -p[..., 2]
    fx, fy, cx, cy = (v[:, None] for v in pixel_intrinsics(cameras, height, width))
    x = fx * p[..., 0] / depth + cx
    y = -fy * p[..., 1] / depth + cy
    return torch.stack([x, y], -1), depth


def set_azimuths(first: torch.Tensor, views: int) -> torch.Tensor:
    """Azimuths (degrees, in [-180, 180)) of sets of `views` cameras 360/views degrees apart, one set per entry of
    `first` (its first camera's azimuth), flattened set by set."""
    offsets = 360.0 / views * torch.arange(views)
    return ((torch.as_tensor(first, dtype=torch.float32).reshape(-1, 1) + offsets + 180.0) % 360.0 - 180.0).reshape(-1)


def sample_orbit(
    generator: torch.Generator,
    n: int,
    azimuth=(-180.0, 180.0),
    elevation=(-10.0, 60.0),
    radius=(2.6, 3.2),
    fovy=(40.0, 40.0),
    views_per_set: int = 1,
) -> Cameras:
    """Random orbit cameras (uniform in each range), drawn from the given generator for reproducibility. With
    `views_per_set` V > 1 (a multi-view prior's layout, n a multiple of V) they come in sets of V consecutive
    cameras: one random camera, then V - 1 more at its elevation, distance and field of view, 360/V degrees apart."""
    if views_per_set < 1 or n % views_per_set:
        raise ValueError(f"{n} cameras do not make whole sets of {views_per_set}")
    sets = n // views_per_set

    def draw(lo_hi):
        lo, hi = lo_hi
        return (lo + (hi - lo) * torch.rand(sets, generator=generator)).repeat_interleave(views_per_set)

    az = draw(azimuth)
    if views_per_set > 1:
        az = set_azimuths(az[::views_per_set], views_per_set)
    return orbit_cameras(az, draw(elevation), draw(radius), draw(fovy))


__all__ = [
    "Cameras",
    "orbit_cameras",
    "look_at",
    "camera_rays",
    "project_points",
    "sample_orbit",
    "set_azimuths",
    "focal_length",
    "pixel_intrinsics",
]
