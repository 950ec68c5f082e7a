"""`t3d view RUN_DIR`: any run (generate, staged, fit, edit) as one self-contained HTML page
(`threedistill.viewer`): its Gaussians as splats and its exported mesh in one 3D view, its turntable, metrics and
config. `t3d generate` writes RUN_DIR/export/viewer.html itself at the end of a run (`viewer` in `export`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ThreeDistillError
from ..export.run_export import default_export_path
from ..export.splats import SplatParams, read_ply
from ..session import read_run_kind
from ..viewer.content import default_page_path, run_page
from ..viewer.page import check_page_path, write_page
from .generate import stage_splats
from .loading import load_run, representation_of


def view_run(run_dir: Path, out: Path | None = None, log=lambda s: None) -> Path:
    """Write the page of any run to `out` (default RUN_DIR/export/viewer.html) and return its path. The splats of
    a generate run come from its export/point_cloud.ply when there is one (no model to build), else from its latest
    checkpoint; fit and edit runs are shown in the fit's normalised frame, the frame of their exported meshes."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a run directory" if run_dir.exists() else "does not exist"
        raise ThreeDistillError(f"no such run directory: {run_dir} {what}")
    kind = read_run_kind(run_dir)  # a one-line error for a folder that is not a run
    out = check_page_path(Path(out) if out else default_page_path(run_dir))
    ply = default_export_path(run_dir, "ply")
    model, representation, notes = None, "", []
    if kind == "generate" and ply.is_file():
        params = read_ply(ply)
    else:
        run = load_run(run_dir)
        model, representation = run.model, representation_of(run)
        params = SplatParams.from_gaussians(model) if representation == "gaussians" else None
        if params is None and kind == "generate":  # a staged run ending in a mesh: its Gaussians stage's splats
            params, notes = stage_splats(run_dir)
    return write_page(run_page(run_dir, kind, params, model, representation, log, notes), out)
