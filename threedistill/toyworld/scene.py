"""Toy scenes: several catalogue objects standing on a ground slab, with ground truth before and after an edit.

World frame as everywhere (+Y up). The ground is a thin finite slab whose top face is at `ground_height`;
instance ids are 0 = ground, 1..K = objects (in `ToyScene.objects` order), -1 = background in renders.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import torch

from ..cameras import Cameras, look_at, pixel_intrinsics
from .catalogue import get_colour, get_object, rotation
from .prompts import subject_prompt
from .render import object_sdf, part_colours, render_field, shade_rays, trace
from .sdf import box

GROUND_THICKNESS = 0.1
NEAR = 0.05  # beyond this distance from an object's bounding sphere, the sphere's distance stands in for its SDF


@dataclass
class PlacedObject:
    """A catalogue object in the scene: p_object = R_yaw^T (p - offset) / scale (yaw in degrees about +Y)."""

    name: str
    colour: str
    offset: tuple[float, float, float]
    scale: float = 0.5
    yaw: float = 0.0

    @property
    def prompt(self) -> str:
        return subject_prompt(self.colour, self.name)


@dataclass
class ToyScene:
    """Objects on a square ground slab of side `ground_size` centred under the origin."""

    objects: list[PlacedObject]
    ground: bool = True
    ground_colour: tuple[float, float, float] = (0.75, 0.75, 0.72)
    ground_height: float = 0.0
    ground_size: float = 4.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ToyScene":
        objects = [
            PlacedObject(o["name"], o["colour"], tuple(o["offset"]), o.get("scale", 0.5), o.get("yaw", 0.0))
            for o in d["objects"]
        ]
        rest = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "objects"}
        return cls(objects, **rest)

    def instance_names(self) -> list[str]:
        """Names of instance ids 0..K: 'ground', then each object's subject ('red cube')."""
        return ["ground"] + [f"{o.colour} {o.name}" for o in self.objects]


@lru_cache(maxsize=None)
def object_bottom(name: str) -> float:
    """Lowest y of the object's surface in its own frame, from vertical rays traced up through a 97x97 grid."""
    g = torch.linspace(-1.0, 1.0, 97)
    xx, zz = torch.meshgrid(g, g, indexing="ij")
    origins = torch.stack([xx.reshape(-1), torch.full((g.numel() ** 2,), -1.5), zz.reshape(-1)], -1)
    dirs = torch.tensor([0.0, 1.0, 0.0]).expand_as(origins)
    hit, t = trace(get_object(name), origins, dirs)
    return float((origins[hit, 1] + t[hit]).min())


def place(
    name: str, colour: str, x: float, z: float, scale: float = 0.5, yaw: float = 0.0, ground_height: float = 0.0
) -> PlacedObject:
    """An object standing on the ground at (x, z): its lowest point touches the ground's top face."""
    get_colour(colour)
    return PlacedObject(name, colour, (x, ground_height - scale * object_bottom(name), z), scale, yaw)


