"""`t3d bench edit`: text edits of toy captured scenes scored against the scene's ground truth after the edit.

Per scene: the capture is written and fitted once (held-out reconstruction PSNR). Per edit and method: the edited
object is rendered alone (the region's Gaussians on white) from the held-out cameras and compared with the target
object and with the source object (silhouette IoU, colour error on the overlap); an edit succeeds when the result
is closer to the target than to the source in what the edit changes (colour, shape, or both). Preservation: PSNR
of the whole edited scene against the captured images on pixels that show neither the old nor the new object.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..errors import ThreeDistillError
from .harness import finished_row, prior_phrase, report_header

EDIT_ROW = "edit_row.json"
FIT_DIR = "fits"


def object_region(scene_dir: Path, index: int, margin: float = 0.05) -> str:
    """A box around object `index` of a toy capture, above the ground, in the capture's written coordinates."""
    from ..editing.region import EditRegion

    record = json.loads((Path(scene_dir) / "toy_scene.json").read_text())
    obj, ground = record["scene"]["objects"][index], record["scene"]["ground_height"]
    (ox, oy, oz), s = obj["offset"], obj["scale"] + margin
    lo, hi = torch.tensor([ox - s, ground + 0.03, oz - s]), torch.tensor([ox + s, oy + s, oz + s])
    return str(EditRegion("box", (lo + hi) / 2, (hi - lo) / 2).transformed(torch.tensor(record["frame"])))


def prepare_scene(name: str, out_root: Path, fit_steps: int | None, log=print) -> tuple[Path, Path]:
    """(capture directory, finished fit run) of a default toy scene, made once and reused."""
    from ..toyworld.capture import write_captured_scene
    from ..workflows.fit import fit

    scene_dir = Path(out_root) / "scenes" / name
    if not (scene_dir / "toy_scene.json").is_file():
        log(f"writing toy captured scene {name} to {scene_dir}")
        write_captured_scene(name, scene_dir)
    for metrics in sorted((Path(out_root) / FIT_DIR / name).glob("*/metrics.json")):
        if "val" in json.loads(metrics.read_text()):
            return scene_dir, metrics.parent
    log(f"fitting {name}")
    run = fit(
        scene=str(scene_dir), steps=fit_steps, out=str(Path(out_root) / FIT_DIR), progress=False, log=lambda s: None
    )
    return scene_dir, run.dir


@torch.no_grad()
def measure_edit(scene_dir: Path, fit_dir: Path, edit_record: dict, gaussians, region: str) -> dict:
    """Target / source agreement of the edited object and preservation of the rest, on the held-out views."""
    import imageio.v3 as iio

    from ..editing.region import EditRegion
    from ..editing.region_model import RegionModel
    from ..scenes import load_scene
    from ..toyworld.capture import read_toy_scene, render_edit_ground_truth
    from ..toyworld.scene import ToyScene, render_scene

    data = load_scene(scene_dir)
    views = data.val_indices
    record = json.loads((Path(scene_dir) / "toy_scene.json").read_text())
    h, w = record["height"], record["width"]
    cams = data.cameras(views)
    full = gaussians.render(cams, h, w, geometry=False)["rgb"].clamp(0, 1)
    selected = EditRegion.parse(region).transformed(data.transform).contains(gaussians.means)
    alone = RegionModel(gaussians, selected).render(cams, h, w)  # the edited object on white
    scene, _, gt_cams = read_toy_scene(scene_dir)
    gt_cams = gt_cams[torch.tensor(views)]
    after = render_edit_ground_truth(scene_dir, edit_record, views=views)
    k = after["edited_instance"]
    target_obj = after["scene"].objects[k - 1]
    source_obj = scene.objects[k - 1]
    target = render_scene(ToyScene([target_obj], ground=False), gt_cams, h, w)
    source = render_scene(ToyScene([source_obj], ground=False), gt_cams, h, w)
    before_inst = (
        torch.stack(
            [torch.as_tensor(iio.imread(Path(scene_dir) / "instances" / record["images"][i])) for i in views]
        ).long()[:, None]
        - 1
    )  # written as id + 1
    captured, _ = data.load_images(views, h, w)
    keep = (before_inst != k) & (after["instance"] != k)
    mse = ((full - captured) ** 2 * keep).sum() / (keep.sum() * 3).clamp_min(1)
    ours = alone["alpha"] > 0.5

    def agreement(gt: dict) -> tuple[float, float]:
        theirs = gt["alpha"] > 0.5
        iou = float((ours & theirs).sum() / (ours | theirs).sum().clamp_min(1))
        both = (ours & theirs).expand_as(alone["rgb"])
        colour = float(((alone["rgb"] - gt["rgb"]).abs() * both).sum() / both.sum().clamp_min(1))
        return iou, colour

    iou_t, col_t = agreement(target)
    iou_s, col_s = agreement(source)
    kind = edit_record.get("kind", "colour")
    colour_ok, shape_ok = col_t < col_s, iou_t > iou_s
    success = {"colour": colour_ok, "replace": shape_ok, "both": colour_ok and shape_ok}[kind]
    return {
        "target_iou": iou_t,
        "target_colour_error": col_t,
        "source_iou": iou_s,
        "source_colour_error": col_s,
        "success": bool(success),
        "preservation_psnr": float(-10 * torch.log10(mse.clamp_min(1e-10))),
        "views": len(views),
    }


