"""`t3d bench drag`: drag edits of toy objects scored against the exact dragged object (issue #24).

Per drag (toyworld/drags.py): the source capture and the dragged one are written (`write_drag_scene`), the source
is fitted once with `t3d fit`, then every method edits the fit and is scored on the held-out views:
- handle error: where each handle ended (moved as the Gaussians nearest it moved) against its target, divided by
  the object's size;
- object IoU: the silhouette of the object's Gaussians (those whose centre's nearest ground-truth surface is the
  object's) against the dragged object's, rendered alone; also against the source object's;
- PSNR against the dragged capture's images (the whole view), and outside the region: the edited render against the
  unedited one wherever neither shows the region's Gaussians (what must not change);
- seconds and peak memory.
Methods: `none` (no edit: the reference the others must beat), `warp` (the dragged part's Gaussians moved by the
handles' displacements with a Gaussian falloff of half the longest move, no prior: editing/drag_points.py),
`joint` (the part moved rigidly, no prior: turned about where it joins the rest when a turn explains the drag,
else shifted: `joint_motion`), `drag` (Drag-SDS with the toy drag teacher, editing/drag_sds.py) and the text
edits (`dds`, `sds`, `in2n`) asked for the change in words (`a red robot with its left arm raised`) inside the
drag's region. `warp`, `joint` and `drag` get the same Gaussian mask M (DYG's gaussian_mask.pt): the Gaussians
whose nearest ground-truth surface is a dragged part (`part_membership`), as a user's drawn 3D mask would give
them; the text edits get the region sphere, which also holds where the part goes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .harness import report_header

DRAG_ROW = "drag_row.json"
GEOMETRIC = ("none", "warp", "joint")


HANDLE_METRIC = 3  # the handle error's version (2: a rigid fit to the part's Gaussians near the handle, 2026-12-07;
# 3: their mean move when the part has fewer than 16)


def _finished(path: Path, task: dict, metric_only: bool = False) -> dict | None:
    """A row written by an earlier run of the same task, if any (a crash mid-write: run it again). `metric_only`:
    a row of the same task scored with an older handle error (its edit can be scored again, not run again)."""
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if metric_only:
        same = {**row.get("task", {}), "metric": task["metric"]} == task
        return row if same and row["task"] != task else None
    return row if row.get("task") == task else None


def _saved_edit(out: Path):
    """The edited Gaussians of the last finished edit run under `out` (what a row was scored on), if any."""
    from ..workflows.loading import load_run

    for run in sorted(out.glob("*/edit-*@*"), reverse=True):
        try:
            return load_run(run).model.cpu()
        except Exception:  # noqa: BLE001 - an unfinished or damaged run: none to score again
            continue
    return None


def config_digest(method: str) -> str | None:
    """sha1[:12] of the shipped configs/edit/METHOD.yaml (None for the geometric methods or without one): part of
    a row's task, so that rows made under an older default config are run again, not read back."""
    from ..config import packaged_config

    if method in GEOMETRIC:
        return None
    path = packaged_config("edit", f"{method}.yaml")
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12] if path.is_file() else None


def check_methods(methods: list[str]) -> None:
    from ..editing import EDIT_METHODS

    known = list(GEOMETRIC) + EDIT_METHODS.names()
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise ConfigError(f"unknown drag bench method {unknown[0] if unknown else ''!r}; known: {', '.join(known)}")


def prepare_drag(
    name: str, out_root: Path, fit_steps: int | None, log=print, size: tuple[int, int, int] = (48, 96, 72)
) -> tuple[Path, Path]:
    """(drag scene directory, finished fit run of its source capture), made once and reused."""
    from ..config import load_config, packaged_config
    from ..toyworld.drag_capture import write_drag_scene
    from ..workflows.fit import FitConfig, fit

    scene_dir = Path(out_root) / "scenes" / name
    region_file = scene_dir / "region.json"
    if not region_file.is_file() or "context" not in json.loads(region_file.read_text()):  # older scenes: again
        log(f"writing toy drag {name} to {scene_dir}")
        write_drag_scene(name, scene_dir, n_views=size[0], width=size[1], height=size[2])
    if fit_steps is None:  # the shipped fit config's length
        fit_steps = load_config(FitConfig, packaged_config("fit", "gaussians.yaml")).trainer.steps
    for metrics in sorted((Path(out_root) / "fits" / name).glob("*/*/metrics.json")):
        done = "val" in json.loads(metrics.read_text())
        if done and load_config(FitConfig, metrics.parent / "config.yaml").trainer.steps == fit_steps:
            return scene_dir, metrics.parent  # a fit of the same length: reused
    log(f"fitting the source of {name}")
    run = fit(
        scene=str(scene_dir),
        steps=fit_steps,
        out=str(Path(out_root) / "fits" / name),
        progress=False,
        log=lambda s: None,
    )
    return scene_dir, run.dir