class SceneField:
    """The scene's signed distance, points (N,3) -> (distance, label), with its palette: label 0 is the ground,
    then every object's parts in order; `instance_of_label` maps labels to instance ids. `trace` finds the
    nearest surface along rays: objects by sphere tracing, the ground slab analytically (grazing rays would
    otherwise creep toward it for dozens of steps)."""

    def __init__(self, scene: ToyScene):
        self.scene = scene
        self.objects = [get_object(o.name) for o in scene.objects]
        self.rotations = [rotation("y", o.yaw) for o in scene.objects]
        self.offsets = [torch.tensor(o.offset, dtype=torch.float32) for o in scene.objects]
        colours = [torch.tensor([scene.ground_colour], dtype=torch.float32)]
        instance, self.bases = [0], []
        for i, (placed, obj) in enumerate(zip(scene.objects, self.objects), start=1):
            self.bases.append(sum(len(c) for c in colours))
            colours.append(part_colours(obj, placed.colour))
            instance += [i] * len(obj.parts)
        self.palette = torch.cat(colours)
        self.instance_of_label = torch.tensor(instance)
        half = scene.ground_size / 2
        self.ground_centre = torch.tensor([0.0, scene.ground_height - GROUND_THICKNESS / 2, 0.0])
        self.ground_half = (half, GROUND_THICKNESS / 2, half)
        reach = [float(off.norm()) + o.scale for off, o in zip(self.offsets, scene.objects)]
        self.objects_radius = max(reach, default=0.0) + 0.05
        if scene.ground:
            reach.append(math.sqrt(2 * half**2 + (abs(scene.ground_height) + GROUND_THICKNESS) ** 2))
        self.bound_radius = max(reach, default=1.0) + 0.05

    def __call__(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._union(points, self.scene.ground)

    def _union(self, points: torch.Tensor, ground: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if ground:
            dist = box(points - self.ground_centre, self.ground_half)
        else:
            dist = torch.full(points.shape[:1], float("inf"))
        label = torch.zeros(points.shape[0], dtype=torch.long)
        for obj, placed, rot, off, base in zip(
            self.objects, self.scene.objects, self.rotations, self.offsets, self.bases
        ):
            rel = points - off
            d = rel.norm(dim=-1) - placed.scale  # objects fit in the unit sphere: a lower bound of the distance
            part = torch.zeros_like(label)
            near = (d < NEAR).nonzero().squeeze(-1)
            if near.numel():
                d_near, part_near = object_sdf(obj, rel[near] @ rot / placed.scale)
                d[near], part[near] = d_near * placed.scale, part_near
            closer = d < dist
            dist = torch.where(closer, d, dist)
            label = torch.where(closer, base + part, label)
        return dist, label

    def ground_t(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """Distance along rays (N,) to the ground slab (slab method for a box), inf where a ray misses it."""
        if not self.scene.ground:
            return torch.full(origins.shape[:1], float("inf"))
        half = torch.tensor(self.ground_half)
        safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
        t1, t2 = (self.ground_centre - half - origins) / safe, (self.ground_centre + half - origins) / safe
        near = torch.minimum(t1, t2).amax(-1).clamp_min(0)
        far = torch.maximum(t1, t2).amin(-1)
        return torch.where(near <= far, near, torch.full_like(near, float("inf")))

    def trace(self, origins: torch.Tensor, dirs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hit mask (N,) and distance (N,) of the nearest surface along rays (N,3)."""
        t_ground = self.ground_t(origins, dirs)
        if not self.objects:
            return torch.isfinite(t_ground), torch.where(torch.isfinite(t_ground), t_ground, torch.zeros_like(t_ground))
        hit, t = trace(
            lambda p: self._union(p, False), origins, dirs, self.objects_radius, max_steps=256, t_max=t_ground
        )
        ground = ~hit & torch.isfinite(t_ground)
        return hit | ground, torch.where(ground, t_ground, t)


def _vote(instance: torch.Tensor, k: int, n_ids: int) -> torch.Tensor:
    """Per-pixel majority of k*k samples' ids (B,H*k,W*k) -> (B,1,H,W); ties go to the lower id (background first)."""
    b, hk, wk = instance.shape
    cells = instance.reshape(b, hk // k, k, wk // k, k).permute(0, 1, 3, 2, 4).reshape(b, hk // k, wk // k, k * k)
    counts = torch.nn.functional.one_hot(cells + 1, n_ids + 1).sum(-2)
    return (counts.argmax(-1) - 1)[:, None]


@torch.no_grad()
def render_scene(
    scene: ToyScene, cameras: Cameras, height: int, width: int, supersample: int = 2, background: float = 1.0
) -> dict[str, torch.Tensor]:
    """Render a scene like `render_toy`, plus `instance` (B,1,H,W) int64: 0 ground, 1..K objects, -1 background."""
    fld = SceneField(scene)
    images, label = render_field(fld, fld.palette, cameras, height, width, supersample, background, tracer=fld.trace)
    instance = torch.where(label >= 0, fld.instance_of_label[label.clamp_min(0)], label)
    images["instance"] = _vote(instance, supersample, len(scene.objects) + 1)
    return images


@torch.no_grad()
def surface_samples(
    scene: ToyScene, cameras: Cameras, height: int, width: int, n: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """n visible surface points, hit by rays through random sub-pixel positions of random views: points (n,3),
    shaded colour (n,3), instance (n,), view (n,) and pixel (n,2) as (x, y)."""
    fld = SceneField(scene)
    fx, fy, cx, cy = pixel_intrinsics(cameras, height, width)
    found: list[dict[str, torch.Tensor]] = []
    total = 0
    while total < n:
        m = 2 * n
        view = torch.randint(len(cameras), (m,), generator=generator)
        pixel = torch.rand(m, 2, generator=generator) * torch.tensor([float(width), float(height)])
        cam = torch.stack(
            [(pixel[:, 0] - cx[view]) / fx[view], -(pixel[:, 1] - cy[view]) / fy[view], -torch.ones(m)], -1
        )
        dirs = torch.nn.functional.normalize(torch.einsum("nij,nj->ni", cameras.c2w[view, :3, :3], cam), dim=-1)
        origins = cameras.c2w[view, :3, 3]
        rays = shade_rays(fld, fld.palette, origins, dirs, tracer=fld.trace)
        hit = rays["hit"]
        found.append(
            {
                "points": origins[hit] + rays["t"][hit, None] * dirs[hit],
                "colour": rays["colour"][hit],
                "instance": fld.instance_of_label[rays["label"][hit]],
                "view": view[hit],
                "pixel": pixel[hit],
            }
        )
        total += int(hit.sum())
        if not hit.any():
            raise ValueError("no surface is visible from these cameras")
    return {k: torch.cat([f[k] for f in found])[:n] for k in found[0]}


def scene_cameras(
    n: int,
    seed: int = 0,
    radius: float = 3.4,
    elevation: tuple[float, float] = (15.0, 55.0),
    fovy: float = 45.0,
    width: int = 96,
    height: int = 72,
    target=(0.0, 0.3, 0.0),
    principal: tuple[float, float] = (0.5, 0.5),
) -> Cameras:
    """n cameras on a spiral around `target` looking at it, like a hand-held capture walking around a table:
    azimuth steps evenly (jittered), elevation follows a golden-ratio sequence over the range, the distance
    varies by +-5%. Square pixels for a width x height image; `principal` is (cx/W, cy/H)."""
    gen = torch.Generator().manual_seed(seed)
    i = torch.arange(n, dtype=torch.float32)
    step = 360.0 / max(n, 1)
    az = (i * step + step * 0.5 * (torch.rand(n, generator=gen) - 0.5) + 360.0 * torch.rand(1, generator=gen)) % 360.0
    az = az - 180.0
    lo, hi = elevation
    el = lo + (hi - lo) * ((i * 0.6180339887 + torch.rand(1, generator=gen)) % 1.0)
    r = radius * (1.0 + 0.1 * (torch.rand(n, generator=gen) - 0.5))
    az_r, el_r = torch.deg2rad(az), torch.deg2rad(el)
    centre = torch.tensor(target, dtype=torch.float32).expand(n, 3)
    eye = centre + r[:, None] * torch.stack(
        [torch.cos(el_r) * torch.sin(az_r), torch.sin(el_r), torch.cos(el_r) * torch.cos(az_r)], -1
    )
    fov = torch.full((n,), math.radians(fovy))
    f = 0.5 * height / math.tan(0.5 * math.radians(fovy))
    intrinsics = torch.tensor([f / width, f / height, principal[0], principal[1]]).expand(n, 4).clone()
    return Cameras(look_at(eye, centre), fov, az, el, r, intrinsics)


def edited_scene(scene: ToyScene, index: int, colour: str | None = None, name: str | None = None) -> ToyScene:
    """The scene after an edit: object `index` recoloured and/or replaced by another catalogue object, which
    stands on the ground where the old one stood (same x, z, scale and yaw)."""
    if not 0 <= index < len(scene.objects):
        raise IndexError(f"object index {index} out of range for a scene of {len(scene.objects)} objects")
    old = scene.objects[index]
    new_name = old.name if name is None else name
    new_colour = old.colour if colour is None else colour
    get_object(new_name), get_colour(new_colour)
    x, y, z = old.offset
    y = y + old.scale * (object_bottom(old.name) - object_bottom(new_name))
    objects = list(scene.objects)
    objects[index] = replace(old, name=new_name, colour=new_colour, offset=(x, y, z))
    return replace(scene, objects=objects)


def _row(*subjects: tuple[str, str, float, float, float]) -> list[PlacedObject]:
    return [place(name, colour, x, z, scale=0.6, yaw=yaw) for colour, name, x, z, yaw in subjects]


def default_scenes() -> dict[str, ToyScene]:
    """Named benchmark scenes: 'three' (a row of three objects) and 'four' (four objects on a 2x2 grid)."""
    return {
        "three": ToyScene(
            _row(
                ("red", "cube", -1.1, 0.0, 20.0),
                ("yellow", "torus", 0.0, 0.0, 0.0),
                ("orange", "duck", 1.1, 0.0, -30.0),
            )
        ),
        "four": ToyScene(
            _row(
                ("blue", "sphere", -0.75, -0.65, 0.0),
                ("green", "cone", 0.75, -0.65, 0.0),
                ("purple", "cylinder", -0.75, 0.65, 0.0),
                ("yellow", "snowman", 0.75, 0.65, 15.0),
            )
        ),
    }


_EDITS = (  # scene, object index, new colour, new object
    ("three", 0, "blue", None),
    ("three", 0, None, "sphere"),
    ("three", 2, "green", None),
    ("three", 1, None, "cone"),
    ("four", 1, "red", None),
    ("four", 0, "orange", "cube"),
)


def default_edits() -> list[dict]:
    """The benchmark's edits: scene, index, kind ('colour', 'replace' or 'both'), the target `colour` and/or
    `object`, and the prompts before (`source_prompt`) and after (`prompt`) in the toy prior's vocabulary."""
    scenes = default_scenes()
    edits = []
    for scene_name, index, colour, name in _EDITS:
        old = scenes[scene_name].objects[index]
        edit = {
            "scene": scene_name,
            "index": index,
            "kind": "both" if colour and name else "colour" if colour else "replace",
        }
        if colour:
            edit["colour"] = colour
        if name:
            edit["object"] = name
        edit["source_prompt"] = old.prompt
        edit["prompt"] = subject_prompt(colour or old.colour, name or old.name)
        edits.append(edit)
    return edits


def apply_edit(scene: ToyScene, edit: dict) -> ToyScene:
    """`edited_scene` driven by an edit record of `default_edits`."""
    return edited_scene(scene, edit["index"], colour=edit.get("colour"), name=edit.get("object"))


__all__ = [
    "PlacedObject",
    "ToyScene",
    "SceneField",
    "place",
    "object_bottom",
    "render_scene",
    "surface_samples",
    "scene_cameras",
    "edited_scene",
    "apply_edit",
    "default_scenes",
    "default_edits",
]
