"""`t3d render`: images and a video of any run directory, generate, fit or edit (`threedistill.workflows.render`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app, command, log

RUN_DIR_HELP = "Any run directory: a t3d generate, t3d fit or t3d edit run."


@command(app, "render")
def render_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help=RUN_DIR_HELP),
    cameras: Optional[str] = typer.Option(
        None,
        "--cameras",
        help="captured (the scene's captured views, each at its own aspect ratio; default for fit and edit runs), "
        "orbit (a circle around the object, or around where the captured cameras look; default for generate "
        "runs) or path (a smooth path through the captured cameras in capture order).",
    ),
    resolution: Optional[int] = typer.Option(
        None,
        "--resolution",
        help="Image height in pixels (the width keeps the aspect ratio). Default: the fit's training height for fit "
        "and edit runs, the turntable's size for generate runs.",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN_DIR/render/<cameras>/)."),
    frames: Optional[int] = typer.Option(
        None,
        "--frames",
        help="orbit, path: number of frames (default 48; a path at least 4 per captured view). captured: render "
        "this many views spread over the capture (default all).",
    ),
    fps: float = typer.Option(24.0, "--fps", help="Video frame rate."),
    video: bool = typer.Option(
        True, "--video/--no-video", help="Also write video.mp4 (video.gif when ffmpeg fails) from the frames."
    ),
    compare: bool = typer.Option(
        False, "--compare", help="captured: also write each render beside its photo (compare/) and report the PSNR."
    ),
):
    """Render any run (generate, fit or edit run) as images and a video.

    Frames are PNGs (frame_0000.png ...; captured views are named after their image files) with a render.json
    that lists them. Fit and edit runs render in the fit's normalised frame; an edit run in its source scene."""
    from ..workflows.render import render_run

    result = render_run(
        run_dir,
        cameras=cameras,
        resolution=resolution,
        out=out,
        frames=frames,
        fps=fps,
        video=video,
        compare=compare,
        log=log,
    )
    typer.echo(f"wrote {len(result.frames)} frames to {result.out_dir}")
    if result.video is not None:
        typer.echo(f"video: {result.video}")
