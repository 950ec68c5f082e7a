"""`t3d fit`: reconstruct a captured scene from its posed images into Gaussians (or a NeRF) with a photometric
loss (L1 + D-SSIM, as 3DGS), through the same Trainer, checkpoints and resume as text-to-3D runs. Held-out
views give the reconstruction PSNR / SSIM written to metrics.json."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .. import native as native_kernels
from ..cameras import Cameras
from ..config import load_config, packaged_config, save_config
from ..errors import ConfigError, ThreeDistillError
from ..representations.gaussians import Gaussians, GaussiansConfig
from ..representations.nerf import NeRFConfig
from ..trainer import Trainer, TrainerConfig


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
        if self.representation not in ("gaussians", "nerf"):
            raise ConfigError(f"representation must be gaussians or nerf for t3d fit, got {self.representation!r}")
        if self.resolution < 8:
            raise ConfigError(f"resolution must be >= 8 pixels, got {self.resolution}")
        if not 0 <= self.lambda_dssim <= 1:
            raise ConfigError(f"lambda_dssim must be in [0, 1], got {self.lambda_dssim}")


class PhotometricLoss(torch.nn.Module):
    """The reconstruction objective in the guidance slot of the Trainer: L1 + D-SSIM against the captured images
    (pixels outside a view's mask are ignored)."""

    name = "photometric"

    def __init__(self, lambda_dssim: float = 0.2):
        super().__init__()
        self.lambda_dssim = lambda_dssim

    def prompt_state(self, prompt: str):
        return None

    def checkpoint_tensors(self) -> dict:
        return {}

    def load_checkpoint_tensors(self, tensors: dict) -> None:
        pass

    def forward(self, rgb: torch.Tensor, cameras: Cameras, prompt, step: int, generator=None, images=None,
                masks=None) -> dict[str, torch.Tensor]:
        import kornia

        weight = torch.ones_like(rgb[:, :1]) if masks is None else masks
        l1 = ((rgb - images).abs() * weight).sum() / (weight.sum() * rgb.shape[1]).clamp_min(1)
        ssim = kornia.metrics.ssim(rgb * weight, images * weight, window_size=7)
        dssim = (1 - ssim.mean()) / 2
        loss = (1 - self.lambda_dssim) * l1 + self.lambda_dssim * dssim
        return {"loss_photometric": loss, "l1": l1.detach(), "dssim": dssim.detach()}


def image_size(scene, index: int, height: int | None = None) -> tuple[int, int]:
    """(H, W) to render view `index` at: its stored size, or `height` rows keeping its aspect ratio."""
    w, h = (int(v) for v in scene.sizes[index])
    return (h, w) if height is None else (height, max(8, round(height * w / h)))


class SceneViews:
    """The training views of a scene, loaded once at the working resolution, drawn at random by the Trainer."""

    def __init__(self, scene, indices: list[int], height: int, device: torch.device):
        if not indices:
            raise ThreeDistillError("the scene has no training views")
        self.image_size = image_size(scene, indices[0], height)
        self.cameras = scene.cameras(indices).to(device)
        images, masks = scene.load_images(indices, *self.image_size)
        self.images = images.to(device)
        self.masks = None if masks is None else masks.to(device)

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, generator: torch.Generator, n: int) -> tuple[Cameras, dict]:
        idx = torch.randperm(len(self), generator=generator)[:n]
        targets = {"images": self.images[idx], "masks": None if self.masks is None else self.masks[idx]}
        return self.cameras[idx], targets


def knn_scales(points: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """Each point's mean distance to its k nearest neighbours (N,), the 3DGS initial Gaussian size."""
    out = torch.empty(len(points))
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start:start + chunk], points)
        out[start:start + chunk] = d.topk(k + 1, largest=False).values[:, 1:].mean(-1)
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
        keep = torch.randperm(len(points), generator=generator)[:cfg.init_points]
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
    renders = torch.cat([model.render(cams[i:i + batch].to(model.device), *size, geometry=False,
                                      perturb=False)["rgb"].cpu().clamp(0, 1) for i in range(0, len(indices), batch)])
    mse = ((renders - images) ** 2).flatten(1).mean(1)
    psnr = -10 * torch.log10(mse.clamp_min(1e-10))
    ssim = kornia.metrics.ssim(renders, images, window_size=11).flatten(1).mean(1)
    return {"views": len(indices), "psnr": round(float(psnr.mean()), 2), "ssim": round(float(ssim.mean()), 4),
            "psnr_min": round(float(psnr.min()), 2), "renders": renders, "images": images}


