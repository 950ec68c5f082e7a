"""`t3d bench export`: export every finished run under a directory as glb, time it, and compare the mesh with
ground truth next to the representation's own renders (silhouette IoU, Chamfer, volume IoU); markdown table."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from ..errors import ThreeDistillError
from .harness import record, report_header


def finished_runs(root: Path) -> list[Path]:
    """Run directories (with config.yaml and a checkpoint) below `root`, sorted."""
    runs = sorted(
        p.parent for p in Path(root).rglob("config.yaml") if (p.parent / "checkpoints" / "latest.json").is_file()
    )
    if not runs:
        raise ThreeDistillError(f"no finished runs under {root} (run `t3d bench fidelity` or `t3d generate` first)")
    return runs


def export_header(runs_dir: Path, faces: int, texture_size: int, n_runs: int) -> str:
    """The report's header: what `t3d bench export` exported, where, and how to read it."""
    return (
        report_header(
            "Mesh export against toy-world ground truth",
            f"t3d bench export --runs-dir {runs_dir} --faces {faces} --texture-size {texture_size}",
        )
        + f": {n_runs} runs. render IoU: the representation's own renders; mesh IoU: the exported glb, rendered."
    )


def run_export_bench(runs: list[Path], faces: int, texture_size: int, log=print, on_row=None) -> list[dict]:
    """Every run exported as glb (timed) and evaluated, mesh next to renders; `on_row(rows)` after each."""
    from ..export.mesh import check_budget
    from ..export.run_export import default_export_path
    from ..workflows.generate import read_run_config
    from ..workflows.results import evaluate_run, export_run

    check_budget(faces, texture_size)  # before anything is exported
    rows = []
    for run_dir in runs:
        start = time.perf_counter()
        export_run(run_dir, "glb", default_export_path(run_dir, "glb"), faces, texture_size)
        seconds = time.perf_counter() - start  # loading the run included: what `t3d export` costs
        m = evaluate_run(run_dir)
        row = {
            "representation": read_run_config(run_dir).representation,
            "prompt": m["prompt"],
            "render_iou": m["silhouette_iou"],
            "mesh_iou": m["mesh_silhouette_iou"],
            "chamfer": m["mesh_chamfer"],
            "volume_iou": m["mesh_volume_iou"],
            "faces": m["mesh_faces"],
            "export_seconds": seconds,
        }
        record(
            rows,
            row,
            f"{row['representation']:9s} {row['prompt']:22s} render IoU {row['render_iou']:.3f}  mesh "
            f"IoU {row['mesh_iou']:.3f}  chamfer {row['chamfer']:.3f}  volume IoU {row['volume_iou']:.3f}  "
            f"{seconds:.1f}s",
            log,
            on_row,
        )
    return rows


def markdown_table(rows: list[dict], header: str) -> str:
    cols = ("render_iou", "mesh_iou", "chamfer", "volume_iou", "export_seconds")
    lines = [
        header,
        "",
        "| representation | prompt | render IoU | mesh IoU | mesh - render | Chamfer / size | volume IoU | export s |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cells(r):
        return (
            " | ".join(f"{r[c]:.3f}" if c != "export_seconds" else f"{r[c]:.1f}" for c in cols[:2])
            + f" | {r['mesh_iou'] - r['render_iou']:+.3f} | {r['chamfer']:.3f} | {r['volume_iou']:.3f}"
            + f" | {r['export_seconds']:.1f} |"
        )

    for rep in dict.fromkeys(r["representation"] for r in rows):
        mine = [r for r in rows if r["representation"] == rep]
        lines += [f"| {rep} | {r['prompt']} | {cells(r)}" for r in mine]
        mean = {c: statistics.mean(r[c] for r in mine) for c in cols}
        lines.append(f"| **{rep}** | **mean** | {cells(mean)}")
    return "\n".join(lines) + "\n"
