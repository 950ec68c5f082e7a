"""`t3d edit`: text edits of a reconstructed scene (Gaussians). The edit region (a box or sphere) holds the only
Gaussians that may change; edit cameras orbit it and render just those Gaussians on white, which is what a
text-to-image prior knows (one object, centred). Methods: `dds` (Delta Denoising Score against the unedited
render), `sds` (SDS toward the target prompt + a parameter-space preservation term, Vox-E's idea), `in2n`
(Instruct-NeRF2NeRF's Iterative Dataset Update: photometric training on edit views that are re-edited in 2D)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from ..cameras import project_points
from ..editing import EDIT_METHODS
from ..editing.in2n import build_in2n
from ..editing.lift import lift_view_mask
from ..editing.region import EditRegion
from ..editing.region_model import RegionModel, RegionViews, object_radius
from ..errors import ConfigError, ThreeDistillError
from ..prompting import check_prompt
from ..session import Run, RunSession, read_run_kind, run_config
from ..trainer import Trainer
from .edit_config import EditConfig
from .fit import export_scene_model, scene_slug
from .live_view import LiveViewerOptions, train_watched


def load_source(source: str | Path, log=print):
    """(what to edit: a fit or edit run directory or a splat file/folder, the scene's path, its SceneData,
    Gaussians in the scene's normalised frame). An edit run is edited further (edits chain); a ready 3DGS
    point_cloud.ply (or a scene folder holding one) is edited as it is; a scene folder without one is fitted
    first."""
    from ..representations.gaussians import Gaussians
    from ..scenes import load_scene
    from .fit import fit

    path = Path(source)
    if not (path / "config.yaml").is_file():
        if not path.exists():
            raise ThreeDistillError(
                f"{path} does not exist; give a t3d fit run directory, a captured-scene folder "
                f"or a 3DGS point_cloud.ply"
            )
        scene = load_scene(path)
        if scene.splats is not None:
            log(
                f"editing the 3D Gaussians of {path} ({len(scene.splats.means)} splats, SH degree "
                f"{scene.splats.sh_degree})"
            )
            return path, path, scene, Gaussians.from_splats(scene.splats)
        log(f"{path} is a captured scene, not a fit run: fitting it first (t3d fit --scene {path})")
        path = fit(scene=str(path), log=log).dir
    from .loading import load_run, representation_of, scene_source

    kind = read_run_kind(path)
    if kind not in ("fit", "edit"):
        raise ThreeDistillError(
            f"{path} is a t3d {kind} run; t3d edit takes a t3d fit or t3d edit run, a "
            f"captured-scene folder or a 3DGS point_cloud.ply"
        )
    run = load_run(path)
    if representation_of(run) != "gaussians":
        raise ThreeDistillError(
            f"{path} holds a {representation_of(run)}; t3d edit edits Gaussians scenes "
            f"(refit with --representation gaussians)"
        )
    scene_path = scene_source(run)[1]
    return path, scene_path, load_scene(scene_path), run.model


def method_guidance(cfg: EditConfig, prior):
    """The method's guidance with its config built from the edit config's shared guidance settings (and, for
    drag, its own section)."""
    cls = EDIT_METHODS.get(cfg.method)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    values = {k: v for k, v in dataclasses.asdict(cfg.guidance).items() if k in fields}
    if "source_prompt" in fields:
        values["source_prompt"] = cfg.source_prompt
    if cfg.method == "drag":
        values |= {k: getattr(cfg.drag, k) for k in ("teacher", "lora_rank", "lr_embedding", "lr_lora")}
        values["trainer_max_steps"] = cfg.trainer.steps
    return cls(prior, cls.config_class(**values))


def edit(
    source: str | Path | None = None,
    prompt: str | None = None,
    source_prompt: str | None = None,
    method: str | None = None,
    region: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    out: str | None = None,
    overrides=(),
    resume: str | Path | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    log=print,
    drag: list[str] | None = None,
    drag_file: str | None = None,
    gaussian_mask: str | None = None,
    viewer: LiveViewerOptions | None = None,
) -> Run:
    """Edit a fitted scene with text, or drag part of it (method drag: `drag` points "hx,hy,hz>tx,ty,tz" or a
    `drag_file`, the part given by `region` or a `gaussian_mask` file); returns the Run
    (outputs/<scene>/edit-<method>@<time>/); `viewer` shows the edit live (`live_view`)."""
    from ..priors import load_prior

    run_dir, cfg = run_config(
        EditConfig,
        "edit",
        "method",
        resume,
        overrides,
        source=source or None,
        prompt=prompt or None,
        source_prompt=source_prompt or None,
        method=method,
        region=region,
        trainer__steps=steps,
        trainer__seed=seed,
        out=out,
        drag__points=list(drag) if drag else None,
        drag__file=drag_file,
        drag__gaussian_mask=gaussian_mask,
    )
    if resume is None:
        if not cfg.source:
            raise ConfigError("--scene is missing; give a t3d fit run directory or a captured-scene folder")
        if cfg.method == "drag":
            check_drag_input(cfg)
        else:
            check_prompt(cfg.prompt, "the edit prompt", "a blue cube")
        if cfg.source_prompt:
            check_prompt(cfg.source_prompt, "--source-prompt", "a red cube")
    fit_dir, scene_path, scene, gaussians = load_source(cfg.source, log)
    points = drag_points(cfg, scene, gaussians) if cfg.method == "drag" else None
    if cfg.method == "drag" and cfg.drag.gaussian_mask:
        from ..editing.drag_points import read_gaussian_mask

        selected = read_gaussian_mask(cfg.drag.gaussian_mask, len(gaussians))
        the_region = bounding_sphere(gaussians.means.detach()[selected])
    else:
        selected, the_region = edit_selection(cfg, scene, gaussians)
    if not selected.any():
        raise ThreeDistillError(f"the edit region {cfg.region} holds none of the scene's {len(gaussians)} Gaussians")
    log(f"edit region {the_region} (normalised frame) holds {int(selected.sum())} of {len(gaussians)} Gaussians")
    if resume is None:
        cfg.source = str(Path(fit_dir).resolve())  # absolute: the run is read from other folders later
        session = RunSession.start("edit", cfg, Path(cfg.out) / scene_slug(str(scene_path)), f"edit-{cfg.method}", log)
    else:
        session = RunSession.resume("edit", cfg, run_dir, log)
    with session:
        device, _ = session.setup(cfg.device, cfg.native, cfg.trainer.seed)
        original = RegionModel(copy.deepcopy(gaussians).requires_grad_(False), selected).to(device)
        if cfg.method == "drag":
            model, guidance, views = build_drag(cfg, points, scene, gaussians, selected, original, device, log)
        else:
            model = RegionModel(
                gaussians, selected, cfg.lambda_preserve, cfg.lr, cfg.max_scale_growth, cfg.sh_rest_lr_factor
            ).to(device)
        if cfg.method == "in2n":  # trains on a dataset of edit views (RegionViews' cameras) that it re-edits in 2D
            guidance, views = build_in2n(cfg, model, RegionViews(original, object_radius(the_region), cfg), device)
        elif cfg.method != "drag":
            guidance = method_guidance(cfg, load_prior(cfg.prior, device=device))
            views = RegionViews(original, object_radius(the_region), cfg, with_source="source" in guidance.targets)
        trainer = Trainer(cfg.trainer, model, guidance, cfg.prompt, session.dir, log=log, views=views)
        if cfg.method == "in2n":
            views.draw(trainer.generator)  # the dataset's cameras come from the run's generator
        session.restore(trainer)
        run = Run(session.dir, cfg, gaussians, trainer, kind="edit")
        preview = edit_preview(fit_dir, scene, the_region, original, views, cfg)
        finished = train_watched(
            session,
            trainer,
            model,
            viewer=viewer,
            scene=scene,
            progress=progress,
            stop_at=stop_at,
            preview=lambda step: write_edit_preview(run, model, preview, step),
            log=log,
        )
        if finished:
            write_edit_preview(run, model.cpu(), preview, cfg.trainer.steps, name="edit.png")
            metrics = {"edited_gaussians": int(selected.sum()), "region": str(the_region)}
            if cfg.method == "drag":  # the edit written into the scene's Gaussians (rest rows: the source's own)
                run.model = gaussians = model.baked()
                metrics["ring_gaussians"] = len(model.ring_index)
            export_scene_model(gaussians.cpu(), "gaussians", scene, cfg.export, session.dir, log)
            session.finish(metrics)
    return run


def check_drag_input(cfg: EditConfig) -> None:
    """One-line errors for a drag edit without points or without the Gaussians to move."""
    if not cfg.drag.points and not cfg.drag.file:
        raise ConfigError("--method drag needs points: --drag 'hx,hy,hz>tx,ty,tz' or --drag-file drag_points.json")
    if cfg.drag.points and cfg.drag.file:
        raise ConfigError("give the drag points once: --drag or --drag-file, not both")
    read_drag_points(cfg)  # a malformed point or file: its own one-line error before anything loads
    if cfg.region is None and not cfg.drag.gaussian_mask:
        raise ConfigError(
            "--method drag needs the Gaussians to move: --mask box:...|sphere:...|view:NAME:MASK.png or "
            "--mask gaussian_mask.pt|.npy"
        )


def read_drag_points(cfg: EditConfig):
    """The drag's points as given (--drag or --drag-file), in the frame `region_frame` names."""
    from ..editing.drag_points import DragPoints

    return DragPoints.read(cfg.drag.file) if cfg.drag.file else DragPoints.parse(list(cfg.drag.points))


def drag_points(cfg: EditConfig, scene, gaussians):
    """The drag's points in the fit's normalised frame; a one-line error for a point beyond the scene's Gaussians
    (1.5 x the sphere around 95% of them), named as the user wrote it."""
    from ..editing.drag_points import DragPoints
    from ..scenes.base import apply_similarity

    given = read_drag_points(cfg)
    points = given
    if cfg.region_frame == "scene":
        move = lambda p: apply_similarity(scene.transform, p).float()  # noqa: E731
        points = DragPoints(move(given.handles), move(given.targets))
    bounds = scene_sphere(gaussians)
    points.check_inside(bounds.centre.cpu(), 1.5 * bounds.radius, "the scene's Gaussians", given=given)
    return points


def bounding_sphere(points: torch.Tensor, grow: float = 1.0) -> EditRegion:
    """The sphere centred on the points' bounding box that holds them all, its radius times `grow`."""
    centre = (points.min(0).values + points.max(0).values) / 2
    return EditRegion("sphere", centre, grow * (points - centre).norm(dim=-1).max().reshape(1).clamp_min(1e-3))


def drag_context(cfg: EditConfig, scene, gaussians, selected: torch.Tensor, points) -> EditRegion:
    """The sphere the drag's cameras frame: `drag.context` if given, else the one around the dragged Gaussians and
    the targets, grown 2x (the teacher must see the part's surroundings)."""
    if cfg.drag.context is not None:
        region = EditRegion.parse(cfg.drag.context)
        return object_radius(region.transformed(scene.transform) if cfg.region_frame == "scene" else region)
    return bounding_sphere(
        torch.cat([gaussians.means.detach()[selected], points.targets.to(gaussians.means.device)]), 2
    )


def build_drag(cfg: EditConfig, points, scene, gaussians, selected, original, device, log):
    """(DragModel, Drag-SDS guidance, DragViews) of a drag edit (`points` in the normalised frame)."""
    from ..editing.drag_model import DragModel, DragViews
    from ..editing.drag_points import default_falloff, joint_motion, warp_offsets
    from ..priors import load_prior

    context = drag_context(cfg, scene, gaussians, selected, points)
    longest = points.longest_move
    start = start_quats = moved = None
    means, sel = gaussians.means.detach(), selected.to(gaussians.means.device)
    if cfg.drag.start == "warp":
        start = warp_offsets(means, sel, points, default_falloff(points))
        if cfg.drag.hint == "start":
            moved = copy.deepcopy(original.gaussians)
            moved.means.data = moved.means.detach().index_put((sel.nonzero().reshape(-1),), means[sel] + start)
    elif cfg.drag.start == "joint":
        motion = joint_motion(means, sel, points)
        start, start_quats = motion.apply(means[sel]) - means[sel], motion.turn_quats(gaussians.quats.detach()[sel])
        log(f"drag: starts from the part {'turned about its joint' if motion.kind == 'turn' else 'shifted'}")
        if cfg.drag.hint == "start":
            moved = motion.moved(original.gaussians, selected)
    model = DragModel(
        gaussians,
        selected,
        context,
        cfg.trainer.steps,
        cfg.drag.scaffold,
        cfg.drag.lr,
        cfg.drag.ring_k,
        cfg.drag.lambda_reg,
        max_move=cfg.drag.max_move * longest if cfg.drag.max_move and longest > 0 else None,
        start=start,
        start_quats=start_quats,
    ).to(device)
    log(
        f"drag: {len(points)} point pair(s), {len(model.mask_index)} masked and {len(model.ring_index)} ring "
        f"Gaussians, cameras around {context}; "
        + (
            f"Gaussians learn from step {model.k_tri}"
            if cfg.drag.lr.learns_gaussians
            else f"only the field learns (x0.1 from step {model.k_tri})"
        )
    )
    guidance = method_guidance(cfg, load_prior(cfg.prior, device=device))
    views = DragViews(original.gaussians, selected, context, points, cfg, cfg.drag.depth_tolerance, moved)
    return model, guidance, views


def edit_selection(cfg: EditConfig, scene, gaussians) -> tuple[torch.Tensor, EditRegion]:
    """The Gaussians an edit may change (N,) and the region (normalised frame) the edit cameras frame."""
    if cfg.region is not None and cfg.region.startswith("view:"):
        return lift_view_mask(scene, gaussians, cfg.region)
    region = edit_region(cfg, scene, gaussians)
    return region.contains(gaussians.means.detach()), region


def scene_sphere(gaussians) -> EditRegion:
    """The sphere around the Gaussians' median centre holding 95% of them (normalised frame)."""
    means = gaussians.means.detach()
    centre = means.median(0).values
    return EditRegion("sphere", centre, (means - centre).norm(dim=-1).quantile(0.95).reshape(1))


def edit_region(cfg: EditConfig, scene, gaussians) -> EditRegion:
    """The configured region in the fit's normalised frame; no region = a sphere around every Gaussian."""
    if cfg.region is None:
        return scene_sphere(gaussians)
    region = EditRegion.parse(cfg.region)
    return region.transformed(scene.transform) if cfg.region_frame == "scene" else region


PREVIEW_VIEWS = 4  # captured views in an edit preview


def edit_preview(fit_dir, scene, region: EditRegion, original: RegionModel, views, cfg: EditConfig) -> dict:
    """What renders/edit_*.png shows, fixed for the run: up to PREVIEW_VIEWS captured views that see the edit
    region, at the size the source fit trained them at (the default fit's for an edited 3DGS file) on its
    background, as {"cams", "size", "rows": photos and unedited renders, "whole": True, "background"}. A scene
    without captured views (a 3DGS file) falls back to four edit cameras around the region at twice the edit's
    training resolution, rendering the region alone ({"rows": its unedited renders, "whole": False})."""
    from .fit import FitConfig, eval_background
    from .loading import load_run_config_only, scene_source

    with torch.no_grad():
        if not len(scene.image_paths):
            cams = views.cameras(torch.Generator().manual_seed(1234), PREVIEW_VIEWS)
            size = (cfg.trainer.resolution * 2,) * 2
            rows = original.render(cams, *size)["rgb"].cpu().clamp(0, 1)
            return {"cams": cams, "size": size, "rows": rows, "whole": False, "background": {}}
        fit_cfg = scene_source(load_run_config_only(fit_dir))[0] if (Path(fit_dir) / "config.yaml").is_file() else None
        fit_cfg = fit_cfg or FitConfig()
        background = {} if eval_background(fit_cfg) is None else {"background": eval_background(fit_cfg)}
        xy, depth = project_points(region.centre.reshape(1, 3).float().cpu(), scene.cameras(), 1, 1)  # image fractions
        sees = (depth[:, 0] > 0) & (xy[:, 0] >= 0).all(-1) & (xy[:, 0] <= 1).all(-1)
        candidates = [i for i in range(len(scene.image_paths)) if sees[i]] or list(range(len(scene.image_paths)))
        candidates = [i for i in candidates if tuple(scene.sizes[i]) == tuple(scene.sizes[candidates[0]])]
        n = min(PREVIEW_VIEWS, len(candidates))
        picked = [candidates[round(j * (len(candidates) - 1) / max(1, n - 1))] for j in range(n)]
        size = fit_cfg.resolution_rule().size(scene, picked[0])
        cams = scene.cameras(picked)
        photos = scene.load_images(picked, *size)[0]
        before = original.gaussians.render(cams, *size, perturb=False, **background)["rgb"].cpu().clamp(0, 1)
    return {"cams": cams, "size": size, "rows": torch.cat([photos, before]), "whole": True, "background": background}


def write_edit_preview(run, model: RegionModel, preview: dict, step: int, name: str | None = None) -> None:
    """renders/edit_XXXXXX.png (edit.png at the end): the captured photos (top row), the scene before the edit
    (middle) and now (bottom), from the same captured views at the fit's training size (`edit_preview`); for a
    scene without captured views, the region alone before (top) and now (bottom) from edit cameras."""
    from ..utils.images import make_grid, save_image

    with torch.no_grad():
        drawn = model.gaussians if preview["whole"] and isinstance(model, RegionModel) else model
        now = drawn.render(preview["cams"], *preview["size"], perturb=False, **preview["background"])["rgb"]
    grid = make_grid(torch.cat([preview["rows"], now.cpu().clamp(0, 1)]), nrow=len(preview["cams"]))
    save_image(grid, run.dir / "renders" / (name or f"edit_{step:06d}.png"))


__all__ = ["EditConfig", "EDIT_METHODS", "edit", "EditRegion", "RegionModel"]