def drag_inputs(scene_dir: Path, data):
    """(drag points, region, object size), all in the fit's normalised frame."""
    from ..editing.drag_points import DragPoints
    from ..editing.region import EditRegion
    from ..scenes.base import apply_similarity
    from ..scenes.normalize import similarity_scale

    points = DragPoints.read(scene_dir / "drag_points.json")
    region_record = json.loads((scene_dir / "region.json").read_text())
    normalised = DragPoints(
        apply_similarity(data.transform, points.handles), apply_similarity(data.transform, points.targets)
    )
    region = EditRegion.parse(region_record["mask"]).transformed(data.transform)
    size = region_record["object_size"] * similarity_scale(data.transform.double().numpy())
    return normalised, region, size


def part_membership(scene_dir: Path, data, gaussians, drag) -> torch.Tensor:
    """(N,) bool: the Gaussians of the dragged parts (DYG's Gaussian mask M): those whose nearest ground-truth
    surface, within the object membership distance, is one of the parts the drag moves."""
    from .edit_bench import MEMBER_DISTANCE, nearest_surface

    field, distance, label = nearest_surface(scene_dir, data, gaussians)
    parts = torch.tensor([field.bases[0] + i for i in drag.parts])
    return (distance < MEMBER_DISTANCE) & torch.isin(label, parts)


@torch.no_grad()
def drag_reference(scene_dir: Path, data, before, drag) -> dict:
    """What every method of one drag is scored against, made once per drag: the drag's points, region and size
    (`drag_inputs`), the held-out cameras, the ground-truth silhouettes of the dragged and the source object, the
    dragged capture's images and the unedited fit's renders."""
    import dataclasses

    from ..editing.region_model import RegionModel
    from ..toyworld.capture import read_toy_scene
    from ..toyworld.scene import ToyScene, render_scene

    points, region, size = drag_inputs(scene_dir, data)
    record = json.loads((scene_dir / "toy_scene.json").read_text())
    h, w, views = record["height"], record["width"], data.val_indices
    cams = data.cameras(views)
    edited_scene, _, gt_cams = read_toy_scene(scene_dir / "edited")
    source_scene, _, _ = read_toy_scene(scene_dir)
    gt_cams = gt_cams[torch.tensor(views)]
    silhouettes = {
        key: render_scene(ToyScene(scene.objects, ground=False), gt_cams, h, w)["alpha"] > 0.5
        for key, scene in (("target", edited_scene), ("source", source_scene))
    }
    edited_data = dataclasses.replace(
        data, image_paths=[scene_dir / "edited" / "images" / p.name for p in data.image_paths]
    )
    selected = region.contains(before.means.detach())
    return {
        "part": part_membership(scene_dir, data, before, drag),
        "points": points,
        "region": region,
        "size": size,
        "height": h,
        "width": w,
        "cameras": cams,
        "views": len(views),
        "silhouettes": silhouettes,
        "target_images": edited_data.load_images(views, h, w)[0],
        "source_image": data.load_images(views[:1], h, w)[0][0],
        "before_means": before.means.detach(),
        "before_rgb": before.render(cams, h, w, geometry=False)["rgb"].clamp(0, 1),
        "selected": selected,
        "before_shown": RegionModel(before, selected).render(cams, h, w)["alpha"] > 0.01,
    }


