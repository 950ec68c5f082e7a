"""Ground-truth renderer of toy objects: sphere tracing of the objects' signed distance, in PyTorch on CPU.

Outputs, batched over cameras: rgb (B,3,H,W) on a white background with Lambertian + ambient shading under a
fixed world-space light rig (so appearance is 3D-consistent), alpha (B,1,H,W), depth (B,1,H,W; distance along
the ray, 0 where empty) and world-space normals (B,3,H,W; 0 where empty). `supersample` > 1 traces k*k rays
per pixel and averages them, which anti-aliases edges and gives fractional alpha.

Tracing and shading work on any *field*: a callable points (N,3) -> (distance (N,), label (N,)) whose labels
index a palette of albedos. One object (`render_toy`) and a multi-object scene (`scene.render_scene`) share them.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from ..cameras import Cameras, camera_rays
from ..lighting import shade
from .catalogue import ToyObject, get_colour, get_object
from .sdf import PRIMITIVE_SDFS

BOUND_RADIUS = 1.0

Field = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]
Tracer = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]  # (origins, dirs) -> (hit, t)


def object_sdf(obj: ToyObject, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (N,) of the union of the object's parts at points (N,3), and the index of the closest part."""
    dists = []
    for part in obj.parts:
        local = points - torch.tensor(part.offset, dtype=points.dtype)
        if part.rotation is not None:
            local = local @ part.rotation.to(points.dtype)
        dists.append(PRIMITIVE_SDFS[part.primitive](local, **part.params))
    stacked = torch.stack(dists, -1)
    dist, index = stacked.min(dim=-1)
    return dist, index


def part_colours(obj: ToyObject, colour: str) -> torch.Tensor:
    """(P,3) albedo of every part, the prompt's colour for the object's body parts."""
    body = get_colour(colour)
    return torch.tensor([p.colour if p.colour is not None else body for p in obj.parts], dtype=torch.float32)


def _as_field(field: Field | ToyObject) -> Field:
    return partial(object_sdf, field) if isinstance(field, ToyObject) else field


