"""`t3d toyworld ...`: the toy world's objects, renders, captured scenes and the prior's training set."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app, command

toyworld_app = typer.Typer(no_args_is_help=True, help="Toy world: objects with known 3D ground truth.")
app.add_typer(toyworld_app, name="toyworld")


@command(toyworld_app, "list")
def toyworld_list():
    """List the catalogue's objects and colours."""
    from ..toyworld.catalogue import COLOURS, OBJECTS

    for obj in OBJECTS.values():
        front = " (has a front)" if obj.has_front else ""
        typer.echo(f"{obj.name:10s} {obj.description}{front}")
    typer.echo("colours: " + ", ".join(COLOURS))


@command(toyworld_app, "render")
def toyworld_render(
    object: str = typer.Option(..., "--object", help="'<colour> <object>', e.g. 'red duck'."),
    azimuth: float = typer.Option(0.0, help="Degrees; 0 looks at the object's front."),
    elevation: float = typer.Option(15.0, help="Degrees above the horizon."),
    radius: float = typer.Option(2.9, help="Camera distance from the origin."),
    fov: float = typer.Option(40.0, help="Vertical field of view in degrees."),
    resolution: int = typer.Option(256, help="Image height and width in pixels."),
    what: str = typer.Option("rgb", help="rgb, alpha, depth, normal, or all (a strip of the four)."),
    out: Path = typer.Option(Path("toy.png"), "--out", help="Output image file."),
):
    """Render a toy object from one camera."""
    from ..toyworld.render import render_toy_view
    from ..utils.images import save_image

    image = render_toy_view(object, azimuth, elevation, radius, fov, resolution, what)
    typer.echo(f"wrote {save_image(image, out)}")


@command(toyworld_app, "scene")
def toyworld_scene(
    name: str = typer.Argument(..., help="A default scene: three (red cube, yellow torus, orange duck) or four."),
    out: Path = typer.Option(..., "--out", help="Folder to write (nerfstudio + COLMAP layouts, ground truth)."),
    views: int = typer.Option(48, help="Number of posed views (every 8th is held out)."),
    width: int = typer.Option(96, help="Image width."),
    height: int = typer.Option(72, help="Image height."),
    seed: int = typer.Option(0, help="Camera seed."),
):
    """Write a toy captured scene: posed images, COLMAP and nerfstudio files, sparse points, ground truth."""
    from ..toyworld.capture import write_captured_scene

    path = write_captured_scene(name, out, n_views=views, width=width, height=height, seed=seed)
    typer.echo(f"wrote {path} ({views} views {width}x{height}); fit it with: t3d fit --scene {path}")


@command(toyworld_app, "dataset")
def toyworld_dataset(
    views: int = typer.Option(500, help="Random views per (colour, object) subject."),
    resolution: int = typer.Option(32, help="Image size in pixels."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("data/toyworld_dataset.npz"), "--out"),
):
    """Render the prior's training set: images, prompts and cameras (.npz)."""
    from ..toyworld.dataset import generate_dataset

    data = generate_dataset(views, resolution, seed=seed)
    data.save(out)
    typer.echo(f"wrote {len(data)} images of {len(data.subjects)} subjects to {out}")


@command(toyworld_app, "drag-scene")
def toyworld_drag_scene(
    name: str = typer.Argument(..., help="A toy drag, <object>-<drag>: {drags}."),
    out: Path = typer.Option(..., "--out", help="Folder to write (source capture, drag points, region, edited/)."),
    views: int = typer.Option(48, help="Number of posed views (every 8th is held out)."),
    width: int = typer.Option(96, help="Image width."),
    height: int = typer.Option(72, help="Image height."),
    seed: int = typer.Option(0, help="Camera seed."),
):
    """Write a toy drag with its exact result: the source object's capture, DYG's drag_points.json, the region
    that may change (region.json) and the capture of the dragged object from the same cameras (edited/)."""
    from ..toyworld.drag_capture import write_drag_scene
    from ..toyworld.drags import get_drag

    drag = get_drag(name)  # a one-line error listing the drags, before anything is rendered
    path = write_drag_scene(name, out, n_views=views, width=width, height=height, seed=seed)
    typer.echo(f"wrote {path}: a {drag.colour} {drag.object}, {drag.description} ({len(drag.handles)} point pairs)")
