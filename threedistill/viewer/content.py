"""What the page of a run directory shows (`run_page`): its splats and mesh, turntable, metrics and config, read
from the files every run writes (see README "Viewer")."""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ThreeDistillError
from ..export.run_export import default_export_path, export_model
from ..export.splats import SplatParams, spz_bytes
from ..utils.files import read_json
from .page import PAGE_NAME, PageContent, ViewCamera

# Pictures the page shows when the run has them (path in the run directory, caption, MIME type), first found first.
MEDIA = (
    ("renders/turntable.mp4", "turntable", "video/mp4"),
    ("renders/turntable.gif", "turntable", "image/gif"),
    ("render/orbit/video.mp4", "orbit (t3d render)", "video/mp4"),
    ("render/orbit/video.gif", "orbit (t3d render)", "image/gif"),
    ("render/captured/video.mp4", "captured views (t3d render)", "video/mp4"),
    ("render/captured/video.gif", "captured views (t3d render)", "image/gif"),
    ("renders/views.png", "8 views", "image/png"),
)
MEDIA_LIMIT = 1_500_000  # bytes: a bigger video or picture is left out of the page (a note names it)
VIEW_TEXTURE_SIZE = 512  # a mesh extracted for the page only (a run with neither export/model.glb nor splats)


def default_page_path(run_dir: Path) -> Path:
    return Path(run_dir) / "export" / PAGE_NAME


def run_page(
    run_dir: Path,
    kind: str,
    params: SplatParams | None,
    model=None,
    representation: str = "",
    log=print,
    notes: list[str] | None = None,
) -> PageContent:
    """The page of `run_dir` (a run of `kind`) with `params` as its splats (None: not a Gaussians run) and its
    export/model.glb as the mesh; without either, a mesh is extracted from `model` for the page. Generate runs are
    seen from the default orbit camera, fit and edit runs from one that frames their Gaussians (or mesh). `notes`:
    lines the page shows first. The view opens on the mesh when the run's result (`representation`) is not
    Gaussians (a staged run's splats are its coarse stage)."""
    run_dir = Path(run_dir)
    notes = list(notes or [])
    glb = default_export_path(run_dir, "glb")
    mesh = glb.read_bytes() if glb.is_file() else None
    if mesh is None and params is None:
        if model is None:
            raise ThreeDistillError(f"{run_dir} has neither Gaussians nor an export/{glb.name} to show")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / glb.name
            mesh = export_model(model, representation, "glb", out, texture_size=VIEW_TEXTURE_SIZE, log=log).read_bytes()
        notes.append(f"no export/{glb.name} in the run: this mesh was extracted for the page")
    elif mesh is None:
        notes.append(f"no export/{glb.name} in the run (t3d export RUN_DIR writes it): splats only")
    return PageContent(
        title=_title(run_dir, kind),
        kind=kind,
        camera=ViewCamera() if kind == "generate" else framing_camera(params, mesh),
        splats=None if params is None else spz_bytes(params, f"cannot show {run_dir}'s Gaussians"),
        mesh=mesh,
        media=_media(run_dir, notes),
        metrics=_metrics(run_dir, notes),
        config=(run_dir / "config.yaml").read_text(errors="replace"),
        notes=notes,
        default_mode="mesh" if representation not in ("", "gaussians") and mesh is not None else "splats",
    )


def framing_camera(params: SplatParams | None, mesh: bytes | None) -> ViewCamera:
    """An orbit camera that frames a captured scene: around the middle of its Gaussians (or mesh vertices), far
    enough back that the sphere holding 95% of them fills the view."""
    if params is not None and len(params.means):
        points = params.means.astype(np.float64)
    else:
        import trimesh

        points = np.asarray(trimesh.load(io.BytesIO(mesh), file_type="glb", force="mesh").vertices, np.float64)
    centre = np.median(points, axis=0)
    radius = float(np.quantile(np.linalg.norm(points - centre, axis=1), 0.95)) or 1.0
    distance = 1.1 * radius / math.sin(math.radians(ViewCamera.fovy) / 2)
    return ViewCamera(radius=distance, target=tuple(float(c) for c in centre), near=distance / 100, far=distance * 20)


def _title(run_dir: Path, kind: str) -> str:
    from ..config import peek_key

    prompt = peek_key("prompt", [run_dir / "config.yaml"], []) if kind in ("generate", "edit") else None
    return f"{prompt} ({run_dir.name})" if isinstance(prompt, str) and prompt else f"{kind} run {run_dir.name}"


def _media(run_dir: Path, notes: list[str]) -> list[tuple[str, str, bytes]]:
    media, captions = [], set()
    for rel, caption, mime in MEDIA:
        path = run_dir / rel
        if caption in captions or not path.is_file():
            continue
        size = path.stat().st_size
        if size > MEDIA_LIMIT:
            notes.append(f"{rel} ({size / 1e6:.1f} MB) is too big to embed; open it next to the run")
            continue
        media.append((caption, mime, path.read_bytes()))
        captions.add(caption)
    return media


def _metrics(run_dir: Path, notes: list[str]) -> dict:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        return read_json(path, "metrics file")
    except ThreeDistillError as err:
        notes.append(f"metrics not shown: {err}")
        return {}