@torch.no_grad()
def measure_drag(ref: dict, after, members: torch.Tensor) -> dict:
    """Handle error, object IoU, PSNR against the dragged capture and outside the region, on the held-out views
    (`ref`: the drag's `drag_reference`)."""
    from ..editing.drag_points import handle_error
    from ..editing.region_model import RegionModel

    h, w, cams = ref["height"], ref["width"], ref["cameras"]
    errors = handle_error(ref["before_means"], after.means.detach(), ref["points"], ref["size"], part=ref["part"])
    alone = RegionModel(after, members).render(cams, h, w)["alpha"] > 0.5
    ious = {key: float((alone & gt).sum() / (alone | gt).sum().clamp_min(1)) for key, gt in ref["silhouettes"].items()}
    full_after = after.render(cams, h, w, geometry=False)["rgb"].clamp(0, 1)
    full_before = ref["before_rgb"]
    shown = ref["before_shown"] | (RegionModel(after, ref["selected"]).render(cams, h, w)["alpha"] > 0.01)
    keep = (~shown).expand_as(full_after)
    panels = [ref["source_image"], ref["target_images"][0], full_before[0], full_after[0]]
    frame = ref["silhouettes"]["target"][0, 0] | ref["silhouettes"]["source"][0, 0]
    picture = torch.cat([crop_around(p, frame) for p in panels], dim=2)
    outside = ((full_after - full_before) ** 2 * keep).sum() / keep.sum().clamp_min(1)
    psnr = lambda mse: float(-10 * torch.log10(torch.as_tensor(mse).clamp_min(1e-10)))  # noqa: E731
    return {
        "handle_error": sum(errors) / len(errors),
        "handle_errors": errors,
        "target_iou": ious["target"],
        "source_iou": ious["source"],
        "target_psnr": psnr(((full_after - ref["target_images"]) ** 2).mean()),
        "outside_psnr": psnr(outside),
        "outside_identical": bool(torch.equal(full_after * keep, full_before * keep)),
        "views": ref["views"],
        "picture": picture,
    }


def teacher_gate() -> dict | None:
    """The gate recorded in the shipped drag teacher's model_index.json, if any."""
    from ..priors.diffusers_prior import embedded_prior_path

    path = embedded_prior_path("toyworld-drag") / "model_index.json"
    try:
        return json.loads(path.read_text())["threedistill"]["gate"]
    except (OSError, ValueError, KeyError):
        return None


def crop_around(image: torch.Tensor, mask: torch.Tensor, pad: int = 4, height: int = 128) -> torch.Tensor:
    """The square around the mask's pixels (grown by `pad`) of an image (3,H,W), scaled to `height` rows."""
    rows, cols = mask.nonzero(as_tuple=True)
    if len(rows) == 0:
        return torch.nn.functional.interpolate(image[None], size=(height, height), mode="nearest")[0]
    cy, cx = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    half = int(max(rows.max() - rows.min(), cols.max() - cols.min()) / 2) + pad
    top, left = int(cy) - half, int(cx) - half
    padded = torch.nn.functional.pad(image, (half, half, half, half), value=1.0)
    square = padded[:, top + half : top + 3 * half, left + half : left + 3 * half]
    return torch.nn.functional.interpolate(square[None], size=(height, height), mode="nearest")[0]


def geometric_edit(method: str, model, ref: dict):
    """`none`, `warp` or `joint` applied to a copy of the fitted Gaussians (`ref`: the drag's `drag_reference`)."""
    import copy

    from ..editing.drag_points import default_falloff, joint_motion, warp_gaussians

    if method == "joint":
        return joint_motion(model.means.detach(), ref["part"], ref["points"]).moved(model, ref["part"])
    edited = copy.deepcopy(model)
    if method == "warp":
        points, selected = ref["points"], ref["part"]
        edited.means.data = warp_gaussians(model.means.detach(), selected, points, default_falloff(points))
    return edited


