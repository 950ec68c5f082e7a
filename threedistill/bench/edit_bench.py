"""`t3d bench edit`: text edits of toy captured scenes scored against the scene's ground truth after the edit.

Per scene: the capture is written and fitted once (held-out reconstruction PSNR). Per edit and method: the edited
object is rendered alone (the region's Gaussians on white) from the held-out cameras and compared with the target
object and with the source object (silhouette IoU, colour error on the overlap); an edit succeeds when the result
is closer to the target than to the source in what the edit changes (colour, shape, or both). Preservation: PSNR
of the whole edited scene against the captured images on pixels that show neither the old nor the new object.

Mask lifting (`--mask view:NAME:MASK.png`): per fitted scene and object, the object's ground-truth instance mask on
1 and on 3 training views is lifted to a Gaussian selection, by today's lifting (editing/lift.py) and by the
depth-and-sphere lifting it replaced (issue #23), and scored against the Gaussians that belong to the object: those
whose centre's nearest ground-truth surface is the object's, within MEMBER_DISTANCE of it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..errors import ConfigError, ThreeDistillError
from .harness import finished_row, prior_phrase, report_header

EDIT_ROW = "edit_row.json"
FIT_DIR = "fits"
MASK_VIEWS = (1, 3)
MEMBER_DISTANCE = 0.05  # renderer units (toy objects are about 1.2 across): farther from every surface = a floater


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


def nearest_surface(scene_dir: Path, data, gaussians):
    """(the toy scene's SceneField, distance (N,), label (N,)): the ground-truth surface nearest each Gaussian's
    centre (labels: 0 ground, then every object's parts; `field.bases`, `field.instance_of_label`)."""
    from ..toyworld.capture import read_toy_scene
    from ..toyworld.scene import SceneField

    scene, frame, _ = read_toy_scene(scene_dir)
    to_renderer = torch.linalg.inv(torch.tensor(frame, dtype=torch.float64)) @ torch.linalg.inv(data.transform.double())
    points = gaussians.means.detach().cpu().double() @ to_renderer[:3, :3].T + to_renderer[:3, 3]
    field = SceneField(scene)
    return (field, *field(points.float()))


def object_membership(scene_dir: Path, data, gaussians) -> torch.Tensor:
    """(N,) int64: the toy object (index into the scene's objects) each Gaussian belongs to, -1 for the ground and
    for floaters: the instance of the ground-truth surface nearest to its centre, if within MEMBER_DISTANCE."""
    field, distance, label = nearest_surface(scene_dir, data, gaussians)
    instance = field.instance_of_label[label] - 1  # 0 ground, 1..K objects -> -1, 0..K-1
    return torch.where(distance < MEMBER_DISTANCE, instance, torch.full_like(instance, -1))


def mask_views(scene_dir: Path, data, index: int, n: int) -> list[int]:
    """n training views for masks of object `index`: the one where it covers the most pixels, then, for each
    azimuth 360/n degrees further around the scene, the view within 45 degrees of it where the object covers the
    most pixels (the nearest view that shows it, if none is that near). Fewer when fewer views show it."""
    import imageio.v3 as iio
    import numpy as np

    record = json.loads((Path(scene_dir) / "toy_scene.json").read_text())
    azimuth = record["cameras"]["azimuth"]
    area = {
        i: int((np.asarray(iio.imread(Path(scene_dir) / "instances" / record["images"][i])) == index + 2).sum())
        for i in data.train_indices
    }  # instance ids are written + 1 (0 background, 1 ground)
    first = max(area, key=lambda i: area[i])
    if area[first] == 0:
        return []
    chosen = [first]
    for j in range(1, n):
        want = azimuth[first] + 360.0 * j / n
        off = {i: abs((azimuth[i] - want + 180.0) % 360.0 - 180.0) for i in area if area[i] > 0 and i not in chosen}
        if not off:
            break
        near = [i for i in off if off[i] <= 45.0]
        chosen.append(max(near, key=lambda i: area[i]) if near else min(off, key=lambda i: off[i]))
    return chosen


def write_object_masks(scene_dir: Path, index: int, views: list[int], out_dir: Path) -> list[str]:
    """The object's ground-truth instance masks on `views` as PNGs (white = the object) under out_dir, as
    `view:NAME:PATH` texts."""
    import imageio.v3 as iio
    import numpy as np

    record = json.loads((Path(scene_dir) / "toy_scene.json").read_text())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in views:
        name = record["images"][i]
        instances = np.asarray(iio.imread(Path(scene_dir) / "instances" / name))
        path = out_dir / f"object{index}_{name}"
        iio.imwrite(path, ((instances == index + 2) * 255).astype(np.uint8))
        texts.append(f"view:{name}:{path}")
    return texts


@torch.no_grad()
def sphere_lift(scene, gaussians, text: str) -> torch.Tensor:
    """The lifting issue #23 replaced, kept to compare with: centres projecting into the mask within 5% of the
    rendered depth are seen, and every centre projecting into the mask inside a sphere around the seen ones (their
    median, 1.2 x their 95% distance quantile) is selected."""
    from ..cameras import project_points
    from ..editing.lift import read_view_mask

    view = read_view_mask(scene, text)
    (h, w), cams, means = view.mask.shape, scene.cameras([view.index]), gaussians.means.detach()
    xy, depth = (v[0] for v in project_points(means, cams, h, w))
    px, py = xy[:, 0].floor().long(), xy[:, 1].floor().long()
    inside = (depth > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    inside[inside.clone()] = view.mask[py[inside], px[inside]]
    surface = gaussians.render(cams, h, w, geometry=True, perturb=False)["depth"][0, 0]
    seen = inside.clone()
    seen[inside] = (means - cams.positions[0]).norm(dim=-1)[inside] <= surface[py[inside], px[inside]] * 1.05
    if not seen.any():
        return torch.zeros_like(inside)
    centre = means[seen].median(0).values
    radius = float((means[seen] - centre).norm(dim=-1).quantile(0.95)) * 1.2
    return inside & ((means - centre).norm(dim=-1) <= radius)


def lifting_scores(selected: torch.Tensor, truth: torch.Tensor) -> dict:
    both = int((selected & truth).sum())
    return {
        "mask_recall": both / max(int(truth.sum()), 1),
        "mask_precision": both / max(int(selected.sum()), 1),
        "selected": int(selected.sum()),
        "members": int(truth.sum()),
    }


def measure_masks(scene_name: str, scene_dir: Path, fit_dir: Path, out_dir: Path) -> list[dict]:
    """Mask-lifting rows of one fitted toy scene: every object, masks on 1 and 3 views, both liftings (the old one
    over several views: the Gaussians every view's lifting selects)."""
    from ..editing.lift import lift_view_mask
    from ..scenes import load_scene
    from ..workflows.loading import load_run

    data, gaussians = load_scene(scene_dir), load_run(fit_dir).model
    owner = object_membership(scene_dir, data, gaussians)
    rows = []
    objects = json.loads((Path(scene_dir) / "toy_scene.json").read_text())["scene"]["objects"]
    for index, obj in enumerate(objects):
        truth, subject = owner == index, f"{obj['colour']} {obj['name']}"
        for n in MASK_VIEWS:
            views = mask_views(scene_dir, data, index, n)
            if len(views) < n:  # too few training views show the object (tiny test captures)
                continue
            texts = write_object_masks(scene_dir, index, views, out_dir)
            start = time.time()
            try:
                new = lift_view_mask(data, gaussians, texts)[0]
            except ConfigError:  # e.g. the mask covers no visible Gaussian: nothing selected
                new = torch.zeros(len(gaussians), dtype=torch.bool)
            seconds = time.time() - start
            old = torch.stack([sphere_lift(data, gaussians, t) for t in texts]).all(0)
            for method, selected, wall in (("votes", new, seconds), ("depth+sphere (before #23)", old, None)):
                rows.append(
                    {
                        "scene": scene_name,
                        "object": index,
                        "subject": subject,
                        "views": n,
                        "method": method,
                        **lifting_scores(selected, truth),
                        "seconds": wall,
                    }
                )
    return rows


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
    fits, rows, masks = {}, [], []
    for record in edits:
        if record["scene"] not in fits:
            scene_dir, fit_dir = prepare_scene(record["scene"], out_root, fit_steps, log)
            fits[record["scene"]] = (scene_dir, fit_dir, json.loads((fit_dir / "metrics.json").read_text()))
            log(f"lifting object masks on {record['scene']}")
            masks += measure_masks(record["scene"], scene_dir, fit_dir, out_root / "masks" / record["scene"])
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
                on_row({"fits": fits, "rows": rows, "masks": masks})
    return {"fits": fits, "rows": rows, "masks": masks}


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
    return "\n".join(lines + mask_report(result.get("masks", []))) + "\n"


def mask_report(rows: list[dict]) -> list[str]:
    """Markdown lines: mask lifting per object, then the mean per method and number of views."""
    if not rows:
        return []
    lines = [
        "",
        "## Mask lifting (`--mask view:...`, Gaussians of the object selected from its instance masks)",
        "",
        "| scene | object | views | method | mask_recall | mask_precision | selected | members | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(
            f"| {r['scene']} | {r['subject']} | {r['views']} | {r['method']} | {r['mask_recall']:.3f} | "
            f"{r['mask_precision']:.3f} | {r['selected']} | {r['members']} | {wall} |"
        )
    lines += ["", "| method | views | objects | mean mask_recall | mean mask_precision | min recall | min precision |"]
    lines.append("|---|---|---|---|---|---|---|")
    for key in dict.fromkeys((r["method"], r["views"]) for r in rows):
        rs = [r for r in rows if (r["method"], r["views"]) == key]
        recall, precision = [r["mask_recall"] for r in rs], [r["mask_precision"] for r in rs]
        lines.append(
            f"| {key[0]} | {key[1]} | {len(rs)} | {sum(recall) / len(rs):.3f} | {sum(precision) / len(rs):.3f} | "
            f"{min(recall):.3f} | {min(precision):.3f} |"
        )
    return lines


def check_methods(methods: list[str]) -> None:
    from ..editing import EDIT_METHODS

    for m in methods:
        EDIT_METHODS.get(m)
    if not methods:
        raise ThreeDistillError("no edit methods given; e.g. --methods dds,sds")
