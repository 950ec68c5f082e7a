"""`t3d edit`: text edits of a reconstructed scene (Gaussians). The edit region (a box or sphere) holds the only
Gaussians that may change; edit cameras orbit it and render just those Gaussians on white, which is what a
text-to-image prior knows (one object, centred). Methods: `dds` (Delta Denoising Score against the unedited
render), `sds` (SDS toward the target prompt + a parameter-space preservation term, Vox-E's idea), `in2n`
(Instruct-NeRF2NeRF's Iterative Dataset Update: photometric training on edit views that are re-edited in 2D)."""
from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from .. import native as native_kernels
from ..cameras import Cameras, sample_orbit
from ..config import load_config, packaged_config, save_config
from ..errors import ConfigError, ThreeDistillError
from ..guidance import GUIDANCE
from ..registry import Registry
from ..renderers.gaussian_raster import rasterize
from ..trainer import CameraRange, Trainer, TrainerConfig
from .dds import DDSConfig, DDSGuidance
from .in2n import In2NConfig, In2NObjective, build_in2n
from .lift import lift_view_mask, parse_view_mask
from .region import EditRegion

EDIT_METHODS: Registry = Registry("edit_method")
EDIT_METHODS.register("dds")(DDSGuidance)
EDIT_METHODS.register("sds")(GUIDANCE.get("sds"))
EDIT_METHODS.register("in2n")(In2NObjective)


@dataclass
class EditLearningRates:
    """Adam learning rates of the edited Gaussians (numbers or schedules): colours move fast enough to turn red
    into blue within a few hundred steps, positions slowly so the object keeps its place."""

    means: Any = 5.0e-4
    log_scales: Any = 5.0e-3
    quats: Any = 1.0e-3
    opacity_logits: Any = 2.0e-2
    sh: Any = 2.0e-2


@dataclass
class EditGuidanceConfig(DDSConfig):
    """The teacher settings of every edit method (DDS's, shared) and in2n's optional InstructPix2Pix teacher."""

    instruct_pix2pix: Optional[str] = None  # in2n: a local diffusers InstructPix2Pix directory (replaces `prior`)
    image_guidance_scale: float = 1.5  # in2n with InstructPix2Pix: s_I (guidance_scale is s_T)


@dataclass
class EditConfig:
    source: str = ""  # a `t3d fit` run, a captured-scene folder (fitted first) or a 3DGS point_cloud.ply (edited as is)
    prompt: str = ""  # what the edited region should show, e.g. "a blue cube"
    source_prompt: str = ""  # what it shows now (DDS), e.g. "a red cube"
    method: str = "dds"
    # Where the edit may act: box:cx,cy,cz,hx,hy,hz or sphere:cx,cy,cz,r (see region_frame), or view:NAME:MASK.png
    # (a 2D mask drawn on captured view NAME, lifted to the Gaussians it covers); None = the whole scene.
    region: Optional[str] = None
    region_frame: str = "scene"  # scene: the capture's own coordinates; normalised: the fit's unit frame
    prior: Optional[str] = None
    device: str = "auto"
    native: Optional[str] = None
    out: str = "outputs"
    export: list = field(default_factory=lambda: ["ply"])
    view_distance: float = 2.9  # edit cameras stand this many region radii from its centre (the prior's framing)
    lambda_preserve: float = 0.0  # L2 pull of the region's Gaussians toward their unedited values
    lr: EditLearningRates = field(default_factory=EditLearningRates)
    max_scale_growth: Optional[float] = 1.0  # edited Gaussians may shrink but grow at most this much; null = free
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        steps=300, resolution=32, cameras=CameraRange(elevation=[0.0, 45.0], radius=[1.0, 1.0], fovy=[40.0, 40.0])))
    guidance: EditGuidanceConfig = field(default_factory=EditGuidanceConfig)
    in2n: In2NConfig = field(default_factory=In2NConfig)  # method in2n: its edit dataset and updates

    def __post_init__(self):
        EDIT_METHODS.get(self.method)  # one-line error naming the known methods
        if self.region_frame not in ("scene", "normalised"):
            raise ConfigError(f"region_frame must be scene or normalised, got {self.region_frame!r}")
        if self.region is not None:
            parse_view_mask(self.region) if self.region.startswith("view:") else EditRegion.parse(self.region)
        if self.view_distance <= 0 or self.lambda_preserve < 0:
            raise ConfigError("view_distance must be positive and lambda_preserve >= 0")
        if self.guidance.instruct_pix2pix and self.method != "in2n":
            raise ConfigError(f"guidance.instruct_pix2pix is used by method in2n only (method is {self.method})")


