"""`t3d fit`: reconstruct a captured scene from its posed images into Gaussians (or a NeRF) with a photometric
loss (L1 + D-SSIM, as 3DGS), through the same Trainer, checkpoints and resume as text-to-3D runs. Held-out
views give the reconstruction PSNR / SSIM written to metrics.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..config import load_config
from ..errors import ConfigError, ThreeDistillError
from ..representations.base import load_model_state
from ..representations.gaussians import Gaussians, GaussiansConfig
from ..representations.nerf import NeRFConfig
from ..scenes.views import PhotometricLoss, Resolution, SceneViews, background_colour, require_tracks
from ..session import Run, RunSession, peak_memory_gb, run_config, slugify
from ..trainer import Trainer, TrainerConfig, model_tensors, read_checkpoint
from ..utils.ssim import ssim_map
from .generate import export_formats
from .live_view import LiveViewerOptions, train_watched

FIT_REPRESENTATIONS = ("gaussians", "nerf")  # what `t3d fit` reconstructs a captured scene as


EVAL_RESOLUTIONS = ("train", "full")
# Densification and opacity resets end by this share of a fit's steps (2000 of the default 3000): an opacity reset
# later than that has too few steps left to recover, and one on the last step leaves a transparent model
REFINE_SHARE = 2 / 3


@dataclass
class FitConfig:
    scene: str = ""  # a captured scene: nerfstudio / Blender / COLMAP / LLFF folder (see scenes.load_scene)
    representation: str = "gaussians"  # gaussians or nerf (a NeRF holds only what lies in the unit sphere)
    # Working size of each view (its own aspect ratio always kept): `downscale` divides the photos' size, else
    # `resolution` sets the height, else the longer side shrinks to `max_side`.
    max_side: Optional[int] = 320
    downscale: Optional[float] = None
    resolution: Optional[int] = None
    eval_resolution: str = "train"  # held-out metrics at the training size, or "full" (the photos' own size)
    background: str = "white"  # render background while fitting: white, black or random (see SceneViews)
    mask_loss: bool = False  # ignore pixels outside the views' masks (else masked views fit the object alone)
    appearance: bool = False  # learn each training photo's exposure / white balance (a gain and offset per channel)
    lr_appearance: float = 1e-2
    lambda_dssim: float = 0.2  # loss = (1 - l) L1 + l (1 - SSIM) / 2 (3DGS)
    # > 0: a sparse depth loss, rendered against SfM disparity at the points each photo matched (COLMAP tracks;
    # gsplat's depth_loss, 1e-2 there), x the scene's extent
    lambda_depth: float = 0.0
    init_points: int = 20000  # at most this many scene points seed the Gaussians (random ones without points)
    init_scale: float = 1.0  # initial size: this x the mean distance to the 3 nearest points (3DGS 1, 3DGS-MCMC 0.1)
    # Gaussians seeded on a sphere around the scene for what SfM finds no points on (plain walls, sky): its radius
    # is `background_radius` x the farthest camera's distance from the scene's centre
    background_points: int = 0
    background_radius: float = 1.3
    # Gaussians seeded uniformly in a ball of `fill_radius` x the nearest camera's distance from the scene's centre,
    # in the photos' median colour: a start for what lies between the object and the cameras without SfM points
    # (the walls of a light box). nerfstudio's random initialisation, inside the cameras
    fill_points: int = 0
    fill_radius: float = 1.0
    device: str = "auto"
    native: Optional[str] = None
    out: str = "outputs"
    export: list = field(default_factory=lambda: ["ply"])
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    gaussians: GaussiansConfig = field(default_factory=GaussiansConfig)
    nerf: NeRFConfig = field(default_factory=NeRFConfig)

    def __post_init__(self):
        if self.representation not in FIT_REPRESENTATIONS:
            raise ConfigError(
                f"representation must be {' or '.join(FIT_REPRESENTATIONS)} for t3d fit, got {self.representation!r}"
            )
        self.resolution_rule()  # checks downscale, resolution and max_side
        if self.eval_resolution not in EVAL_RESOLUTIONS:
            raise ConfigError(f"eval_resolution must be train or full, got {self.eval_resolution!r}")
        background_colour(self.background)
        if self.background_points < 0:
            raise ConfigError(f"background_points must be 0 (none) or more, got {self.background_points}")
        if not self.background_radius > 1:
            raise ConfigError(f"background_radius must be above 1 (beyond the cameras), got {self.background_radius}")
        if self.fill_points < 0:
            raise ConfigError(f"fill_points must be 0 (none) or more, got {self.fill_points}")
        if not 0 < self.fill_radius <= 1:
            raise ConfigError(f"fill_radius must be in (0, 1] (inside the nearest camera), got {self.fill_radius}")
        if not 0 < self.init_scale <= 10:
            raise ConfigError(f"init_scale must be in (0, 10], got {self.init_scale}")
        if self.init_points < 1:
            raise ConfigError(f"init_points must be positive, got {self.init_points}")
        if not self.lr_appearance > 0:
            raise ConfigError(f"lr_appearance must be positive, got {self.lr_appearance}")
        if not 0 <= self.lambda_dssim <= 1:
            raise ConfigError(f"lambda_dssim must be in [0, 1], got {self.lambda_dssim}")
        if not 0 <= self.lambda_depth < float("inf"):
            raise ConfigError(f"lambda_depth must be 0 (off) or positive, got {self.lambda_depth}")

    def resolution_rule(self) -> Resolution:
        """How large each view is fitted and (with eval_resolution=train) evaluated."""
        return Resolution(downscale=self.downscale, height=self.resolution, max_side=self.max_side)

    def eval_rule(self) -> Resolution:
        return self.resolution_rule() if self.eval_resolution == "train" else Resolution()


def knn_scales(points: torch.Tensor, k: int = 3, chunk: int = 2048, clamp: float | None = 0.2) -> torch.Tensor:
    """Each point's mean distance to its k nearest neighbours (N,), the 3DGS initial Gaussian size (at most
    `clamp`)."""
    out = torch.empty(len(points))
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start : start + chunk], points)
        out[start : start + chunk] = d.topk(k + 1, largest=False).values[:, 1:].mean(-1)
    return out.clamp(1e-4, clamp)


def camera_extent(scene, indices=None) -> float:
    """3DGS's scene extent: 1.1 x the largest distance of a camera centre from the cameras' centroid (at least
    the cameras' mean distance from the origin for a single view or cameras that barely move)."""
    idx = list(range(len(scene))) if indices is None else list(indices)
    centres = scene.c2w[idx, :3, 3].double()
    spread = float((centres - centres.mean(0)).norm(dim=-1).max()) if len(centres) else 0.0
    return round(1.1 * max(spread, 0.1 * float(centres.norm(dim=-1).mean()) if len(centres) else 1.0, 1e-3), 6)


def random_points(scene, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(points, colours) for a capture without points (nerfstudio's random initialisation): uniform in the cube
    that holds every camera centre and the scene's centre, so backgrounds behind the object get Gaussians too."""
    centres = scene.c2w[:, :3, 3].float()
    half = float(centres.abs().max()) if len(centres) else 1.0
    points = (torch.rand(n, 3, generator=generator) * 2 - 1) * half
    return points, torch.rand(n, 3, generator=generator)


def fill_points(
    scene, n: int, radius: float, generator: torch.Generator, colour: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(points, colours): `n` points uniform in the ball of `radius` x the nearest camera's distance from the origin
    (the scene's centre), all of `colour` (3,)."""
    centres = scene.c2w[:, :3, 3].float()
    r = radius * (float(centres.norm(dim=-1).min()) if len(centres) else 1.0)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    points = direction * r * torch.rand(n, 1, generator=generator) ** (1 / 3)
    return points, colour.float().expand(n, 3).clone()


def shell_points(
    scene, n: int, radius: float, generator: torch.Generator, colour: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(points, colours): `n` points spread evenly (a Fibonacci sphere) at `radius` x the farthest camera's distance
    from the origin (the scene's centre), all of `colour` (3,): a place for backgrounds that SfM leaves without
    points, beyond every camera, so that no camera sees them from close by."""
    centres = scene.c2w[:, :3, 3].float()
    r = radius * (float(centres.norm(dim=-1).max()) if len(centres) else 1.0)
    k = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * k / n
    phi = k * math.pi * (3 - math.sqrt(5)) + float(torch.rand(1, generator=generator)) * 2 * math.pi
    ring = (1 - y**2).sqrt()
    points = torch.stack([ring * phi.cos(), y, ring * phi.sin()], -1).float() * r
    return points, colour.float().expand(n, 3).clone()


def median_colour(images: list[torch.Tensor]) -> torch.Tensor:
    """The median colour (3,) of up to 16 of `images` (each (3,H,W)), spread over the list."""
    picked = images[:: max(1, len(images) // 16)]
    return torch.cat([image.detach().cpu().flatten(1) for image in picked], 1).median(1).values


def build_model(cfg: FitConfig, scene, generator: torch.Generator, device: torch.device, views=None):
    """Gaussians seeded from the scene's points (colours and kNN sizes), else from random points in the
    cameras' bounds, plus `background_points` on a sphere beyond the cameras in the photos' median colour (taken
    from the loaded training `views`, else from the photos read small) unless the views have masks (then the
    object alone is fitted), plus `fill_points` inside the nearest camera in that colour; or a NeRF; on
    `device`."""
    if cfg.representation == "nerf":
        from ..representations.nerf import NeRF

        return NeRF(cfg.nerf, generator=generator, device=device)
    if scene.points is None or len(scene.points) < 4:
        if cfg.gaussians.strategy == "default":  # runs made before the capture strategy: a random ball
            return Gaussians(cfg.gaussians, generator=generator, device=device)
        points, colours = random_points(scene, cfg.init_points, generator)
    else:
        points, colours = scene.points, scene.point_colours
    if len(points) > cfg.init_points:
        keep = torch.randperm(len(points), generator=generator)[: cfg.init_points]
        points, colours = points[keep], None if colours is None else colours[keep]
    points, colours = points.float(), None if colours is None else colours.float()
    scales = knn_scales(points)
    shell = cfg.background_points > 0 and not (views is not None and views.has_masks)
    if shell or cfg.fill_points > 0:
        if views is not None:
            photos = views.images
        else:  # read small: up to 16 of the training photos
            picked = scene.train_indices[:: max(1, len(scene.train_indices) // 16)]
            photos = [scene.load_images([i], 32, 32)[0][0] for i in picked]
        colour = median_colour(photos)
        colours = torch.rand(points.shape, generator=generator) if colours is None else colours
        parts = [(points, colours, scales)]
        if shell:  # sizes unclamped: the shell's points lie far apart
            more, more_colours = shell_points(scene, cfg.background_points, cfg.background_radius, generator, colour)
            parts.append((more, more_colours, knn_scales(more, clamp=None)))
        if cfg.fill_points > 0:
            more, more_colours = fill_points(scene, cfg.fill_points, cfg.fill_radius, generator, colour)
            parts.append((more, more_colours, knn_scales(more)))
        points, colours, scales = (torch.cat(column) for column in zip(*parts))
    model = Gaussians.from_points(points, colours, cfg.gaussians)
    with torch.no_grad():
        model.log_scales.copy_((scales * cfg.init_scale).log()[:, None].expand(-1, 3))
    return model.to(device)


@torch.no_grad()
def evaluate_views(model, scene, indices: list[int], resolution: Resolution | None = None, background=None) -> dict:
    """PSNR (dB) and SSIM of the model's renders against the scene's images at `indices`, each view at the size
    `resolution` gives it (its stored size by default), one view at a time so memory stays bounded; with masks,
    also `masked_psnr` / `masked_ssim` over the pixels inside them (targets are composited on the background
    outside them, as in training). Pixels an undistorted photo has no source for are left out of every number.
    Returns the renders and images (lists: sizes differ) too."""
    if not indices:
        return {"views": 0}
    resolution = resolution or Resolution()
    bg = torch.ones(3) if background is None else background
    renders, images, psnr, ssim, masked_psnr, masked_ssim, cc_psnr, cc_ssim = [], [], [], [], [], [], [], []
    for i in indices:
        size = resolution.size(scene, i)
        image, mask, valid = scene.load_images([i], *size, split_valid=True)
        cam = scene.cameras([i]).to(model.device)
        render = model.render(cam, *size, geometry=False, perturb=False, **_background(background))["rgb"].cpu()
        render = render.clamp(0, 1)
        if mask is not None:
            image = image * mask + bg[None, :, None, None] * (1 - mask)
        keep = torch.ones_like(render[:, :1]) if valid is None else valid
        if valid is not None:  # nothing to compare outside the valid region: make both sides equal there
            render = render * valid + image * (1 - valid)
        error, similarity = (render - image) ** 2, ssim_map(render, image)
        psnr.append(_psnr((error * keep).sum() / (keep.sum() * 3).clamp_min(1)))
        ssim.append(float((similarity * keep).sum() / (keep.sum() * 3).clamp_min(1)))
        corrected = colour_corrected(render, image, keep)
        cc_psnr.append(_psnr((((corrected - image) ** 2) * keep).sum() / (keep.sum() * 3).clamp_min(1)))
        cc_ssim.append(float((ssim_map(corrected, image) * keep).sum() / (keep.sum() * 3).clamp_min(1)))
        if mask is not None and float((mask * keep).sum()) > 0:
            weight = (mask * keep).expand_as(render)
            masked_psnr.append(_psnr((error * weight).sum() / weight.sum()))
            inside = ssim_map(render * mask + image * (1 - mask), image)  # windows see no error from outside
            masked_ssim.append(float((inside * weight).sum() / weight.sum()))
        renders.append(render[0])
        images.append(image[0])
    out = {
        "views": len(indices),
        "psnr": round(sum(psnr) / len(psnr), 2),
        "ssim": round(sum(ssim) / len(ssim), 4),
        "psnr_min": round(min(psnr), 2),
        "cc_psnr": round(sum(cc_psnr) / len(cc_psnr), 2),
        "cc_ssim": round(sum(cc_ssim) / len(cc_ssim), 4),
        "size": list(resolution.size(scene, indices[0])),
        # each view's own numbers: a mean hides the one view that holds it down
        "per_view": [
            {"view": i, "psnr": round(a, 2), "cc_psnr": round(b, 2)} for i, a, b in zip(indices, psnr, cc_psnr)
        ],
    }
    if masked_psnr:
        out["masked_psnr"] = round(sum(masked_psnr) / len(masked_psnr), 2)
        out["masked_ssim"] = round(sum(masked_ssim) / len(masked_ssim), 4)
    return {**out, "renders": renders, "images": images}


def colour_corrected(render: torch.Tensor, image: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The render (1,3,H,W) after the affine colour transform (3x3 + 3) that best maps it onto the photo in the
    least-squares sense over the `keep` pixels, clamped to [0, 1]: the colour-corrected metrics of Mip-NeRF 360 /
    Zip-NeRF, which score geometry and texture apart from a held-out photo's own exposure and white balance."""
    x = render[0].reshape(3, -1).T.double()
    y = image[0].reshape(3, -1).T.double()
    w = keep[0].reshape(-1, 1).double()
    a = torch.cat([x, torch.ones_like(x[:, :1])], 1)
    if float(w.sum()) < 8:
        return render
    sol = torch.linalg.lstsq(a * w, y * w).solution  # (4, 3)
    out = (a @ sol).T.reshape_as(render[0])[None]
    return out.clamp(0, 1).to(render.dtype)


def _psnr(mse: torch.Tensor) -> float:
    return float(-10 * torch.log10(mse.clamp_min(1e-10)))


def _background(background: torch.Tensor | None) -> dict:
    return {} if background is None else {"background": background}


def side_by_side(renders: list[torch.Tensor], images: list[torch.Tensor], height: int = 256) -> torch.Tensor:
    """One image (3,H,W): each view's render beside its photo (ours | photo), views one under the other, all
    scaled to `height` rows per view and padded to the widest pair."""
    import torch.nn.functional as F

    rows = []
    for render, image in zip(renders, images):
        pair = torch.cat([render, image], -1)[None]
        width = max(2, round(pair.shape[-1] * height / pair.shape[-2]))
        rows.append(F.interpolate(pair, size=(height, width), mode="area" if pair.shape[-2] > height else "bilinear"))
    widest = max(r.shape[-1] for r in rows)
    rows = [F.pad(r, (0, widest - r.shape[-1]), value=1.0) for r in rows]
    return torch.cat(rows, -2)[0]


def load_fit_model(run_dir: Path, cfg: FitConfig | None = None):
    """The fitted model of a `t3d fit` run (its latest checkpoint), on the CPU."""
    from ..representations.nerf import NeRF

    cfg = cfg or load_config(FitConfig, Path(run_dir) / "config.yaml")
    model = Gaussians(cfg.gaussians) if cfg.representation == "gaussians" else NeRF(cfg.nerf)
    load_model_state(model, model_tensors(read_checkpoint(run_dir)[0]))
    return model


def scene_slug(scene_path: str) -> str:
    return slugify(Path(scene_path).resolve().name)


def fit(
    scene: str | Path | None = None,
    representation: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    out: str | None = None,
    overrides=(),
    resume: str | Path | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    log=print,
    viewer: LiveViewerOptions | None = None,
    **options,
) -> Run:
    """Reconstruct a captured scene; returns the Run (directory outputs/<scene>/fit-<representation>@<time>/).
    `options` are FitConfig fields given as command-line options (downscale, max_side, resolution,
    eval_resolution, background, mask_loss; None = not given); `viewer` shows the fit live (`live_view`)."""
    from ..scenes import check_images, load_scene

    run_dir, cfg = run_config(
        FitConfig,
        "fit",
        "representation",
        resume,
        overrides,
        scene=scene or None,
        representation=representation,
        trainer__steps=steps,
        trainer__seed=seed,
        out=out,
        **{k: (str(v).lower() if isinstance(v, bool) else v) for k, v in options.items()},
    )
    if resume is None and not cfg.scene:
        raise ConfigError(
            "--scene is missing; give a captured-scene folder (nerfstudio, Blender or COLMAP), e.g. --scene data/garden"
        )
    if resume is None:  # absolute: edits and renders of this run read the scene from other folders
        cfg.scene = str(Path(cfg.scene).expanduser().resolve())
    data = load_scene(cfg.scene)  # before the run directory: a bad scene leaves nothing behind
    if not data.image_paths:
        raise ThreeDistillError(f"{cfg.scene} has no images to fit (a .ply alone is already a reconstruction)")
    check_images(data)  # every image decodes (a few unreadable views are left out with a warning)
    if cfg.lambda_depth > 0:
        require_tracks(data, cfg.scene)
    if resume is None and not any(o.partition("=")[0].strip() == "gaussians.scene_scale" for o in overrides):
        cfg.gaussians.scene_scale = camera_extent(data, data.train_indices)
    name = cfg.gaussians.strategy if cfg.gaussians.strategy in ("capture", "mcmc") else "capture"
    schedule = getattr(cfg.gaussians, name)  # the photograph strategy's refinement window
    chosen = any(o.partition("=")[0].strip() == f"gaussians.{name}.refine_stop" for o in overrides)
    if resume is None and not chosen:
        stop = int(cfg.trainer.steps * REFINE_SHARE)
        if schedule.refine_stop > stop:  # a shorter fit than the schedule was written for
            what = "densification and opacity resets" if name == "capture" else "relocation and growth"
            log(f"{what} stop at step {stop} ({REFINE_SHARE:.0%} of the fit's steps)")
            schedule.refine_stop = stop
    if resume is None and cfg.representation == "gaussians" and schedule.refine_start >= schedule.refine_stop:
        # compressing the schedule into 300 steps lost 3-9 dB held-out on a real capture (docs/benchmarks/fit.md)
        log(
            f"note: no densification in this {cfg.trainer.steps}-step fit (it would start at step "
            f"{schedule.refine_start}, gaussians.{name}.refine_start): the number of Gaussians stays as initialised"
        )
    if resume is None:
        session = RunSession.start("fit", cfg, Path(cfg.out) / scene_slug(cfg.scene), f"fit-{cfg.representation}", log)
    else:
        session = RunSession.resume("fit", cfg, run_dir, log)
    with session:
        device, gen = session.setup(cfg.device, cfg.native, cfg.trainer.seed)
        depth = cfg.lambda_depth > 0
        views = SceneViews(data, data.train_indices, cfg.resolution_rule(), device, cfg.background, depth_points=depth)
        model = build_model(cfg, data, gen, device, views)
        objective = PhotometricLoss(
            cfg.lambda_dssim,
            masked=cfg.mask_loss,
            appearance_views=len(data.train_indices) if cfg.appearance else 0,
            lr_appearance=cfg.lr_appearance,
            lambda_depth=cfg.lambda_depth,
            depth_scale=cfg.gaussians.scene_scale,
        )
        trainer = Trainer(cfg.trainer, model, objective, "", session.dir, log=log, views=views)
        session.restore(trainer)
        run = Run(session.dir, cfg, model, trainer, kind="fit")
        finished = train_watched(
            session,
            trainer,
            model,
            viewer=viewer,
            scene=data,
            progress=progress,
            stop_at=stop_at,
            preview=lambda step: write_fit_preview(run, data, step),
            log=log,
        )
        if finished:
            model.cpu()
            metrics = {**fit_metrics(run, data), "peak_memory_gb": peak_memory_gb()}
            export_scene_model(model, cfg.representation, data, cfg.export, session.dir, log)
            session.finish(metrics)
    return run


def export_scene_format(
    model,
    representation: str,
    scene,
    fmt: str,
    out: Path,
    faces: int = 20000,
    texture_size: int = 1024,
    log=lambda s: None,
) -> Path:
    """Write a scene's model as `fmt` to `out`: splat formats (ply, splat, spz) in the capture's ORIGINAL frame, so
    they line up with the user's cameras and other tools; mesh formats in the fit's normalised frame."""
    from ..export.run_export import SPLAT_FORMATS, export_model
    from ..export.splats import SplatParams
    from ..scenes.normalize import transform_splats

    if fmt in SPLAT_FORMATS and representation == "gaussians":
        original = transform_splats(
            torch.linalg.inv(scene.transform.double()).numpy(), SplatParams.from_gaussians(model)
        )
        return SPLAT_FORMATS[fmt][1](original, Path(out))
    return export_model(model, representation, fmt, out, faces, texture_size, log)


def export_scene_model(model, representation: str, scene, formats, run_dir: Path, log=print) -> None:
    """The automatic exports of a finished fit or edit into RUN_DIR/export/ (see `export_scene_format`); splat
    formats only for Gaussians; a failed mesh export is a warning, the run stays saved."""
    from ..export.run_export import SPLAT_FORMATS, default_export_path

    if representation == "gaussians":
        for fmt in (f for f in formats if f in SPLAT_FORMATS):
            path = export_scene_format(model, representation, scene, fmt, default_export_path(run_dir, fmt))
            log(f"exported {path} (the capture's frame)")
    meshes = [f for f in formats if f not in SPLAT_FORMATS]
    if meshes:
        log("mesh exports of a scene are in the fit's normalised frame (see the run's scene transform)")
        export_formats(model, representation, meshes, run_dir, log)


def eval_background(cfg: FitConfig) -> torch.Tensor | None:
    """The background held-out views are rendered and composited on: black for a black fit, else white."""
    return torch.zeros(3) if cfg.background == "black" else None


def write_fit_preview(run, scene, step: int) -> None:
    """renders/val_XXXXXX.png (held-out renders beside their photos) and a line of held-out PSNR / SSIM at this
    step in eval.jsonl, so a fit's quality can be followed over its steps."""
    import json

    from ..utils.images import save_image

    cfg = run.config
    indices = scene.val_indices or scene.train_indices[:4]
    res = evaluate_views(run.model, scene, indices, cfg.resolution_rule(), eval_background(cfg))
    save_image(side_by_side(res["renders"][:4], res["images"][:4], 160), run.dir / "renders" / f"val_{step:06d}.png")
    keys = ("psnr", "ssim", "cc_psnr", "masked_psnr", "masked_ssim")
    record = {"step": step, **{k: res[k] for k in keys if k in res}}
    if hasattr(run.model, "__len__"):
        record["num_points"] = len(run.model)
    with (run.dir / "eval.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def fit_metrics(run, scene) -> dict:
    """Held-out (and training) PSNR / SSIM for metrics.json, at the training size unless the run asks for the
    photos' full size, and renders/val.png: up to 8 held-out renders beside their photos."""
    from ..utils.images import save_image

    cfg = run.config
    rule, bg = cfg.eval_rule(), eval_background(cfg)
    val = evaluate_views(run.model, scene, scene.val_indices, rule, bg)
    train = evaluate_views(run.model, scene, scene.train_indices[::4], rule, bg)
    if val.get("views"):
        save_image(side_by_side(val["renders"][:8], val["images"][:8]), run.dir / "renders" / "val.png")
    strip = lambda r: {k: v for k, v in r.items() if k not in ("renders", "images")}  # noqa: E731
    values = {"val": strip(val), "train": strip(train), "eval_resolution": cfg.eval_resolution}
    if hasattr(run.model, "__len__"):
        values["num_points"] = len(run.model)
    return values
