"""The toy world's catalogue: named colours and objects built from coloured primitive parts.

Every object fits inside the unit sphere, stands +Y up and faces +Z (its front). Composite objects have an
unmistakable front (a face, a beak, a door) so multi-face (Janus) errors can be measured. Parts whose
`colour` is None take the colour named in the prompt; the others keep a fixed accent colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import UnknownNameError

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.10),
    "orange": (0.98, 0.52, 0.05),
    "yellow": (0.95, 0.85, 0.12),
    "green": (0.15, 0.68, 0.20),
    "blue": (0.15, 0.32, 0.90),
    "purple": (0.58, 0.20, 0.80),
}

BLACK = (0.06, 0.06, 0.06)
CARROT = (1.0, 0.45, 0.0)
BEAK = (1.0, 0.62, 0.05)
WOOD = (0.36, 0.21, 0.10)
STEEL = (0.55, 0.57, 0.60)


def rotation(axis: str, degrees: float) -> torch.Tensor:
    """3x3 rotation matrix about a world axis."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    mats = {
        "x": [[1, 0, 0], [0, c, -s], [0, s, c]],
        "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
        "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]],
    }
    return torch.tensor(mats[axis], dtype=torch.float32)


@dataclass
class Part:
    """One primitive placed in the object's frame: p_local = R^T (p - offset)."""

    primitive: str
    params: dict
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: torch.Tensor | None = None
    colour: tuple[float, float, float] | None = None


@dataclass
class ToyObject:
    name: str
    parts: list[Part]
    has_front: bool = False
    description: str = ""
    extra_names: tuple[str, ...] = field(default_factory=tuple)


def _primitives() -> list[ToyObject]:
    return [
        ToyObject("sphere", [Part("sphere", {"radius": 0.68})], description="a ball"),
        ToyObject("cube", [Part("box", {"half_size": (0.5, 0.5, 0.5), "rounding": 0.03})], description="a cube"),
        ToyObject("cone", [Part("cone", {"radius": 0.62, "half_height": 0.62})], description="a cone, tip up"),
        ToyObject(
            "cylinder", [Part("cylinder", {"radius": 0.42, "half_height": 0.68})], description="an upright cylinder"
        ),
        ToyObject("torus", [Part("torus", {"major_radius": 0.56, "minor_radius": 0.22})], description="a flat ring"),
    ]


def _snowman() -> ToyObject:
    eye = {"radius": 0.045}
    return ToyObject(
        "snowman",
        [
            Part("sphere", {"radius": 0.44}, (0.0, -0.44, 0.0)),
            Part("sphere", {"radius": 0.31}, (0.0, 0.17, 0.0)),
            Part("sphere", {"radius": 0.22}, (0.0, 0.58, 0.0)),
            Part("cone", {"radius": 0.06, "half_height": 0.14}, (0.0, 0.57, 0.32), rotation("x", 90), CARROT),
            Part("sphere", eye, (-0.09, 0.66, 0.18), colour=BLACK),
            Part("sphere", eye, (0.09, 0.66, 0.18), colour=BLACK),
            Part("sphere", {"radius": 0.05}, (0.0, 0.22, 0.30), colour=BLACK),
            Part("sphere", {"radius": 0.05}, (0.0, 0.06, 0.30), colour=BLACK),
        ],
        has_front=True,
        description="three stacked balls with a carrot nose and eyes facing front",
    )


def _duck() -> ToyObject:
    return ToyObject(
        "duck",
        [
            Part("ellipsoid", {"radii": (0.42, 0.34, 0.58)}, (0.0, -0.22, -0.1)),
            Part("ellipsoid", {"radii": (0.14, 0.12, 0.2)}, (0.0, -0.05, -0.62), rotation("x", -35)),  # tail
            Part("sphere", {"radius": 0.26}, (0.0, 0.3, 0.28)),
            Part("ellipsoid", {"radii": (0.14, 0.06, 0.2)}, (0.0, 0.25, 0.6), colour=BEAK),
            Part("sphere", {"radius": 0.05}, (-0.12, 0.38, 0.48), colour=BLACK),
            Part("sphere", {"radius": 0.05}, (0.12, 0.38, 0.48), colour=BLACK),
        ],
        has_front=True,
        description="a body, a head and an orange beak pointing front",
    )


