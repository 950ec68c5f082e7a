"""`t3d export RUN_DIR`: write a finished run's result in a format other tools read."""
from __future__ import annotations

from pathlib import Path

from ..errors import ThreeDistillError
from .splats import SplatParams, write_ply, write_splat, write_spz

SPLAT_FORMATS = {"ply": ("point_cloud.ply", write_ply), "splat": ("model.splat", write_splat), "spz": ("model.spz", write_spz)}
FORMATS = tuple(SPLAT_FORMATS)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ThreeDistillError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)} "
                                "(mesh formats glb/obj are not implemented yet)")


def export_model(model, representation: str, fmt: str, out: Path) -> Path:
    check_format(fmt)
    if representation != "gaussians":
        raise ThreeDistillError(f"--format {fmt} needs a 3D Gaussians run, this one is {representation!r} "
                                "(mesh export of NeRF runs is not implemented yet)")
    return SPLAT_FORMATS[fmt][1](SplatParams.from_gaussians(model), out)


def default_export_path(run_dir: Path, fmt: str) -> Path:
    return Path(run_dir) / "export" / SPLAT_FORMATS[fmt][0]


def export_run(run_dir: Path, fmt: str = "ply", out: Path | None = None) -> Path:
    from ..evaluation.run_eval import load_run

    check_format(fmt)  # before loading anything
    run = load_run(run_dir)
    return export_model(run.model, run.config.representation, fmt, Path(out) if out else default_export_path(run_dir, fmt))
