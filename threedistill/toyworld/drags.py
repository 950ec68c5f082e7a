"""Toy drags with exact ground truth (issue #24): a catalogue object, some of its parts moved rigidly (a snowman's
head shifted or tilted, a duck's head raised or turned, a robot's arm raised, a house's roof raised, ...), the
handle -> target 3D point pairs a user would drag, the 3D region that may change, and the edited object itself.

A drag is parts + a rigid motion T(p) = R (p - pivot) + pivot + translate in the object's frame (+Y up, front +Z,
inside the unit sphere). A moved part keeps its primitive; its placement becomes T of the old one, so the edited
object renders and scores with the toy world's own SDF machinery. The edited object is named `<object>@<drag>`
(`get_drag_object`), which `SceneField` resolves like any catalogue name.

`drag_capture.write_drag_scene` writes a capture of the source object on the ground (as `t3d toyworld scene`
does), DYG's `drag_points.json` (`handle_points`, `target_points`, in the capture's coordinates), `region.json` (a
sphere in the same coordinates, also as a `--mask` string) and `edited/`, the edited object's capture from the same
cameras.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..errors import UnknownNameError
from .catalogue import VARIANTS, Part, ToyObject, get_object, rotation

DRAG_SEPARATOR = "@"


@dataclass(frozen=True)
class ToyDrag:
    """Parts `parts` of catalogue object `object` moved by T(p) = R_axis(degrees) (p - pivot) + pivot + translate;
    `handles` are points on the moved parts (object frame) whose images under T are the targets."""

    name: str
    object: str
    colour: str
    parts: tuple[int, ...]
    handles: tuple[tuple[float, float, float], ...]
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis: str = "x"
    degrees: float = 0.0
    pivot: tuple[float, float, float] = (0.0, 0.0, 0.0)
    description: str = ""

    def rotation(self) -> torch.Tensor:
        return rotation(self.axis, self.degrees)

    def move(self, points: torch.Tensor) -> torch.Tensor:
        """T applied to points (N,3) in the object's frame."""
        pivot, shift = torch.tensor(self.pivot), torch.tensor(self.translate)
        return (points - pivot) @ self.rotation().T + pivot + shift

    def handle_points(self) -> torch.Tensor:
        return torch.tensor(self.handles, dtype=torch.float32)

    def target_points(self) -> torch.Tensor:
        return self.move(self.handle_points())

    @property
    def edited_name(self) -> str:
        """The catalogue name of the object after the drag, `<object>@<object>-<drag>` (`get_drag_object`)."""
        return f"{self.object}{DRAG_SEPARATOR}{self.object}-{self.name}"

    @property
    def prompt(self) -> str:
        """What a text edit would be asked for the same change (the benchmark's text baseline)."""
        return f"a {self.colour} {self.object} with {self.description}"


def _drags() -> list[ToyDrag]:
    # snowman parts: 0 base, 1 middle, 2 head, 3 nose, 4-5 eyes, 6-7 buttons
    head = (2, 3, 4, 5)
    # duck parts: 0 body, 1 tail, 2 head, 3 beak, 4-5 eyes
    duck_head = (2, 3, 4, 5)
    # robot parts: 0 body, 1 head, 2 left arm (-x), 3 right arm, 4-5 legs, 6-7 eyes, 8 mouth, 9 antenna, 10 knob
    robot_head = (1, 6, 7, 8, 9, 10)
    return [
        ToyDrag("head_left", "snowman", "blue", head, ((0.0, 0.80, 0.0), (0.0, 0.57, 0.46)), translate=(-0.3, 0, 0),
                description="its head moved to the side"),
        ToyDrag("head_tilt", "snowman", "blue", head, ((0.0, 0.80, 0.0),), axis="z", degrees=40.0,
                pivot=(0.0, 0.40, 0.0), description="its head tilted"),
        ToyDrag("head_raise", "duck", "yellow", duck_head, ((0.0, 0.56, 0.28), (0.0, 0.25, 0.80)),
                translate=(0.0, 0.25, 0.0), description="its head raised"),
        ToyDrag("head_turn", "duck", "yellow", duck_head, ((0.0, 0.25, 0.80),), axis="y", degrees=50.0,
                pivot=(0.0, 0.30, 0.28), description="its head turned to the side"),
        ToyDrag("tail_up", "duck", "yellow", (1,), ((0.0, -0.16, -0.78),), axis="x", degrees=45.0,
                pivot=(0.0, -0.10, -0.45), description="its tail raised"),
        ToyDrag("left_arm_up", "robot", "red", (2,), ((-0.42, -0.44, 0.0),), axis="z", degrees=-150.0,
                pivot=(-0.42, 0.06, 0.0), description="its left arm raised"),
        ToyDrag("arms_forward", "robot", "red", (2, 3), ((-0.42, -0.44, 0.0), (0.42, -0.44, 0.0)), axis="x",
                degrees=-80.0, pivot=(0.0, 0.06, 0.0), description="both arms stretched forward"),
        ToyDrag("head_up", "robot", "red", robot_head, ((0.0, 0.74, 0.0), (-0.1, 0.37, 0.23)),
                translate=(0.0, 0.2, 0.0), description="its head raised above its body"),
        ToyDrag("roof_up", "house", "green", (1,), ((0.0, 0.62, 0.0), (0.0, 0.62, 0.46)), translate=(0.0, 0.2, 0.0),
                description="its roof raised"),
        ToyDrag("door_slide", "house", "green", (2,), ((0.0, -0.44, 0.45),), translate=(0.25, 0.0, 0.0),
                description="its door moved to the right"),
        ToyDrag("lean", "cone", "orange", (0,), ((0.0, 0.62, 0.0),), axis="z", degrees=-16.0,
                pivot=(0.0, -0.62, 0.0), description="it leaning to the side"),
        ToyDrag("shift", "cylinder", "purple", (0,), ((0.0, 0.68, 0.0), (0.42, 0.0, 0.0)),
                translate=(0.25, 0.0, 0.0), description="it moved to the side"),
    ]  # fmt: skip