def field_normals(field: Field | ToyObject, points: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Unit normals from central differences of a field's signed distance."""
    field = _as_field(field)
    offsets = torch.eye(3, dtype=points.dtype) * eps
    grads = [field(points + o)[0] - field(points - o)[0] for o in offsets]
    return F.normalize(torch.stack(grads, -1), dim=-1)


def sdf_normals(obj: ToyObject, points: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Unit normals of one object's surface (see `field_normals`)."""
    return field_normals(obj, points, eps)


def trace(
    field: Field | ToyObject,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    bound_radius: float = BOUND_RADIUS,
    max_steps: int = 128,
    hit_eps: float = 4e-4,
    relax: float = 0.9,
    t_max: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sphere-trace rays (N,3) against a field (or one object) inside a bounding sphere at the origin:
    hit mask (N,) and distance t (N,). A ray gives up beyond `t_max` (N,) if given (something else is nearer)."""
    field = _as_field(field)
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - bound_radius**2
    disc = b * b - c
    inside = disc > 0
    root = disc.clamp_min(0).sqrt()
    t = (-b - root).clamp_min(0)
    t_far = -b + root if t_max is None else torch.minimum(-b + root, t_max)
    hit = torch.zeros_like(inside)
    active = inside.nonzero().squeeze(-1)
    for _ in range(max_steps):
        if active.numel() == 0:
            break
        dist, _ = field(origins[active] + t[active, None] * dirs[active])
        done = dist < hit_eps
        hit[active[done]] = True
        t[active] = torch.where(done, t[active], t[active] + relax * dist)
        active = active[~done & (t[active] < t_far[active])]
    return hit, t


def shade_rays(
    field: Field,
    palette: torch.Tensor,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    bound_radius: float = BOUND_RADIUS,
    max_steps: int = 128,
    tracer: Tracer | None = None,
) -> dict[str, torch.Tensor]:
    """Trace (with `tracer` if given, else `trace`) and shade rays (N,3): hit (N,), t (N,), label (N,; -1 on a
    miss), normal (N,3), colour (N,3; 0 on a miss)."""
    hit, t = trace(field, origins, dirs, bound_radius, max_steps) if tracer is None else tracer(origins, dirs)
    n = origins.shape[0]
    albedo = torch.zeros(n, 3)
    normal = torch.zeros(n, 3)
    label = torch.full((n,), -1, dtype=torch.long)
    if hit.any():
        points = origins[hit] + t[hit, None] * dirs[hit]
        _, part = field(points)
        label[hit] = part
        albedo[hit] = palette[part]
        normal[hit] = field_normals(field, points)
    return {"hit": hit, "t": t, "label": label, "normal": normal, "colour": shade(albedo, normal)}


def render_field(
    field: Field,
    palette: torch.Tensor,
    cameras: Cameras,
    height: int,
    width: int,
    supersample: int = 2,
    background: float = 1.0,
    bound_radius: float = BOUND_RADIUS,
    max_steps: int = 128,
    tracer: Tracer | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Render a field from every camera: the images of the module docstring, and the label of every traced
    ray as (B, H*k, W*k) with -1 where a ray missed (k = supersample)."""
    if height < 1 or width < 1 or supersample < 1:
        raise ValueError(
            f"resolution and supersample must be positive, got {height}x{width}, supersample {supersample}"
        )
    k = supersample
    origins, dirs = camera_rays(cameras, height * k, width * k)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    rays = shade_rays(field, palette, o, d, bound_radius, max_steps, tracer)
    hit, t = rays["hit"], rays["t"]
    alpha = hit.float()[:, None]
    rgb = rays["colour"] * alpha + background * (1 - alpha)
    depth = torch.where(hit, t, torch.zeros_like(t))[:, None]

    def to_image(x: torch.Tensor) -> torch.Tensor:
        img = x.reshape(len(cameras), height * k, width * k, -1).permute(0, 3, 1, 2)
        return F.avg_pool2d(img, k) if k > 1 else img

    alpha_img = to_image(alpha)
    depth_img = to_image(depth) / alpha_img.clamp_min(1e-6) * (alpha_img > 0)
    normal_img = F.normalize(to_image(rays["normal"]), dim=1)
    images = {"rgb": to_image(rgb).clamp(0, 1), "alpha": alpha_img, "depth": depth_img, "normal": normal_img}
    return images, rays["label"].reshape(len(cameras), height * k, width * k)


@torch.no_grad()
def render_toy(
    obj: ToyObject | str,
    colour: str,
    cameras: Cameras,
    height: int,
    width: int,
    supersample: int = 2,
    background: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Render one toy object in one colour from every camera; see the module docstring for the outputs."""
    obj = get_object(obj) if isinstance(obj, str) else obj
    if height < 1 or width < 1 or supersample < 1:
        raise ValueError(
            f"resolution and supersample must be positive, got {height}x{width}, supersample {supersample}"
        )
    images, _ = render_field(
        partial(object_sdf, obj), part_colours(obj, colour), cameras, height, width, supersample, background
    )
    return images


TOY_VIEWS = ("rgb", "alpha", "depth", "normal", "all")  # what `render_toy_view` draws; all: the four side by side


@torch.no_grad()
def render_toy_view(
    subject: str,
    azimuth: float = 0.0,
    elevation: float = 15.0,
    radius: float = 2.9,
    fov: float = 40.0,
    resolution: int = 256,
    what: str = "rgb",
) -> torch.Tensor:
    """One orbit camera's view of '<colour> <object>' (e.g. 'red duck') as a (3, H, W) image in [0, 1]: rgb,
    alpha, depth or normal, or all of them side by side (`t3d toyworld render`). One-line errors for values out
    of range."""
    from ..cameras import orbit_cameras
    from ..errors import ThreeDistillError
    from .catalogue import parse_subject

    colour, obj = parse_subject(subject)
    if not 8 <= resolution <= 2048:
        raise ThreeDistillError(f"--resolution must be between 8 and 2048, got {resolution}")
    if not 0 < fov < 180:
        raise ThreeDistillError(f"--fov must be between 0 and 180 degrees, got {fov}")
    if radius <= 1.0:
        raise ThreeDistillError(f"--radius must exceed 1 (the objects fill the unit sphere), got {radius}")
    if what not in TOY_VIEWS:
        raise ThreeDistillError(f"--what must be one of {', '.join(sorted(TOY_VIEWS))}, got {what!r}")
    result = render_toy(obj, colour, orbit_cameras(azimuth, elevation, radius, fov), resolution, resolution)
    panels = {
        "rgb": result["rgb"][0],
        "alpha": result["alpha"][0].expand(3, -1, -1),
        "depth": torch.where(result["alpha"][0] > 0, 1 - (result["depth"][0] - (radius - 1)) / 2, torch.ones(1)).expand(
            3, -1, -1
        ),
        "normal": torch.where(result["alpha"][0] > 0, result["normal"][0] * 0.5 + 0.5, torch.ones(1)),
    }
    image = torch.cat(list(panels.values()), -1) if what == "all" else panels[what]
    return image.clamp(0, 1)
