"""Export formats of a model: a textured or vertex-coloured mesh (glb, obj) from any representation, or the
Gaussians themselves (ply, splat, spz, compressed.ply; docs/formats.md says what each keeps). `t3d export RUN_DIR`
(workflows/results.py) calls these for any run."""

from __future__ import annotations

from pathlib import Path

from ..errors import ThreeDistillError
from ..utils.files import check_writable, write_json
from .compressed_ply import write_compressed_ply
from .splats import SplatParams, write_ply, write_splat, write_spz

SPLAT_FORMATS = {
    "ply": ("point_cloud.ply", write_ply),
    "splat": ("model.splat", write_splat),
    "spz": ("model.spz", write_spz),
    "compressed.ply": ("model.compressed.ply", write_compressed_ply),
}
MESH_FORMATS = {"glb": "model.glb", "obj": "model.obj"}
FORMATS = tuple(MESH_FORMATS) + tuple(SPLAT_FORMATS)


def check_format(fmt: str, also: tuple[str, ...] = ()) -> None:
    """A one-line error unless `fmt` is a known format (`also`: more names the caller accepts, for the message)."""
    if fmt not in FORMATS:
        raise ThreeDistillError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS + tuple(also))}")


def export_model(
    model, representation: str, fmt: str, out: Path, faces: int = 20000, texture_size: int = 1024, log=lambda s: None
) -> Path:
    """Write `model` as `fmt` to `out`; mesh formats also write `<out>.json` with the extraction report."""
    check_format(fmt)
    out = Path(out)
    if fmt in SPLAT_FORMATS:
        if representation != "gaussians":
            raise ThreeDistillError(
                f"--format {fmt} stores 3D Gaussians, this run is {representation!r}: "
                f"use --format {' or '.join(MESH_FORMATS)}"
            )
        return SPLAT_FORMATS[fmt][1](SplatParams.from_gaussians(model), out)
    from .mesh import extract_mesh
    from .mesh_files import write_mesh

    result = extract_mesh(model, faces=faces, texture_size=texture_size, log=log)
    write_mesh(result, out)
    report = {
        "format": fmt,
        "faces": len(result.mesh.faces),
        "vertices": len(result.mesh.vertices),
        "field": result.field,
        "threshold": result.threshold,
        "threshold_silhouette_iou": result.threshold_iou,
        "textured": result.textured,
        "seconds": result.seconds,
    }
    write_json(out.with_name(out.name + ".json"), report)
    return out


def check_output_file(out: Path, fmt: str) -> Path:
    """`out` when a `fmt` file can be written there (its suffix is the format's, it is not a folder, its folder can
    be made), else a one-line error naming the problem; checked before the run is loaded."""
    out = Path(out)
    if out.is_dir():
        raise ThreeDistillError(
            f"--out {out} is a folder; give a file name such as {out / default_export_path(out, fmt).name}"
        )
    named = [f for f in FORMATS if out.name.lower().endswith(f".{f}")]  # x.compressed.ply ends in .ply too
    if max(named, key=len, default=None) != fmt:
        raise ThreeDistillError(
            f"--out {out} does not end in .{fmt} (the --format); name it {out.with_suffix('.' + fmt).name} or "
            f"give the --format its suffix names"
        )
    return check_writable(out)


def default_export_path(run_dir: Path, fmt: str) -> Path:
    name = MESH_FORMATS[fmt] if fmt in MESH_FORMATS else SPLAT_FORMATS[fmt][0]
    return Path(run_dir) / "export" / name