class RegionModel(torch.nn.Module):
    """The scene's Gaussians seen through the edit region: renders only the selected Gaussians, so only they get
    gradients (the rest of the scene stays exactly as it was); checkpoints hold the whole scene."""

    def __init__(self, gaussians, selected: torch.Tensor, lambda_preserve: float = 0.0,
                 lr: EditLearningRates | None = None, max_scale_growth: float | None = None):
        super().__init__()
        self.gaussians, self.lambda_preserve, self.lr = gaussians, lambda_preserve, lr or EditLearningRates()
        self.max_scale_growth = max_scale_growth
        self.register_buffer("selected", selected)
        self.original = {n: getattr(gaussians, n).detach()[selected].clone() for n in ("means", "sh", "log_scales",
                                                                                       "opacity_logits")}

    @property
    def device(self):
        return self.gaussians.device

    def param_groups(self) -> list[dict]:
        return [{**group, "lr": getattr(self.lr, group["name"])} for group in self.gaussians.param_groups()]

    def state_dict(self, *args, **kwargs):
        return self.gaussians.state_dict(*args, **kwargs)

    def load_tensors(self, state) -> None:
        from ..representations.convert import load_model_state

        load_model_state(self.gaussians, state)

    def render(self, cameras: Cameras, height: int, width: int, generator=None, geometry: bool = False,
               perturb: bool = True, background=None) -> dict:
        g, s = self.gaussians, self.selected
        return rasterize(g.means[s], g.scales[s], g.quats[s], g.opacities[s], g.sh[s], cameras.to(g.device), height,
                         width, background, geometry=geometry)

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep every edited Gaussian at most `max_scale_growth` times its unedited size: score gradients otherwise
        blow Gaussians up into a haze that spills over the rest of the scene."""
        if self.max_scale_growth:
            g, s = self.gaussians, self.selected
            cap = self.original["log_scales"].to(g.device) + math.log(self.max_scale_growth)
            g.log_scales[s] = torch.minimum(g.log_scales[s], cap)

    def regularization_losses(self) -> dict[str, torch.Tensor]:
        if not self.lambda_preserve:
            return {}
        g, s = self.gaussians, self.selected
        drift = sum(((getattr(g, n)[s] - v) ** 2).mean() for n, v in self.original.items())
        return {"reg_preserve": self.lambda_preserve * drift}


class RegionViews:
    """Edit cameras orbiting the region at `view_distance` radii; each comes with the unedited region's render
    (`source`, DDS's reference)."""

    def __init__(self, original: RegionModel, region: EditRegion, cfg: EditConfig, with_source: bool = True):
        self.original, self.region, self.cfg, self.with_source = original, region, cfg, with_source
        self.image_size = (cfg.trainer.resolution, cfg.trainer.resolution)

    def cameras(self, generator: torch.Generator, n: int) -> Cameras:
        c, r = self.cfg.trainer.cameras, self.cfg.view_distance * self.region.radius
        cams = sample_orbit(generator, n, tuple(c.azimuth), tuple(c.elevation), (r * c.radius[0], r * c.radius[1]),
                            tuple(c.fovy))
        cams.c2w[:, :3, 3] += self.region.centre
        return cams

    def sample(self, generator: torch.Generator, n: int) -> tuple[Cameras, dict]:
        cams = self.cameras(generator, n)
        if not self.with_source:
            return cams, {}
        with torch.no_grad():
            source = self.original.render(cams, *self.image_size)["rgb"]
        return cams, {"source": source}


def object_radius(region: EditRegion) -> EditRegion:
    """The region re-expressed for framing: its largest half size (a box's diagonal would frame too loosely)."""
    if region.kind == "sphere":
        return region
    return EditRegion("sphere", region.centre, region.size.max().reshape(1))


def load_source(source: str | Path, log=print):
    """(what to edit: a fit run directory or a splat file/folder, the scene's path, its SceneData, Gaussians in the
    scene's normalised frame). A ready 3DGS point_cloud.ply (or a scene folder holding one) is edited as it is; a
    scene folder without one is fitted first."""
    from ..representations.gaussians import Gaussians
    from ..scenes import load_scene
    from ..scenes.fit import FitConfig, fit, load_fit_model

    path = Path(source)
    if not (path / "config.yaml").is_file():
        if not path.exists():
            raise ThreeDistillError(f"{path} does not exist; give a t3d fit run directory, a captured-scene folder "
                                    f"or a 3DGS point_cloud.ply")
        scene = load_scene(path)
        if scene.splats is not None:
            log(f"editing the 3D Gaussians of {path} ({len(scene.splats.means)} splats, SH degree "
                f"{scene.splats.sh_degree})")
            return path, path, scene, Gaussians.from_splats(scene.splats)
        log(f"{path} is a captured scene, not a fit run: fitting it first (t3d fit --scene {path})")
        path = fit(scene=str(path), log=log).dir
    fit_cfg = load_config(FitConfig, path / "config.yaml")
    if fit_cfg.representation != "gaussians":
        raise ThreeDistillError(f"{path} holds a {fit_cfg.representation}; t3d edit edits Gaussians scenes "
                                f"(refit with --representation gaussians)")
    return path, Path(fit_cfg.scene), load_scene(fit_cfg.scene), load_fit_model(path)


def edit_config_path(method: str) -> Path | None:
    path = packaged_config("edit", f"{method}.yaml")
    return path if path.is_file() else None


def method_guidance(cfg: EditConfig, prior):
    """The method's guidance with its config built from the edit config's shared guidance settings."""
    cls = EDIT_METHODS.get(cfg.method)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    values = {k: v for k, v in dataclasses.asdict(cfg.guidance).items() if k in fields}
    if "source_prompt" in fields:
        values["source_prompt"] = cfg.source_prompt
    return cls(prior, cls.config_class(**values))


def edit(source: str | Path | None = None, prompt: str | None = None, source_prompt: str | None = None,
         method: str | None = None, region: str | None = None, steps: int | None = None, seed: int | None = None,
         out: str | None = None, overrides=(), resume: str | Path | None = None, progress: bool = True,
         stop_at: int | None = None, log=print):
    """Edit a fitted scene with text; returns the Run (outputs/<scene>/edit-<method>@<time>/)."""
    from ..priors import load_prior
    from ..runs import Run, new_run_dir_at, option_overrides, resolve_device, saved_run_config, update_metrics
    from ..scenes.fit import export_scene_model, scene_slug

    if resume is not None:
        run_dir, cfg = saved_run_config(EditConfig, resume, overrides)
    else:
        overrides = list(overrides) + option_overrides(
            source=source or None, prompt=prompt or None, source_prompt=source_prompt or None, method=method,
            region=region, trainer__steps=steps, trainer__seed=seed, out=out)
        probe = load_config(EditConfig, None, [o for o in overrides if o.startswith("method=")])
        cfg = load_config(EditConfig, [p for p in [edit_config_path(probe.method)] if p], overrides)
        if not cfg.prompt.strip():
            raise ConfigError("the edit prompt is empty; say what the result should show, e.g. --prompt 'a blue cube'")
        if not cfg.source:
            raise ConfigError("no scene given; use --scene RUN_DIR (a t3d fit run) or a captured-scene folder")
    fit_dir, scene_path, scene, gaussians = load_source(cfg.source, log)
    if resume is None:
        cfg.source = str(fit_dir)
        run_dir = new_run_dir_at(Path(cfg.out) / scene_slug(str(scene_path)), f"edit-{cfg.method}")
    selected, the_region = edit_selection(cfg, scene, gaussians)
    if not selected.any():
        raise ThreeDistillError(f"the edit region {cfg.region} holds none of the scene's {len(gaussians)} Gaussians")
    log(f"edit region {the_region} (normalised frame) holds {int(selected.sum())} of {len(gaussians)} Gaussians")
    device = resolve_device(cfg.device)
    native_kernels.set_mode(cfg.native)
    torch.manual_seed(cfg.trainer.seed)
    original = RegionModel(copy.deepcopy(gaussians).requires_grad_(False), selected).to(device)
    model = RegionModel(gaussians, selected, cfg.lambda_preserve, cfg.lr, cfg.max_scale_growth).to(device)
    if cfg.method == "in2n":  # trains on a dataset of edit views (RegionViews' cameras) that it re-edits in 2D
        guidance, views = build_in2n(cfg, model, RegionViews(original, object_radius(the_region), cfg), device)
    else:
        guidance = method_guidance(cfg, load_prior(cfg.prior, device=device))
        wants_source = "source" in inspect.signature(guidance.gradient).parameters  # DDS-like methods
        views = RegionViews(original, object_radius(the_region), cfg, with_source=wants_source)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        save_config(cfg, run_dir / "config.yaml")
    trainer = Trainer(cfg.trainer, model, guidance, cfg.prompt, run_dir, log=log, views=views)
    if cfg.method == "in2n":
        views.draw(trainer.generator)  # the dataset's cameras come from the run's generator
    if resume is not None:
        trainer.load_checkpoint(run_dir)
        log(f"resuming {run_dir} at step {trainer.step}")
    run = Run(run_dir, cfg, gaussians, trainer)
    preview_cams = views.cameras(torch.Generator().manual_seed(1234), 4)
    started = time.time()
    trainer.fit(progress=progress, stop_at=stop_at, preview=lambda step: write_edit_preview(run, model, original,
                                                                                           preview_cams, step))
    if trainer.step == cfg.trainer.steps:
        gaussians.cpu()
        write_edit_preview(run, model.cpu(), original.cpu(), preview_cams, cfg.trainer.steps, name="edit.png")
        update_metrics(run_dir, {"edited_gaussians": int(selected.sum()), "region": str(the_region)},
                       add_seconds=time.time() - started)
        export_scene_model(gaussians, "gaussians", scene, cfg.export, run_dir, log)
    return run


def edit_selection(cfg: EditConfig, scene, gaussians) -> tuple[torch.Tensor, EditRegion]:
    """The Gaussians an edit may change (N,) and the region (normalised frame) the edit cameras frame."""
    if cfg.region is not None and cfg.region.startswith("view:"):
        return lift_view_mask(scene, gaussians, cfg.region)
    region = edit_region(cfg, scene, gaussians)
    return region.contains(gaussians.means.detach()), region


def edit_region(cfg: EditConfig, scene, gaussians) -> EditRegion:
    """The configured region in the fit's normalised frame; no region = a sphere around every Gaussian."""
    if cfg.region is None:
        means = gaussians.means.detach()
        centre = means.median(0).values
        return EditRegion("sphere", centre, (means - centre).norm(dim=-1).quantile(0.95).reshape(1))
    region = EditRegion.parse(cfg.region)
    return region.transformed(scene.transform) if cfg.region_frame == "scene" else region


def write_edit_preview(run, model: RegionModel, original: RegionModel, cams: Cameras, step: int,
                       name: str | None = None) -> None:
    """renders/edit_XXXXXX.png: the region before (top row) and now (bottom row) from fixed edit cameras."""
    from ..utils.images import save_image

    with torch.no_grad():
        size = run.trainer.cfg.resolution * 2
        before = original.render(cams, size, size)["rgb"]
        now = model.render(cams, size, size)["rgb"]
    save_image(torch.cat([before, now]).clamp(0, 1), run.dir / "renders" / (name or f"edit_{step:06d}.png"))


__all__ = ["EditConfig", "EDIT_METHODS", "edit", "EditRegion", "RegionModel"]
