"""Toy drag scenes on disk (issue #24): the source object's capture, DYG's `drag_points.json`, `region.json` and the
edited object's capture from the same cameras (`t3d toyworld drag-scene`). The drags themselves: drags.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from .capture import DEFAULT_FRAME, write_captured_scene
from .catalogue import rotation
from .drags import ToyDrag, drag_region, get_drag
from .scene import ToyScene, place


def drag_scene(drag: ToyDrag, edited: bool = False):
    """The one-object ToyScene of a drag (the object standing at the origin), before or after it."""
    placed = place(drag.object, drag.colour, 0.0, 0.0, scale=0.5)
    if edited:  # same placement: the parts that did not move stay where they were
        placed = dataclasses.replace(placed, name=drag.edited_name)
    return ToyScene([placed])


def to_world(scene, points: torch.Tensor) -> torch.Tensor:
    """Object-frame points of the scene's single object to the renderer's world frame."""
    placed = scene.objects[0]
    return points * placed.scale @ rotation("y", placed.yaw).T + torch.tensor(placed.offset)


def sphere_text(values) -> str:
    """`sphere:cx,cy,cz,r`, the form --mask and drag.context take."""
    return "sphere:" + ",".join(f"{float(v):.5f}" for v in values)


def write_drag_scene(name: str, out_dir, n_views: int = 48, width: int = 96, height: int = 72, seed: int = 0) -> Path:
    """The source capture in `out_dir`, `drag_points.json`, `region.json` and the edited capture in `edited/`
    (same cameras, same written frame); points and region in the capture's coordinates."""
    from ..scenes.normalize import similarity_scale, transform_points

    drag = get_drag(name)
    out = Path(out_dir)
    source, edited = drag_scene(drag), drag_scene(drag, edited=True)
    write_captured_scene(source, out, n_views=n_views, width=width, height=height, seed=seed)
    write_captured_scene(edited, out / "edited", n_views=n_views, width=width, height=height, seed=seed)
    frame = np.asarray(DEFAULT_FRAME)
    written = lambda p: transform_points(frame, to_world(source, p).double().numpy())  # noqa: E731
    handles, targets = written(drag.handle_points()), written(drag.target_points())
    scale = source.objects[0].scale * similarity_scale(frame)  # object units -> written units
    centre, radius = drag_region(drag)
    c, r = written(centre[None])[0], radius * scale
    (out / "drag_points.json").write_text(
        json.dumps({"handle_points": handles.tolist(), "target_points": targets.tolist()}, indent=1) + "\n"
    )
    part_centre, part_r = drag_region(drag, margin=0.0, after=False)
    part = [*written(part_centre[None])[0], part_r * scale]
    context = [*written(torch.zeros(1, 3))[0], scale]  # the object's bounding unit sphere
    region = {
        "sphere": {"centre": c.tolist(), "radius": r},
        "mask": sphere_text([*c, r]),
        "part": sphere_text(part),  # the moved parts before the drag (drag's --mask)
        "context": sphere_text(context),  # the whole object (edit cameras' framing)
        "drag": name,
        "description": drag.description,
        "prompt": drag.prompt,
        "object_size": float(2 * scale),
    }
    (out / "region.json").write_text(json.dumps(region, indent=1) + "\n")
    return out