DRAGS: dict[str, ToyDrag] = {f"{d.object}-{d.name}": d for d in _drags()}


def get_drag(name: str) -> ToyDrag:
    """A drag by its name `<object>-<drag>` (e.g. snowman-head_left); a one-line error listing them otherwise."""
    if name not in DRAGS:
        raise UnknownNameError(f"unknown toy drag {name!r}; known: {', '.join(DRAGS)}")
    return DRAGS[name]


def _moved_part(part: Part, drag: ToyDrag) -> Part:
    """The part placed by T: offset' = T(offset), rotation' = R_drag R_part (p_local = R'^T (p - offset'))."""
    rot = drag.rotation()
    old_rot = part.rotation if part.rotation is not None else torch.eye(3)
    offset = drag.move(torch.tensor([part.offset], dtype=torch.float32))[0]
    return dataclasses.replace(part, offset=tuple(float(v) for v in offset), rotation=rot @ old_rot)


def dragged_object(drag: ToyDrag, name: str) -> ToyObject:
    """The drag's catalogue object with its parts moved, named `name`."""
    obj = get_object(drag.object)
    parts = [_moved_part(p, drag) if i in drag.parts else p for i, p in enumerate(obj.parts)]
    return dataclasses.replace(obj, name=name, parts=parts)


@lru_cache(maxsize=None)
def get_drag_object(name: str) -> ToyObject:
    """`<object>@<object>-<drag>`: the catalogue object with the drag's parts moved."""
    base, _, drag_name = name.partition(DRAG_SEPARATOR)
    drag = get_drag(drag_name)
    if drag.object != base:
        raise UnknownNameError(f"drag {drag_name!r} moves a {drag.object}, not a {base}")
    return dragged_object(drag, name)


def part_radius(part: Part) -> float:
    """A radius around the part's offset that holds all of it."""
    p = part.params
    if part.primitive == "sphere":
        return p["radius"]
    if part.primitive == "ellipsoid":
        return max(p["radii"])
    if part.primitive == "box":
        return math.sqrt(sum(h * h for h in p["half_size"])) + p.get("rounding", 0.0)
    if part.primitive in ("cone", "cylinder"):
        return math.hypot(p["radius"], p["half_height"])
    if part.primitive == "torus":
        return p["major_radius"] + p["minor_radius"]
    raise ValueError(f"no bound for primitive {part.primitive!r}")


def drag_region(drag: ToyDrag, margin: float = 0.05, after: bool = True) -> tuple[torch.Tensor, float]:
    """(centre (3,), radius) of a sphere in the object's frame holding the moved parts before and (unless `after`
    is False) after the move."""
    obj, moved = get_object(drag.object), get_drag_object(drag.edited_name)
    spheres = [
        (torch.tensor(o.parts[i].offset, dtype=torch.float32), part_radius(o.parts[i]))
        for o in ((obj, moved) if after else (obj,))
        for i in drag.parts
    ]
    lo = torch.stack([c - r for c, r in spheres]).min(0).values
    hi = torch.stack([c + r for c, r in spheres]).max(0).values
    centre = (lo + hi) / 2
    radius = max(float((c - centre).norm()) + r for c, r in spheres) + margin
    return centre, radius


VARIANTS[DRAG_SEPARATOR] = get_drag_object
