"""Training pairs for the toy drag teacher (issue #24): random rigid part moves of catalogue objects, each seen from
random cameras before and after, with the moved part's visible footprint and the projected handle / target points.

A random drag is fully determined by its integer seed (`random_drag`); the dragged object is the catalogue name
`<object>~<seed>` (a `VARIANTS` entry), so the toy world's renderer draws it like any object. The benchmark's
twelve named drags (drags.py) are never drawn here: they are the teacher's held-out test.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cameras import Cameras, orbit_cameras, project_points
from .catalogue import COLOURS, OBJECTS, VARIANTS, ToyObject
from .drag_capture import to_world
from .drags import ToyDrag, dragged_object, part_radius
from .render import render_field
from .scene import PlacedObject, SceneField, ToyScene, place, render_scene

RANDOM_SEPARATOR = "~"
MAX_PAIRS = 3  # handle -> target pairs per drag
VIEW_DISTANCE = 2.9  # camera distance in object radii (the edit cameras' framing)
FOVY = 40.0


def _group(obj: ToyObject, first: int) -> tuple[int, ...]:
    """Part `first` and the smaller parts attached to it (eyes with a head, a knob with an antenna)."""
    centre, radius = torch.tensor(obj.parts[first].offset), part_radius(obj.parts[first])
    group = [first]
    for j, part in enumerate(obj.parts):
        if j != first and part_radius(part) < radius:
            if float((torch.tensor(part.offset) - centre).norm()) < radius + 0.08:
                group.append(j)
    return tuple(group)


@lru_cache(maxsize=None)
def random_drag(seed: int) -> ToyDrag:
    """A random rigid move of a random part group of a random catalogue object (object frame): a translation of
    0.1-0.35, a rotation of 15-60 degrees (sometimes up to 150) about the part's attachment, or both; one in ten
    moves nothing (the teacher must also learn to leave a scene alone)."""
    rng = np.random.default_rng(seed)
    name = str(rng.choice(sorted(OBJECTS)))
    obj = OBJECTS[name]
    colour = str(rng.choice(sorted(COLOURS)))
    first = int(rng.integers(len(obj.parts))) if len(obj.parts) > 1 else 0
    while len(obj.parts) > 1 and part_radius(obj.parts[first]) < 0.1:  # eyes and buttons are too small to drag
        first = int(rng.integers(len(obj.parts)))
    parts = _group(obj, first)
    offset = np.asarray(obj.parts[first].offset, dtype=np.float64)
    radius = part_radius(obj.parts[first])
    kind = rng.choice(["translate", "rotate", "both", "none"], p=[0.45, 0.3, 0.15, 0.1])
    translate, degrees, axis = np.zeros(3), 0.0, str(rng.choice(["x", "y", "z"]))
    if kind in ("translate", "both"):
        direction = rng.normal(size=3)
        translate = direction / np.linalg.norm(direction) * rng.uniform(0.1, 0.35)
    if kind in ("rotate", "both"):
        degrees = float(rng.uniform(15, 150 if rng.random() < 0.2 else 60) * rng.choice([-1, 1]))
    if len(obj.parts) == 1:  # a whole object tilts a little about its base and does not sink into the ground
        pivot = np.array([0.0, -0.6, 0.0])
        degrees = float(np.clip(degrees, -30, 30))
        translate[1] = abs(translate[1])
    else:
        pivot = offset * rng.uniform(0.2, 0.7)  # toward the object's centre: where the part is attached
    handles = []
    for _ in range(int(rng.integers(1, MAX_PAIRS + 1))):
        direction = rng.normal(size=3)
        handles.append(tuple(float(v) for v in offset + direction / np.linalg.norm(direction) * 0.8 * radius))
    drag = ToyDrag(
        name=f"random{seed}",
        object=name,
        colour=colour,
        parts=parts,
        handles=tuple(handles),
        translate=tuple(float(v) for v in translate),
        axis=axis,
        degrees=degrees,
        pivot=tuple(float(v) for v in pivot),
        description="a random part move",
    )
    return drag


@lru_cache(maxsize=None)
def get_random_drag_object(name: str) -> ToyObject:
    """`<object>~<seed>`: the object after `random_drag(seed)`."""
    base, _, seed = name.partition(RANDOM_SEPARATOR)
    drag = random_drag(int(seed))
    if drag.object != base:
        raise ValueError(f"random drag {seed} moves a {drag.object}, not a {base}")
    return dragged_object(drag, name)


def random_drag_name(seed: int) -> str:
    return f"{random_drag(seed).object}{RANDOM_SEPARATOR}{seed}"


VARIANTS[RANDOM_SEPARATOR] = get_random_drag_object


def object_cameras(placed: PlacedObject, generator: torch.Generator, n: int) -> Cameras:
    """n cameras around the object's bounding sphere at the edit cameras' framing (VIEW_DISTANCE radii, 40 degree
    field of view), azimuth anywhere, elevation -5 to 50 degrees, distance jittered by 15%."""
    az = torch.rand(n, generator=generator) * 360.0
    el = -5 + 55 * torch.rand(n, generator=generator)
    r = VIEW_DISTANCE * placed.scale * (0.85 + 0.3 * torch.rand(n, generator=generator))
    cams = orbit_cameras(az, el, r, FOVY)
    cams.c2w[:, :3, 3] += torch.tensor(placed.offset, dtype=torch.float32)
    return cams


def render_pairs(drag: ToyDrag, edited_name: str, placed: PlacedObject, cameras: Cameras, size: int) -> dict:
    """Before / after images (B,3,S,S) in [0,1], the moved parts' visible footprint before (B,1,S,S) and the
    handles / targets projected to pixels (B,K,2) for one drag of `placed` seen by `cameras`."""
    source = ToyScene([placed])
    edited = ToyScene([PlacedObject(edited_name, placed.colour, placed.offset, placed.scale, placed.yaw)])
    field = SceneField(source)
    k = 2
    images, label = render_field(field, field.palette, cameras, size, size, k, tracer=field.trace)
    labels = torch.tensor([field.bases[0] + i for i in drag.parts])
    part = F.avg_pool2d(torch.isin(label, labels).float()[:, None], k)
    field_after = SceneField(edited)
    after, _ = render_field(field_after, field_after.palette, cameras, size, size, k, tracer=field_after.trace)
    handles, _ = project_points(to_world(source, drag.handle_points()), cameras, size, size)
    targets, _ = project_points(to_world(source, drag.target_points()), cameras, size, size)
    return {"before": images["rgb"], "after": after["rgb"], "part": part, "handles": handles, "targets": targets}


def drag_pair_set(
    drags: list[tuple[ToyDrag, str]], views: int, size: int, seed: int, progress: bool = True, empty: bool = False
) -> dict[str, torch.Tensor]:
    """`views` random views of each (drag, edited object name): uint8 images and footprints, float points padded to
    MAX_PAIRS with `valid` marking the real ones, the drag's index per sample; with `empty`, also the ground alone
    from the same cameras."""
    g = torch.Generator().manual_seed(seed)
    keys = ("before", "after", "part", "handles", "targets", "valid", "drag") + (("empty",) if empty else ())
    out: dict[str, list] = {k: [] for k in keys}
    for i, (drag, edited_name) in enumerate(tqdm(drags, desc="rendering drag pairs", disable=not progress)):
        yaw = float(torch.rand(1, generator=g)) * 360.0
        placed = place(drag.object, drag.colour, 0.0, 0.0, scale=0.5, yaw=yaw)
        cams = object_cameras(placed, g, views)
        pairs = render_pairs(drag, edited_name, placed, cams, size)
        if empty:
            ground = render_scene(ToyScene([]), cams, size, size)["rgb"]
            out["empty"].append((ground * 255).round().to(torch.uint8))
        n = len(drag.handles)
        pad = lambda p: torch.cat([p, torch.zeros(views, MAX_PAIRS - n, 2)], 1)  # noqa: E731
        out["before"].append((pairs["before"] * 255).round().to(torch.uint8))
        out["after"].append((pairs["after"] * 255).round().to(torch.uint8))
        out["part"].append((pairs["part"] * 255).round().to(torch.uint8))
        out["handles"].append(pad(pairs["handles"]))
        out["targets"].append(pad(pairs["targets"]))
        out["valid"].append((torch.arange(MAX_PAIRS) < n).expand(views, MAX_PAIRS))
        out["drag"].append(torch.full((views,), i))
    return {k: torch.cat(v) for k, v in out.items()}


def random_drag_set(first_seed: int, count: int, views: int, size: int, progress: bool = True) -> dict:
    """Pairs of the random drags first_seed .. first_seed + count - 1."""
    drags = [(random_drag(s), random_drag_name(s)) for s in range(first_seed, first_seed + count)]
    return drag_pair_set(drags, views, size, seed=first_seed, progress=progress)


def named_drag_set(views: int, size: int, seed: int = 12345, progress: bool = True) -> dict:
    """Pairs of the benchmark's named drags (drags.py): the teacher's held-out test."""
    from .drags import DRAGS

    drags = [(d, d.edited_name) for d in DRAGS.values()]
    return drag_pair_set(drags, views, size, seed=seed, progress=progress, empty=True)
