"""`t3d bench fit`: `t3d fit` on real captures (any folder `t3d fit --scene` reads) and on toy captures, each in its
own process so time and peak memory are the fit's own. Per capture: held-out PSNR / SSIM at the training size
(inside the masks too, when there are masks), held-out PSNR over the steps, the number of Gaussians, wall time,
peak memory, whether the object is present in every held-out view, and a side-by-side image (ours | photo).

Object presence needs no mask: in each held-out photo, the pixels far from the photo's median colour (the object and
anything else that stands out from a plain background) near where the scene's sparse points project (when it has
any) are where an object that vanished into the background would show. A view passes when the render's error there
is under half of the error of painting them the median colour.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ThreeDistillError
from ..utils.subprocesses import run_module
from .harness import report_header

SALIENT = 0.15  # a pixel stands out when its colour is this far (mean abs over RGB) from the photo's median colour
PRESENT = 0.5  # a view shows the object when the render's error on salient pixels is below this x the median's


@torch.no_grad()
def object_presence(model, scene, indices: list[int], resolution, background=None) -> list[float]:
    """Per held-out view: mean |render - photo| on the photo's salient pixels over mean |median colour - photo| on
    them (0: perfect, 1: no better than a blank background; `PRESENT` is the pass mark). With sparse points, only
    the salient pixels near where the points project count: the reconstructed object, not things at the photo's
    edge that no camera saw well enough for SfM (which no fit can show)."""
    ratios = []
    for i in indices:
        size = resolution.size(scene, i)
        image = scene.load_images([i], *size)[0][0]
        extra = {} if background is None else {"background": background}
        render = model.render(scene.cameras([i]), *size, geometry=False, perturb=False, **extra)
        render = render["rgb"][0].clamp(0, 1)
        median = image.flatten(1).median(1).values[:, None, None]
        blank = (image - median).abs().mean(0)
        salient = blank > SALIENT
        if scene.points is not None and len(scene.points) >= 16:
            salient &= point_footprint(scene, i, size)
        if int(salient.sum()) < 16:
            continue  # a plain photo: nothing to look for
        ratios.append(round(float((render - image).abs().mean(0)[salient].mean() / blank[salient].mean()), 3))
    return ratios


def point_footprint(scene, index: int, size: tuple[int, int], grow: float = 0.03) -> torch.Tensor:
    """(H, W) bool: the pixels of view `index` within `grow` x its longer side of a projected scene point."""
    import torch.nn.functional as F

    from ..cameras import project_points

    h, w = size
    xy, depth = (v[0] for v in project_points(scene.points.float(), scene.cameras([index]), h, w))
    u, v = xy[:, 0], xy[:, 1]
    inside = (depth > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    hits = torch.zeros(h, w)
    hits[v[inside].long(), u[inside].long()] = 1
    radius = max(1, round(grow * max(h, w)))
    return F.max_pool2d(hits[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


def toy_capture(name: str, root: Path, log=print) -> Path:
    """A toy captured scene written once under `root` (the toy world's 96x72 photos)."""
    from ..toyworld.capture import write_captured_scene

    scene_dir = Path(root) / "scenes" / name
    if not (scene_dir / "toy_scene.json").is_file():
        log(f"writing toy captured scene {name} to {scene_dir}")
        write_captured_scene(name, scene_dir)
    return scene_dir


def run_fit(scene: Path, out: Path, representation: str, steps: int | None, seed: int, overrides) -> Path:
    """`t3d fit` in a child process (its own peak memory); returns the finished run directory."""
    command = ["fit", "--scene", str(scene), "--out", str(out), "--representation", representation]
    command += ["--seed", str(seed)] + (["--steps", str(steps)] if steps else [])
    done = run_module("threedistill.cli", command + list(overrides), cwd=Path.cwd())
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise ThreeDistillError(f"t3d fit of {scene} failed: {lines[-1]}")
    runs = sorted(Path(out).glob("*/fit-*/metrics.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise ThreeDistillError(f"t3d fit of {scene} wrote no metrics under {out}")
    return runs[-1].parent


def measure(run_dir: Path, name: str, image_dir: Path | None) -> dict:
    """One row of the report from a finished fit run."""
    from ..config import load_config
    from ..scenes import check_images, load_scene
    from ..utils.images import save_image
    from ..workflows.fit import FitConfig, eval_background, evaluate_views, load_fit_model, side_by_side

    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = load_config(FitConfig, run_dir / "config.yaml")
    scene = load_scene(cfg.scene)
    check_images(scene)
    model = load_fit_model(run_dir, cfg)
    rule, bg = cfg.resolution_rule(), eval_background(cfg)
    ratios = object_presence(model, scene, scene.val_indices, rule, bg)
    curve = []
    if (run_dir / "eval.jsonl").is_file():
        curve = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines() if line.strip()]
    image = None
    if image_dir is not None and scene.val_indices:
        shown = scene.val_indices[:: max(1, len(scene.val_indices) // 4)][:4]
        res = evaluate_views(model, scene, shown, rule, bg)
        image = Path(image_dir) / f"{name}-{cfg.representation}.png"
        save_image(side_by_side(res["renders"], res["images"], 160), image)
    val = metrics["val"]
    return {
        "capture": name,
        "representation": cfg.representation,
        "views": f"{len(scene.train_indices)}+{val.get('views', 0)}",
        "size": "x".join(str(v) for v in reversed(val.get("size", [0, 0]))),
        "steps": cfg.trainer.steps,
        "psnr": val.get("psnr"),
        "ssim": val.get("ssim"),
        "psnr_min": val.get("psnr_min"),
        "cc_psnr": val.get("cc_psnr"),
        "cc_ssim": val.get("cc_ssim"),
        "masked_psnr": val.get("masked_psnr"),
        "masked_ssim": val.get("masked_ssim"),
        "gaussians": metrics.get("num_points"),
        "seconds": metrics.get("wall_seconds"),
        "peak_gb": metrics.get("peak_memory_gb"),
        "present": f"{sum(r < PRESENT for r in ratios)}/{len(ratios)}",
        "worst_presence": max(ratios) if ratios else None,
        "curve": [(c["step"], c["psnr"], c.get("cc_psnr")) for c in curve],
        "per_view": [(v["view"], v["psnr"]) for v in val.get("per_view", [])],
        "image": None if image is None else str(image),
        "run": str(run_dir),
    }


def run_fit_bench(
    captures: list[tuple[str, Path]],
    representations: list[str],
    runs_dir: Path,
    image_dir: Path | None,
    steps: int | None,
    seed: int,
    overrides,
    log=print,
    on_row=None,
    seeds: int = 1,
) -> list[dict]:
    """Fit every capture with every representation and `seeds` seeds from `seed` on (in series: each fit uses
    every core) and measure it. With several seeds each row holds its `seed`."""
    rows = []
    for name, scene in captures:
        for representation in representations:
            for s in range(seed, seed + seeds):
                label = name if seeds == 1 else f"{name} (seed {s})"
                log(f"fitting {label} ({representation})")
                where = Path(runs_dir) / name / representation / ("" if seeds == 1 else f"seed{s}")
                run_dir = run_fit(scene, where, representation, steps, s, overrides)
                row = measure(run_dir, name, image_dir if s == seed else None)
                if seeds > 1:
                    row["seed"] = s
                rows.append(row)
                log(
                    f"{label} {representation}: PSNR {row['psnr']} dB, SSIM {row['ssim']}, {row['gaussians']} "
                    f"Gaussians, {row['seconds']} s, {row['peak_gb']} GB, object in {row['present']} views"
                )
                if on_row is not None:
                    on_row(rows)
    return rows


def _label(row: dict) -> str:
    return row["capture"] if "seed" not in row else f"{row['capture']} (seed {row['seed']})"


def seed_summary(rows: list[dict]) -> list[str]:
    """Markdown lines: per capture and representation fitted with several seeds, the mean and range over seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if "seed" in r:
            groups.setdefault((r["capture"], r["representation"]), []).append(r)
    if not groups:
        return []
    lines = [
        "",
        "Over the seeds (mean, and the range in brackets):",
        "",
        "| capture | repr. | seeds | PSNR | SSIM | cc PSNR | Gaussians | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, representation), group in groups.items():

        def spread(key, digits=2, group=group):
            values = [r[key] for r in group if isinstance(r.get(key), (int, float))]
            if not values:
                return "-"
            mean = sum(values) / len(values)
            return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

        cells = [name, representation, len(group), spread("psnr"), spread("ssim", 3), spread("cc_psnr")]
        cells += [spread("gaussians", 0), spread("seconds", 0)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def fit_header(command: str, overrides) -> str:
    return (
        report_header("Fitting captured scenes (`t3d bench fit`)", command, overrides)
        + ", each fit in its own process, one after another. Sources of the real captures: fit_sources.md."
    )


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_report(rows: list[dict], header: str, doc_dir: Path | None = None) -> str:
    """The report: the table, held-out PSNR over the steps, and the side-by-side images (paths relative to the
    report's folder)."""
    lines = [header, ""]
    lines += [
        "| capture | repr. | views (train+held-out) | size | steps | PSNR | SSIM | worst PSNR | cc PSNR | cc SSIM | "
        "masked PSNR | masked SSIM | Gaussians | time (s) | peak mem (GB) | object present | worst presence ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [_label(r), r["representation"], r["views"], r["size"], r["steps"]]
        cells += [_number(r["psnr"]), _number(r["ssim"], 3), _number(r["psnr_min"])]
        cells += [_number(r.get("cc_psnr")), _number(r.get("cc_ssim"), 3), _number(r["masked_psnr"])]
        cells += [_number(r["masked_ssim"], 3), _number(r["gaussians"]), _number(r["seconds"], 0)]
        cells += [_number(r["peak_gb"]), r["present"], _number(r["worst_presence"], 3)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += seed_summary(rows)
    lines += ["", "Held-out PSNR (dB) over the steps, colour-corrected in brackets (`eval.jsonl` of each run):", ""]
    for r in rows:
        curve = ", ".join(f"{p[0]}: {p[1]}" + (f" ({p[2]})" if len(p) > 2 and p[2] else "") for p in r["curve"])
        curve = curve or "-"
        lines.append(f"- {_label(r)} ({r['representation']}): {curve}")
    if any(r.get("per_view") for r in rows):
        lines += ["", "Held-out PSNR (dB) of each view at the end (view index: PSNR):", ""]
        for r in rows:
            views = ", ".join(f"{v}: {p}" for v, p in r.get("per_view", [])) or "-"
            lines.append(f"- {_label(r)} ({r['representation']}): {views}")
    images = [r for r in rows if r["image"]]
    if images:
        lines += ["", "Held-out views, ours | photo:", ""]
        for r in images:
            path = Path(r["image"])
            if doc_dir is not None:
                try:
                    path = path.resolve().relative_to(Path(doc_dir).resolve())
                except ValueError:
                    pass
            lines.append(f"### {r['capture']} ({r['representation']})\n\n![{r['capture']}]({path.as_posix()})\n")
    return "\n".join(lines) + "\n"