def edit_name(edit_record: dict) -> str:
    from ..session import slugify

    return slugify(f"{edit_record['scene']} {edit_record['source_prompt']} to {edit_record['prompt']}")


def run_edit_bench(
    methods: list[str],
    edits: list[dict],
    out_root: Path,
    fit_steps: int | None = None,
    edit_steps: int | None = None,
    seed: int = 0,
    overrides=(),
    log=print,
    on_row=None,
) -> dict:
    """Fit each scene once, run every edit with every method, measure; finished edits are read back."""
    from ..workflows.edit import edit

    check_methods(methods)  # before anything runs
    out_root = Path(out_root).resolve()
    fits, rows = {}, []
    for record in edits:
        if record["scene"] not in fits:
            scene_dir, fit_dir = prepare_scene(record["scene"], out_root, fit_steps, log)
            fits[record["scene"]] = (scene_dir, fit_dir, json.loads((fit_dir / "metrics.json").read_text()))
        scene_dir, fit_dir, _ = fits[record["scene"]]
        region = object_region(scene_dir, record["index"])
        for method in methods:
            task = {"edit": record, "method": method, "steps": edit_steps, "seed": seed, "overrides": list(overrides)}
            out = out_root / "edits" / edit_name(record) / method
            row = finished_row(out, record["prompt"], task, EDIT_ROW)
            if row is None:
                start = time.time()
                run = edit(
                    source=str(fit_dir),
                    prompt=record["prompt"],
                    source_prompt=record["source_prompt"],
                    method=method,
                    region=region,
                    steps=edit_steps,
                    seed=seed,
                    out=str(out),
                    overrides=list(overrides) + ["export=[]"],
                    progress=False,
                    log=lambda s: None,
                )
                row = {
                    "edit": edit_name(record),
                    "prompt": record["prompt"],
                    "kind": record.get("kind", "colour"),
                    "method": method,
                    "run_dir": str(run.dir),
                    "wall_seconds": time.time() - start,
                    **measure_edit(scene_dir, fit_dir, record, run.model.cpu(), region),
                    "task": task,
                }
                (run.dir / EDIT_ROW).write_text(json.dumps(row))
            log(
                f"{method:5s} {row['edit']:45s} target IoU {row['target_iou']:.3f} (source {row['source_iou']:.3f})  "
                f"colour err {row['target_colour_error']:.3f} (source {row['source_colour_error']:.3f})  "
                f"preservation {row['preservation_psnr']:.1f} dB  {'ok' if row['success'] else 'FAILED'}  "
                f"{row['wall_seconds']:.0f}s"
            )
            rows.append(row)
            if on_row:
                on_row({"fits": fits, "rows": rows})
    return {"fits": fits, "rows": rows}


def edit_header(methods: str, seed: int, quick: bool = False, overrides=()) -> str:
    """The report's header: what `t3d bench edit --methods METHODS` ran, where, with which prior."""
    command = f"t3d bench edit --methods {methods}{' --quick' if quick else ''}"
    return (
        report_header("Editing captured toy scenes", command, overrides)
        + f", {prior_phrase(overrides)}, edit seed {seed}. Scenes are written by the toy world (96x72 views, "
        f"every 8th held out) and fitted once with `t3d fit`; each edit is scored on the held-out views (see "
        f"threedistill/bench/edit_bench.py)."
    )


def markdown_report(result: dict, header: str) -> str:
    """Reconstruction per scene, then per edit and method, then per method: success rate and means."""
    lines = [
        header,
        "",
        "## Reconstruction (held-out views)",
        "",
        "| scene | views | PSNR dB | SSIM | Gaussians | fit s |",
        "|---|---|---|---|---|---|",
    ]
    for name, (_, _, m) in result["fits"].items():
        lines.append(
            f"| {name} | {m['val']['views']} | {m['val']['psnr']:.2f} | {m['val']['ssim']:.4f} | "
            f"{m.get('num_points', '-')} | {m['wall_seconds']:.0f} |"
        )
    lines += [
        "",
        "## Edits",
        "",
        "| edit | kind | method | target IoU | source IoU | colour err to target | "
        "to source | preservation PSNR dB | success | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['edit']} | {r['kind']} | {r['method']} | {r['target_iou']:.3f} | {r['source_iou']:.3f} | "
            f"{r['target_colour_error']:.3f} | {r['source_colour_error']:.3f} | {r['preservation_psnr']:.1f} | "
            f"{'yes' if r['success'] else 'no'} | {r['wall_seconds']:.0f} |"
        )
    lines += [
        "",
        "## Per method",
        "",
        "| method | edits | success rate | mean preservation PSNR dB | "
        "min preservation PSNR dB | mean target IoU | mean colour err to target |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in result["rows"]):
        rs = [r for r in result["rows"] if r["method"] == method]
        mean = lambda key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
        lines.append(
            f"| {method} | {len(rs)} | {sum(r['success'] for r in rs) / len(rs):.0%} | "
            f"{mean('preservation_psnr'):.1f} | {min(r['preservation_psnr'] for r in rs):.1f} | "
            f"{mean('target_iou'):.3f} | {mean('target_colour_error'):.3f} |"
        )
    return "\n".join(lines) + "\n"


def check_methods(methods: list[str]) -> None:
    from ..editing import EDIT_METHODS

    for m in methods:
        EDIT_METHODS.get(m)
    if not methods:
        raise ThreeDistillError("no edit methods given; e.g. --methods dds,sds")
