"""`t3d view`: any run as one self-contained HTML page (`threedistill.workflows.view`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app, command, log


@command(app, "view")
def view_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Any run directory: generate, fit or edit."),
    out: Optional[Path] = typer.Option(None, "--out", help="The page (default RUN_DIR/export/viewer.html)."),
    open_page: bool = typer.Option(False, "--open", help="Open the page in the default web browser."),
):
    """Write any run as one HTML page that works offline, from file://.

    The run's 3D Gaussians (splats) and its exported mesh (export/model.glb) in one 3D view with a toggle and orbit
    controls, its turntable, metrics and resolved config, all embedded in the one file."""
    from ..workflows.view import view_run

    page = view_run(run_dir, out, log=log)
    size = page.stat().st_size
    typer.echo(f"wrote {page} ({size / 1e6:.2f} MB)")
    if open_page:
        import webbrowser

        if not webbrowser.open(page.resolve().as_uri()):
            log(f"warning: no web browser found; open {page.resolve().as_uri()}")