def _house() -> ToyObject:
    return ToyObject(
        "house",
        [
            Part("box", {"half_size": (0.5, 0.36, 0.42), "rounding": 0.01}, (0.0, -0.3, 0.0)),
            # A box turned 45 degrees about Z, its lower half hidden in the body: a gable roof, ridge front to back.
            Part("box", {"half_size": (0.4, 0.4, 0.46), "rounding": 0.01}, (0.0, 0.06, 0.0), rotation("z", 45)),
            Part("box", {"half_size": (0.13, 0.22, 0.03)}, (0.0, -0.44, 0.42), colour=WOOD),
            Part("box", {"half_size": (0.09, 0.08, 0.03)}, (-0.3, -0.22, 0.42), colour=BLACK),
            Part("box", {"half_size": (0.09, 0.08, 0.03)}, (0.3, -0.22, 0.42), colour=BLACK),
        ],
        has_front=True,
        description="a box with a gable roof, a door and two windows at the front",
    )


def _robot() -> ToyObject:
    return ToyObject(
        "robot",
        [
            Part("box", {"half_size": (0.32, 0.3, 0.22), "rounding": 0.03}, (0.0, -0.2, 0.0)),
            Part("box", {"half_size": (0.24, 0.19, 0.2), "rounding": 0.03}, (0.0, 0.33, 0.0)),
            Part("box", {"half_size": (0.08, 0.26, 0.08), "rounding": 0.02}, (-0.42, -0.18, 0.0), colour=STEEL),
            Part("box", {"half_size": (0.08, 0.26, 0.08), "rounding": 0.02}, (0.42, -0.18, 0.0), colour=STEEL),
            Part("box", {"half_size": (0.09, 0.16, 0.09)}, (-0.15, -0.64, 0.0), colour=STEEL),
            Part("box", {"half_size": (0.09, 0.16, 0.09)}, (0.15, -0.64, 0.0), colour=STEEL),
            Part("cylinder", {"radius": 0.055, "half_height": 0.03}, (-0.1, 0.37, 0.2), rotation("x", 90), BLACK),
            Part("cylinder", {"radius": 0.055, "half_height": 0.03}, (0.1, 0.37, 0.2), rotation("x", 90), BLACK),
            Part("box", {"half_size": (0.12, 0.025, 0.02)}, (0.0, 0.24, 0.2), colour=BLACK),
            Part("cylinder", {"radius": 0.02, "half_height": 0.08}, (0.0, 0.59, 0.0), colour=STEEL),
            Part("sphere", {"radius": 0.05}, (0.0, 0.69, 0.0), colour=BLACK),
        ],
        has_front=True,
        description="a boxy body and head with two eyes and a mouth at the front",
    )


OBJECTS: dict[str, ToyObject] = {o.name: o for o in _primitives() + [_snowman(), _duck(), _house(), _robot()]}


# Names of derived objects, `<object><separator><variant>`, and who builds them (toyworld/drags.py registers "@",
# the object as a toy drag left it); registered here so this module imports none of them.
VARIANTS: dict[str, Callable[[str], ToyObject]] = {}


def get_object(name: str) -> ToyObject:
    """A catalogue object, or a derived one (`VARIANTS`), e.g. `robot@robot-left_arm_up`."""
    for separator, build in VARIANTS.items():
        if separator in name:
            return build(name)
    if name not in OBJECTS:
        raise UnknownNameError(f"unknown toy object {name!r}; known objects: {', '.join(OBJECTS)}")
    return OBJECTS[name]


def get_colour(name: str) -> tuple[float, float, float]:
    if name not in COLOURS:
        raise UnknownNameError(f"unknown toy colour {name!r}; known colours: {', '.join(COLOURS)}")
    return COLOURS[name]


def parse_subject(text: str) -> tuple[str, str]:
    """'red duck' / 'a red duck' / 'a red duck, side view' -> ('red', 'duck'); raises a one-line error if the
    words are not a known colour followed by a known object."""
    words = text.split(",")[0].strip().lower().split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    if len(words) != 2:
        raise UnknownNameError(
            f"expected '<colour> <object>' such as 'red duck', got {text!r}; "
            f"colours: {', '.join(COLOURS)}; objects: {', '.join(OBJECTS)}"
        )
    get_colour(words[0])
    get_object(words[1])
    return words[0], words[1]


def catalogue_subjects() -> list[tuple[str, str]]:
    """Every (colour, object) pair of the catalogue, in a fixed order."""
    return [(c, o) for o in OBJECTS for c in COLOURS]