def run_drag_bench(
    methods: list[str],
    drags: list[str],
    out_root: Path,
    images: Path | None = None,
    fit_steps: int | None = None,
    edit_steps: int | None = None,
    seed: int = 0,
    overrides=(),
    log=print,
    on_row=None,
    size: tuple[int, int, int] = (48, 96, 72),
    drag_steps: int | None = None,
) -> dict:
    """Fit each drag's source once (captures of `size` = views, width, height), edit it with every method,
    measure; finished rows are read back."""
    from ..bench.edit_bench import object_membership
    from ..scenes import load_scene
    from ..session import peak_memory_gb
    from ..toyworld.drags import get_drag
    from ..utils.images import save_image
    from ..workflows.edit import edit
    from ..workflows.fit import load_fit_model

    check_methods(methods)
    for name in drags:
        get_drag(name)  # one-line errors before anything runs
    out_root = Path(out_root).resolve()
    rows, fits = [], {}

    def variant(steps: int | None) -> str:
        """Runs with other overrides or steps keep their rows in their own folders (METHOD-<hash>), beside the
        defaults' rows (a row is read back only for its own task, but a variant must not overwrite the defaults')."""
        keys = list(overrides) + ([f"steps={steps}"] if steps is not None else [])
        return "-" + hashlib.sha1("\n".join(keys).encode()).hexdigest()[:8] if keys else ""

    for name in drags:
        drag = get_drag(name)
        scene_dir, fit_dir = prepare_drag(name, out_root, fit_steps, log, size)
        fits[name] = json.loads((fit_dir / "metrics.json").read_text()).get("val", {})
        data = load_scene(scene_dir)
        model = load_fit_model(fit_dir)
        members = object_membership(scene_dir, data, model) == 0
        region_record = json.loads((scene_dir / "region.json").read_text())
        ref = None  # made for the first method that is not read back
        for method in methods:
            steps = drag_steps if method == "drag" else edit_steps
            task = {"drag": name, "method": method, "steps": steps, "seed": seed, "overrides": list(overrides)}
            task["fit"] = str(fit_dir.name)  # a row belongs to the fit it edited
            if (digest := config_digest(method)) is not None:
                task["config"] = digest  # ... and to the default config it ran under
            if method in ("warp", "joint", "drag"):
                task["mask"] = "part"  # the dragged parts' Gaussians (rows before it moved the region's)
            task["metric"] = HANDLE_METRIC
            out = out_root / "edits" / name / (method + variant(steps))
            row = _finished(out / DRAG_ROW, task)
            older = None if row is not None or method in GEOMETRIC else _finished(out / DRAG_ROW, task, True)
            saved = _saved_edit(out) if older is not None else None
            if row is None and saved is not None:  # the same edit scored with an older handle error: score it again
                ref = ref or drag_reference(scene_dir, data, model, drag)
                scores = measure_drag(ref, saved, members)
                scores.pop("picture")
                row = {**older, **scores, "task": task}
                (out / DRAG_ROW).write_text(json.dumps(row))
            if row is None:
                ref = ref or drag_reference(scene_dir, data, model, drag)
                start = time.time()
                if method in GEOMETRIC:
                    edited = geometric_edit(method, model, ref)
                else:  # drag: the points and the part's Gaussians; the text edits: the region and the change in words
                    dragging = method == "drag"
                    if dragging:
                        out.mkdir(parents=True, exist_ok=True)
                        np.save(out / "gaussian_mask.npy", ref["part"].numpy())
                    run = edit(
                        source=str(fit_dir),
                        prompt=None if dragging else drag.prompt,
                        source_prompt=None if dragging else f"a {drag.colour} {drag.object}",
                        method=method,
                        region=None if dragging else region_record["mask"],
                        steps=steps,
                        seed=seed,
                        out=str(out),
                        overrides=list(overrides)
                        + ["export=[]"]
                        + ([f"drag.context={region_record['context']}"] if dragging else []),
                        progress=False,
                        log=lambda s: None,
                        drag_file=str(scene_dir / "drag_points.json") if dragging else None,
                        gaussian_mask=str(out / "gaussian_mask.npy") if dragging else None,
                    )
                    edited = run.model.cpu()
                seconds = time.time() - start
                scores = measure_drag(ref, edited, members)
                picture = scores.pop("picture")
                row = {
                    "drag": name,
                    "method": method,
                    "pairs": len(drag.handles),
                    "seconds": seconds,
                    "peak_memory_gb": peak_memory_gb(),
                    **scores,
                    "task": task,
                }
                if images is not None:  # the first held-out view: captured, dragged truth, fit, edited
                    save_image(picture, Path(images) / f"{name}_{method}.png")
                out.mkdir(parents=True, exist_ok=True)
                (out / DRAG_ROW).write_text(json.dumps(row))
            log(
                f"{method:5s} {name:22s} handle error {row['handle_error']:.3f}  IoU {row['target_iou']:.3f} "
                f"(source {row['source_iou']:.3f})  PSNR {row['target_psnr']:.1f} dB  outside "
                f"{row['outside_psnr']:.1f} dB  {row['seconds']:.0f}s"
            )
            rows.append(row)
            if on_row:
                on_row({"fits": fits, "rows": rows})
    return {"fits": fits, "rows": rows}