def load_fit_model(run_dir: Path):
    """The fitted model of a `t3d fit` run (its latest checkpoint), on the CPU."""
    from ..representations.convert import load_model_state
    from ..representations.nerf import NeRF
    from ..trainer import latest_checkpoint
    from safetensors.torch import load_file

    cfg = load_config(FitConfig, Path(run_dir) / "config.yaml")
    model = Gaussians(cfg.gaussians) if cfg.representation == "gaussians" else NeRF(cfg.nerf)
    stem, _ = latest_checkpoint(run_dir)
    try:
        tensors = load_file(str(stem.with_suffix(".safetensors")))
    except (OSError, ValueError) as err:
        raise ThreeDistillError(f"{run_dir}: checkpoint {stem.name} is unreadable ({err})") from None
    load_model_state(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    return model


def fit_config_path(representation: str) -> Path | None:
    path = packaged_config("fit", f"{representation}.yaml")
    return path if path.is_file() else None


def scene_slug(scene_path: str) -> str:
    from ..runs import slugify

    return slugify(Path(scene_path).resolve().name)


def fit(scene: str | Path | None = None, representation: str | None = None, steps: int | None = None,
        seed: int | None = None, out: str | None = None, overrides=(), resume: str | Path | None = None,
        progress: bool = True, stop_at: int | None = None, log=print):
    """Reconstruct a captured scene; returns the Run (directory outputs/<scene>/fit-<representation>@<time>/)."""
    from ..runs import Run, new_run_dir_at, option_overrides, resolve_device, saved_run_config
    from . import load_scene

    if resume is not None:
        run_dir, cfg = saved_run_config(FitConfig, resume, overrides)
    else:
        overrides = list(overrides) + option_overrides(scene=scene or None, representation=representation,
                                                       trainer__steps=steps, trainer__seed=seed, out=out)
        probe = load_config(FitConfig, None, [o for o in overrides if o.startswith("representation=")])
        cfg = load_config(FitConfig, [p for p in [fit_config_path(probe.representation)] if p], overrides)
        if not cfg.scene:
            raise ConfigError("no scene given; use --scene DIR (a nerfstudio, Blender or COLMAP folder)")
    data = load_scene(cfg.scene)  # before the run directory: a bad scene leaves nothing behind
    if not data.image_paths:
        raise ThreeDistillError(f"{cfg.scene} has no images to fit (a .ply alone is already a reconstruction)")
    if resume is None:
        run_dir = new_run_dir_at(Path(cfg.out) / scene_slug(cfg.scene), f"fit-{cfg.representation}")
    device = resolve_device(cfg.device)
    native_kernels.set_mode(cfg.native)
    torch.manual_seed(cfg.trainer.seed)
    gen = torch.Generator().manual_seed(cfg.trainer.seed)
    model = build_model(cfg, data, gen, device)
    views = SceneViews(data, data.train_indices, cfg.resolution, device)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        save_config(cfg, run_dir / "config.yaml")
    trainer = Trainer(cfg.trainer, model, PhotometricLoss(cfg.lambda_dssim), "", run_dir, log=log, views=views)
    if resume is not None:
        trainer.load_checkpoint(run_dir)
        log(f"resuming {run_dir} at step {trainer.step}")
    run = Run(run_dir, cfg, model, trainer)
    started = time.time()
    trainer.fit(progress=progress, stop_at=stop_at, preview=lambda step: write_fit_preview(run, data, step))
    if trainer.step == cfg.trainer.steps:
        model.cpu()
        write_fit_metrics(run, data, time.time() - started)
        export_scene_model(model, cfg.representation, data, cfg.export, run_dir, log)
    return run


def export_scene_model(model, representation: str, scene, formats, run_dir: Path, log=print) -> None:
    """Export a scene's model: splat formats (ply, splat, spz) in the capture's ORIGINAL frame, so they line up
    with the user's cameras and other tools; mesh formats in the normalised frame (said in the log)."""
    from ..export.run_export import SPLAT_FORMATS, default_export_path
    from ..export.splats import SplatParams
    from ..runs import export_formats
    from .normalize import transform_splats

    if representation == "gaussians":
        original = transform_splats(torch.linalg.inv(scene.transform.double()).numpy(), SplatParams.from_gaussians(model))
        for fmt in (f for f in formats if f in SPLAT_FORMATS):
            log(f"exported {SPLAT_FORMATS[fmt][1](original, default_export_path(run_dir, fmt))} (the capture's frame)")
    meshes = [f for f in formats if f not in SPLAT_FORMATS]
    if meshes:
        log("mesh exports of a scene are in the fit's normalised frame (see the run's scene transform)")
        export_formats(model, representation, meshes, run_dir, log)


def write_fit_preview(run, scene, step: int) -> None:
    """renders/val_XXXXXX.png: held-out renders (top) over the captured images (bottom)."""
    from ..utils.images import save_image

    res = evaluate_views(run.model, scene, scene.val_indices[:4] or scene.train_indices[:4])
    save_image(torch.cat([res["renders"], res["images"]]), run.dir / "renders" / f"val_{step:06d}.png")


def write_fit_metrics(run, scene, seconds: float) -> dict:
    """Held-out (and training) PSNR / SSIM into metrics.json, plus a render grid of the held-out views."""
    from ..runs import update_metrics
    from ..utils.images import save_image

    val = evaluate_views(run.model, scene, scene.val_indices)
    train = evaluate_views(run.model, scene, scene.train_indices[::4])
    if val.get("views"):
        save_image(torch.cat([val["renders"][:8], val["images"][:8]]), run.dir / "renders" / "val.png")
    strip = lambda r: {k: v for k, v in r.items() if k not in ("renders", "images")}  # noqa: E731
    values = {"val": strip(val), "train": strip(train)}
    if hasattr(run.model, "__len__"):
        values["num_points"] = len(run.model)
    return update_metrics(run.dir, values, add_seconds=seconds)
