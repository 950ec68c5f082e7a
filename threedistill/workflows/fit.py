"""`t3d fit`: reconstruct a captured scene from its posed images into Gaussians (or a NeRF) with a photometric
loss (L1 + D-SSIM, as 3DGS), through the same Trainer, checkpoints and resume as text-to-3D runs. Held-out
views give the reconstruction PSNR / SSIM written to metrics.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..config import load_config
from ..errors import ConfigError, ThreeDistillError
from ..representations.base import load_model_state
from ..representations.gaussians import Gaussians, GaussiansConfig
from ..representations.nerf import NeRFConfig
from ..scenes.views import PhotometricLoss, SceneViews, image_size
from ..session import Run, RunSession, run_config, slugify
from ..trainer import Trainer, TrainerConfig, model_tensors, read_checkpoint
from .generate import export_formats

FIT_REPRESENTATIONS = ("gaussians", "nerf")  # what `t3d fit` reconstructs a captured scene as


@dataclass
class FitConfig:
    scene: str = ""  # a captured scene: nerfstudio / Blender / COLMAP folder (see threedistill.scenes.load_scene)
    representation: str = "gaussians"  # gaussians or nerf (a NeRF holds only what lies in the unit sphere)
    resolution: int = 72  # training image height; the width keeps the images' aspect ratio
    lambda_dssim: float = 0.2  # loss = (1 - l) L1 + l (1 - SSIM) / 2 (3DGS)
    init_points: int = 20000  # at most this many scene points seed the Gaussians (random ball without points)
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
        if self.resolution < 8:
            raise ConfigError(f"resolution must be >= 8 pixels, got {self.resolution}")
        if not 0 <= self.lambda_dssim <= 1:
            raise ConfigError(f"lambda_dssim must be in [0, 1], got {self.lambda_dssim}")


def knn_scales(points: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """Each point's mean distance to its k nearest neighbours (N,), the 3DGS initial Gaussian size."""
    out = torch.empty(len(points))
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start : start + chunk], points)
        out[start : start + chunk] = d.topk(k + 1, largest=False).values[:, 1:].mean(-1)
    return out.clamp(1e-4, 0.2)


def build_model(cfg: FitConfig, scene, generator: torch.Generator, device: torch.device):
    """Gaussians seeded from the scene's points (colours and kNN sizes), or a NeRF, on `device`."""
    if cfg.representation == "nerf":
        from ..representations.nerf import NeRF

        return NeRF(cfg.nerf, generator=generator, device=device)
    if scene.points is None or len(scene.points) < 4:
        return Gaussians(cfg.gaussians, generator=generator, device=device)
    points, colours = scene.points, scene.point_colours
    if len(points) > cfg.init_points:
        keep = torch.randperm(len(points), generator=generator)[: cfg.init_points]
        points, colours = points[keep], None if colours is None else colours[keep]
    model = Gaussians.from_points(points, colours, cfg.gaussians)
    with torch.no_grad():
        model.log_scales.copy_(knn_scales(points.float()).log()[:, None].expand(-1, 3))
    return model.to(device)


@torch.no_grad()
def evaluate_views(model, scene, indices: list[int], height: int | None = None, batch: int = 4) -> dict:
    """PSNR (dB) and SSIM of the model's renders against the scene's images at `indices` (at the images' own
    size unless `height` is given), with the renders."""
    import kornia

    if not indices:
        return {"views": 0}
    size = image_size(scene, indices[0], height)
    images, _ = scene.load_images(indices, *size)
    cams = scene.cameras(indices)
    renders = torch.cat(
        [
            model.render(cams[i : i + batch].to(model.device), *size, geometry=False, perturb=False)["rgb"]
            .cpu()
            .clamp(0, 1)
            for i in range(0, len(indices), batch)
        ]
    )
    mse = ((renders - images) ** 2).flatten(1).mean(1)
    psnr = -10 * torch.log10(mse.clamp_min(1e-10))
    ssim = kornia.metrics.ssim(renders, images, window_size=11).flatten(1).mean(1)
    return {
        "views": len(indices),
        "psnr": round(float(psnr.mean()), 2),
        "ssim": round(float(ssim.mean()), 4),
        "psnr_min": round(float(psnr.min()), 2),
        "renders": renders,
        "images": images,
    }


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
) -> Run:
    """Reconstruct a captured scene; returns the Run (directory outputs/<scene>/fit-<representation>@<time>/)."""
    from ..scenes import load_scene

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
    )
    if resume is None and not cfg.scene:
        raise ConfigError(
            "--scene is missing; give a captured-scene folder (nerfstudio, Blender or COLMAP), e.g. --scene data/garden"
        )
    data = load_scene(cfg.scene)  # before the run directory: a bad scene leaves nothing behind
    if not data.image_paths:
        raise ThreeDistillError(f"{cfg.scene} has no images to fit (a .ply alone is already a reconstruction)")
    if resume is None:
        session = RunSession.start("fit", cfg, Path(cfg.out) / scene_slug(cfg.scene), f"fit-{cfg.representation}", log)
    else:
        session = RunSession.resume("fit", cfg, run_dir, log)
    device, gen = session.setup(cfg.device, cfg.native, cfg.trainer.seed)
    model = build_model(cfg, data, gen, device)
    views = SceneViews(data, data.train_indices, cfg.resolution, device)
    trainer = Trainer(cfg.trainer, model, PhotometricLoss(cfg.lambda_dssim), "", session.dir, log=log, views=views)
    session.restore(trainer)
    run = Run(session.dir, cfg, model, trainer, kind="fit")
    if session.train(
        trainer, progress=progress, stop_at=stop_at, preview=lambda step: write_fit_preview(run, data, step)
    ):
        model.cpu()
        metrics = fit_metrics(run, data)
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


def write_fit_preview(run, scene, step: int) -> None:
    """renders/val_XXXXXX.png: held-out renders (top) over the captured images (bottom)."""
    from ..utils.images import save_image

    res = evaluate_views(run.model, scene, scene.val_indices[:4] or scene.train_indices[:4])
    save_image(torch.cat([res["renders"], res["images"]]), run.dir / "renders" / f"val_{step:06d}.png")


def fit_metrics(run, scene) -> dict:
    """Held-out (and training) PSNR / SSIM for metrics.json, and a render grid of the held-out views."""
    from ..utils.images import save_image

    val = evaluate_views(run.model, scene, scene.val_indices)
    train = evaluate_views(run.model, scene, scene.train_indices[::4])
    if val.get("views"):
        save_image(torch.cat([val["renders"][:8], val["images"][:8]]), run.dir / "renders" / "val.png")
    strip = lambda r: {k: v for k, v in r.items() if k not in ("renders", "images")}  # noqa: E731
    values = {"val": strip(val), "train": strip(train)}
    if hasattr(run.model, "__len__"):
        values["num_points"] = len(run.model)
    return values