def drag_header(
    methods: str, drags: list[str], quick: bool, overrides=(), fit_steps: int | None = None, steps: int | None = None
) -> str:
    given = [f"--fit-steps {fit_steps}" if fit_steps else "", f"--steps {steps}" if steps else ""]
    command = " ".join(p for p in [f"t3d bench drag --methods {methods}", "--quick" if quick else "", *given] if p)
    return (
        report_header("Drag editing of toy objects against the exact dragged object", command, overrides)
        + f". {len(drags)} drags; each source capture (48 views, 96x72, every 8th held out) fitted once with "
        "`t3d fit`, each method scored on the held-out views (threedistill/bench/drag_bench.py)."
    )


def markdown_report(result: dict, header: str) -> str:
    rows = result["rows"]
    lines = [
        header,
        "",
        "| drag | pairs | method | handle error (/size) | IoU vs dragged | IoU vs source | PSNR vs dragged (dB) | "
        "PSNR outside region (dB) | s | GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        outside = "identical" if r["outside_identical"] else f"{r['outside_psnr']:.1f}"
        lines.append(
            f"| {r['drag']} | {r['pairs']} | {r['method']} | {r['handle_error']:.3f} | {r['target_iou']:.3f} | "
            f"{r['source_iou']:.3f} | {r['target_psnr']:.2f} | {outside} | {r['seconds']:.0f} | "
            f"{r['peak_memory_gb']:.1f} |"
        )
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines += [
        "",
        "| method | drags | mean handle error | mean IoU vs dragged | mean PSNR vs dragged (dB) |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        mean = lambda k: sum(r[k] for r in sel) / len(sel)  # noqa: E731
        lines.append(
            f"| {m} | {len(sel)} | {mean('handle_error'):.3f} | {mean('target_iou'):.3f} | {mean('target_psnr'):.2f} |"
        )
    lines += [
        "",
        "Each picture in drag/ (DRAG_METHOD.png) shows the first held-out view: the captured source, the dragged "
        "ground truth, the fit before the edit, and after it. Handle error: where each handle ended against its "
        "target, over the object's size (target <= 0.05); `none` gives the drag's own length. IoU: the object's "
        "Gaussians alone against the dragged (and the source) object; a drag must beat `none` on IoU vs dragged "
        "(target >= 0.85). `warp`, `joint` and `drag` move the dragged parts' Gaussians (the drag's Gaussian "
        "mask); the text edits change the region sphere. GB: the bench process's peak memory so far (an upper bound).",
    ]
    lines += ["", "One real capture dragged (a demonstration, not a measurement against ground truth): drag_real.md."]
    gate = teacher_gate()
    if gate:
        lines += [
            "",
            f"Drag teacher (assets/priors/toyworld-drag) gate on {gate['samples']} held-out views of the 12 drags "
            "(DDIM 50 steps, point CFG 4; moved-part IoU inside the drag mask): mean IoU "
            f"{gate['teacher_mean_iou']:.3f}, "
            f"{100 * gate['teacher_share']:.1f}% of samples at IoU >= {gate['iou_threshold']} (gate: 85%; "
            f"{'passed' if gate['passed'] else 'NOT passed'}); the unedited reference scores "
            f"{gate['reference_mean_iou']:.3f} ({100 * gate['reference_share']:.1f}%), the 2D cut-and-paste hint "
            f"{gate['hint_mean_iou']:.3f} ({100 * gate['hint_share']:.1f}%).",
        ]
    if result["fits"]:
        lines += [
            "",
            "Source fits (held-out PSNR): "
            + ", ".join(f"{k} {v.get('psnr', 0):.1f} dB" for k, v in result["fits"].items())
            + ".",
        ]
    return "\n".join(lines) + "\n"
