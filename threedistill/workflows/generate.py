"""Runs of text to 3D: builds prior, guidance, representation and trainer from one typed config, manages the run
directory (outputs/<prompt-slug>/<method>@<timestamp>/), resumes, and writes previews. The CLI's
`t3d generate` and the Python API `threedistill.generate(...)` both land here."""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import torch

from .. import native as native_kernels
from ..config import absolute_path, absolute_paths, load_config, packaged_config, peek_key
from ..errors import ConfigError, ThreeDistillError
from ..guidance import GUIDANCE, GuidanceConfig
from ..priors.base import check_precision, precision_name
from ..prompting import check_prompt
from ..representations import REPRESENTATIONS
from ..representations.base import Representation
from ..representations.gaussians import GaussiansConfig
from ..representations.mesh import MeshConfig
from ..representations.nerf import NeRFConfig
from ..representations.triplane import TriplaneConfig
from ..rewards import ReferenceConfig, RewardConfig, reference_term, reward_term
from ..rewards.orientation import OrientationConfig, orientation_check
from ..session import Run, RunSession, check_device_name, expect_run_kind, resolve_device, slugify
from ..trainer import Trainer, TrainerConfig, latest_checkpoint
from .handover import hand_over
from .live_view import LiveViewerOptions, on_step, watching


@dataclass
class StageConfig:
    """One stage of a multi-stage run: its length and the `key=value` overrides that turn the run's config into
    this stage's (e.g. another prior, guidance method, resolution or schedule; schedules count the stage's own
    steps). A stage that changes `guidance_type` starts its guidance section from that method's defaults."""

    name: str = ""
    steps: int = 100
    overrides: list = field(default_factory=list)

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"stages: stage {self.name or '?'} has steps={self.steps}; each stage needs >= 1 step")


@dataclass
class GenerateConfig:
    prompt: str = ""
    representation: str = "gaussians"
    guidance_type: str = "sds"
    prior: Optional[str] = None  # local diffusers directory; None = the embedded toy prior
    # The type the prior's network computes in: auto (bfloat16 on a CPU with native bfloat16 instructions, where
    # it takes about a quarter off each step; float32 elsewhere), float32 or bfloat16. Renders, gradients and the
    # representation stay float32 (docs/benchmarks/performance.md has the measurements).
    prior_precision: str = "auto"
    # A small prior's UNet on the CPU runs through a traced graph, its batch split over the threads, where no
    # gradient is needed (priors/graph.py): the same numbers in bfloat16, about 1.3x faster per call; false calls it
    # directly.
    prior_graph: bool = True
    # Where optimisation runs: auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or cuda:N. Random numbers
    # are always drawn on the CPU from the run's seed; exports, previews and evaluation run on the CPU.
    device: str = "auto"
    # CPU kernels: auto (native C++ kernels, built on first use, else PyTorch), native (required) or torch;
    # None follows $THREEDISTILL_NATIVE (default auto). See threedistill/native.py.
    native: Optional[str] = None
    out: str = "outputs"
    # Written into RUN_DIR/export/ when the run finishes: mesh formats (glb, obj) and, for Gaussians, splat
    # formats (ply, splat, spz, compressed.ply); `viewer`: export/viewer.html, the run as one HTML page (after the
    # others, so it shows the glb); [] for none. `t3d export` and `t3d view` write any of them later.
    export: list = field(default_factory=lambda: ["glb", "ply", "viewer"])
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    nerf: NeRFConfig = field(default_factory=NeRFConfig)
    triplane: TriplaneConfig = field(default_factory=TriplaneConfig)
    gaussians: GaussiansConfig = field(default_factory=GaussiansConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    # A reward on orbit views added to the guidance as the loss term `reward` (threedistill/rewards: clip, vlm;
    # reward.name=vlm reward.model=DIR); its weight trainer.lambdas.reward (default 300 -> 1 over the run).
    reward: RewardConfig = field(default_factory=RewardConfig)
    # An image of the object from the front (VP3D's visual prompt, image-to-3D): reference.image=FILE (RGBA: the
    # alpha is the mask) or auto (drawn from the prior); matched at the front camera as the loss term `reference`.
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    # The orientation check (rewards/orientation.py): orientation.check_at=[1.0] turns the object round at the
    # last step when a judge finds it faces backwards (a full front/back flip); off by default (the shipped judge
    # knows the toy world's objects only). docs/benchmarks/reward_orient.md
    orientation: OrientationConfig = field(default_factory=OrientationConfig)
    # Stages run one after another, each from the previous one's result (StableDreamer's pixel-then-latent prior,
    # coarse-to-fine schedules, a volumetric stage then a mesh stage: `representation=mesh` in a stage's overrides
    # starts from the previous stage's exported surface); empty = one stage, this config. With stages,
    # trainer.steps is their total.
    stages: list[StageConfig] = field(default_factory=list)

    # The fields that may name local files or folders (saved absolute: `resolve_paths`).
    PATH_FIELDS: ClassVar[tuple[str, ...]] = (
        "prior",
        "reward.model",
        "reward.visual_prompt",
        "reference.image",
        "orientation.model",
    )

    def resolve_paths(self) -> None:
        """Relative paths to existing files in `PATH_FIELDS`, and in the stages' overrides of them, made absolute
        (called when a run starts, so it resumes from any folder)."""
        absolute_paths(self, self.PATH_FIELDS)
        for stage in self.stages:
            stage.overrides = [_absolute_override(item, self.PATH_FIELDS) for item in stage.overrides]

    def __post_init__(self):
        if self.stages:
            self.trainer.steps = sum(stage.steps for stage in self.stages)
        for fmt in self.export:  # fail before optimising, not after
            check_export(fmt)
        check_device_name(self.device)
        check_precision(self.prior_precision)
        if self.native is not None:
            native_kernels.check_mode(self.native)


def _absolute_override(item: str, keys: tuple[str, ...]) -> str:
    """A stage's `key=value` override with its value made absolute when `key` is a path field naming a file."""
    key, sep, value = item.partition("=")
    return f"{key}={absolute_path(value.strip())}" if sep and key.strip() in keys else item


RUN_PAGE = "viewer"  # in `export`: RUN_DIR/export/viewer.html (workflows/view.py)


def check_export(fmt: str) -> None:
    """A one-line error unless `fmt` is an export format or the run's page (`viewer`)."""
    from ..export.run_export import check_format

    if fmt != RUN_PAGE:
        check_format(fmt, also=(RUN_PAGE,))


def default_config_path(representation: str) -> Path | None:
    """configs/generate/<representation>.yaml, if it exists."""
    path = packaged_config("generate", f"{representation}.yaml")
    return path if path.is_file() else None


def prior_config_paths(prior: str | None, representation: str) -> list[Path]:
    """A multi-view prior's defaults (configs/generate/prior-multiview.yaml, then prior-multiview-<representation>
    .yaml: four views per step in one set, no Perp-Neg), those that exist; none for a 2D prior."""
    from ..priors.diffusers_prior import prior_views

    if prior is None or prior_views(prior) == 1:
        return []
    paths = [packaged_config("generate", f"prior-multiview{tail}.yaml") for tail in ("", f"-{representation}")]
    return [p for p in paths if p.is_file()]


def method_config_paths(guidance_type: str, representation: str) -> list[Path]:
    """configs/guidance/<method>.yaml (a method's settings adapted to the embedded prior), then
    configs/guidance/<method>-<representation>.yaml (its settings for one representation), those that exist."""
    paths = [
        packaged_config("guidance", f"{guidance_type}.yaml"),
        packaged_config("guidance", f"{guidance_type}-{representation}.yaml"),
    ]
    return [p for p in paths if p.is_file()]


def method_layers(sources: list, guidance_type: str, representation: str) -> list:
    """`sources` with the method's files (method_config_paths) laid in: its general file first; its file for the
    representation right after the representation's defaults (configs/generate/<representation>.yaml) where
    `sources` holds them, being more specific (e.g. SDS's 200-step recipe on Gaussians in
    configs/guidance/sds-gaussians.yaml), and first too where it does not."""
    general, specific = (
        [p for p in method_config_paths(guidance_type, representation) if p.stem == stem]
        for stem in (guidance_type, f"{guidance_type}-{representation}")
    )
    defaults = default_config_path(representation)
    at = next((i + 1 for i, s in enumerate(sources) if defaults is not None and s == defaults), 0)
    return general + list(sources[:at]) + specific + list(sources[at:])


def generate_schema(guidance_type: str) -> type[GenerateConfig]:
    """GenerateConfig with its `guidance` section typed by that method's config class, so a key of another
    method is an error naming this method's keys."""
    return _schema_for(GUIDANCE.get(guidance_type).config_class)


@functools.lru_cache(maxsize=None)
def _schema_for(config_class: type) -> type[GenerateConfig]:
    if config_class is GuidanceConfig:
        return GenerateConfig
    schema = dataclasses.make_dataclass(
        f"GenerateConfig_{config_class.__name__}",
        [("guidance", config_class, field(default_factory=config_class))],
        bases=(GenerateConfig,),
    )
    schema.__module__ = __name__
    return schema


def _check_guidance_overrides(guidance_type: str, overrides, action: str = "") -> None:
    """A `guidance.KEY=...` override that this method lacks: one line naming its keys (and the methods that have
    KEY)."""
    fields = {f.name for f in dataclasses.fields(GUIDANCE.get(guidance_type).config_class)}
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.startswith("guidance.") and key.split(".")[1] not in fields:
            name = key.split(".")[1]
            owners = [
                m
                for m in GUIDANCE.names()
                if name in {f.name for f in dataclasses.fields(GUIDANCE.get(m).config_class)}
            ]
            where = f" (it belongs to {', '.join(owners)})" if owners else ""
            raise ConfigError(
                f"{action}guidance {guidance_type!r} has no parameter {name!r}{where}; its parameters: "
                f"{', '.join(sorted(fields))}"
            )


def _load_for_method(
    sources: list, overrides, default_method: str, action: str = "", method_defaults: bool = True
) -> GenerateConfig:
    """A GenerateConfig typed by the guidance method `sources` (files or dicts) and `overrides` pick: `sources` with
    the method's configs/guidance files laid in when `method_defaults` (method_layers), then `overrides`."""
    files = [s for s in sources if not isinstance(s, dict)]
    method = str(peek_key("guidance_type", files, overrides, default_method))
    _check_guidance_overrides(method, overrides, action)
    layers = list(sources)
    if method_defaults:
        given = [s["representation"] for s in sources if isinstance(s, dict) and "representation" in s]
        representation = peek_key(
            "representation", files, overrides, given[-1] if given else GenerateConfig.representation
        )
        layers = method_layers(layers, method, str(representation))
    return load_config(generate_schema(method), layers, overrides)


def load_generate_config(config_files, overrides) -> GenerateConfig:
    """Dataclass defaults, then the method's configs/guidance/<method>.yaml, the representation's defaults
    (configs/generate/<representation>.yaml, where `config_files` start with them), the method's
    <method>-<representation>.yaml, the rest of `config_files` (a multi-view prior's defaults, the user's YAML), then
    `key=value` overrides, validated against the chosen method's schema."""
    return _load_for_method([f for f in config_files if f is not None], overrides, GenerateConfig.guidance_type)


def stage_configs(cfg: GenerateConfig) -> list[GenerateConfig]:
    """The config of every stage of a run (just `cfg` without stages), each with its own trainer.steps."""
    if not cfg.stages:
        return [cfg]
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(OmegaConf.structured(cfg))
    resolved["stages"] = []
    out = []
    for i, stage in enumerate(cfg.stages):
        overrides = list(stage.overrides) + [f"trainer.steps={stage.steps}"]
        label = f"stage {i} ({stage.name}): " if stage.name else f"stage {i}: "
        new_method = str(peek_key("guidance_type", [], overrides, cfg.guidance_type)) != cfg.guidance_type
        # another method starts from its own defaults, not the first method's settings
        base = {**resolved, "guidance": {}} if new_method else resolved
        try:
            out.append(_load_for_method([base], overrides, cfg.guidance_type, method_defaults=new_method))
        except ConfigError as err:
            raise ConfigError(f"{label}{err}") from None
    return out


def read_run_config(run_dir: Path, overrides=(), action: str = "") -> GenerateConfig:
    """A run directory's saved config.yaml (plus overrides), or a one-line error if it is not a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ThreeDistillError(f"{action}{run_dir} is not a run directory (no config.yaml)")
    return _load_for_method([path], list(overrides), GenerateConfig.guidance_type, action, method_defaults=False)


def check_orientation(cfg: GenerateConfig) -> None:
    """A one-line error when the orientation check is asked of a representation that cannot turn (a mesh)."""
    model_cls = REPRESENTATIONS.get(cfg.representation)
    if cfg.orientation.check_at and model_cls.turn_around is Representation.turn_around:
        raise ConfigError(f"orientation.check_at: the {cfg.representation} representation cannot be turned around")


def build(
    cfg: GenerateConfig, run_dir: Path | None, log=print, device: str | None = None
) -> tuple[torch.nn.Module, Trainer]:
    """Prior, guidance, representation and trainer for a config, on `device` (default: the config's)."""
    from ..priors import load_prior

    check_prompt(cfg.prompt)
    check_orientation(cfg)
    model_cls = REPRESENTATIONS.get(cfg.representation)
    guidance_cls = GUIDANCE.get(cfg.guidance_type)
    torch.manual_seed(cfg.trainer.seed)
    gen = torch.Generator().manual_seed(cfg.trainer.seed)
    device = resolve_device(device or cfg.device)
    native_kernels.set_mode(cfg.native)
    # its config section (a plugin representation without one gets its own defaults)
    model = model_cls(getattr(cfg, cfg.representation, None), generator=gen, device=device)
    guidance_cfg = cfg.guidance
    if not isinstance(guidance_cfg, guidance_cls.config_class):  # e.g. a GenerateConfig built in Python
        # carry over what was changed from the shared defaults; the method's own defaults fill the rest
        fields, shared = {f.name for f in dataclasses.fields(guidance_cls.config_class)}, GuidanceConfig()
        guidance_cfg = guidance_cls.config_class(
            **{k: v for k, v in dataclasses.asdict(guidance_cfg).items() if k in fields and v != getattr(shared, k)}
        )
    log(f"loading the prior {cfg.prior or 'toyworld'} on {device} ({precision_name(cfg.prior_precision, device)})")
    prior = load_prior(cfg.prior, device=device, prompts=[cfg.prompt], precision=cfg.prior_precision)
    prior.use_graph = prior.use_graph and cfg.prior_graph
    guidance = guidance_cls(prior, guidance_cfg)
    terms = [reward_term(cfg.reward, device), reference_term(cfg.reference, guidance.prior, cfg, run_dir, log)]
    checks = [orientation_check(cfg.orientation)]
    return model, Trainer(cfg.trainer, model, guidance, cfg.prompt, run_dir, log=log, terms=terms, checks=checks)


def new_run_config(
    prompt: str = "",
    representation: str | None = None,
    guidance: str | None = None,
    prior: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    out: str | None = None,
    device: str | None = None,
    config: str | Path | None = None,
    overrides: list[str] | tuple = (),
) -> GenerateConfig:
    """The config of a new run of `generate` (its arguments over `config` over configs/generate/<representation>
    .yaml over the defaults), checked; a one-line error for a bad key, value or prompt."""
    picked = [
        f"prompt={json.dumps(prompt, ensure_ascii=False)}" if prompt else None,
        f"representation={representation}" if representation else None,
        f"guidance_type={guidance}" if guidance else None,
        f"prior={prior}" if prior else None,
        f"trainer.steps={steps}" if steps is not None else None,
        f"trainer.seed={seed}" if seed is not None else None,
        f"out={out}" if out else None,
        f"device={device}" if device else None,
    ]
    overrides = list(overrides) + [p for p in picked if p]
    rep = str(peek_key("representation", [config] if config else [], overrides, GenerateConfig.representation))
    chosen_prior = peek_key("prior", [config] if config else [], overrides, None)
    # the representation's defaults, a multi-view prior's, then the user's YAML on top (it only needs what it changes)
    layers = [default_config_path(rep), *prior_config_paths(chosen_prior, rep), config]
    cfg = load_generate_config(layers, overrides)
    check_prompt(cfg.prompt, "--prompt")  # before the run directory is made
    return cfg


def generate(
    prompt: str = "",
    representation: str | None = None,
    guidance: str | None = None,
    prior: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    out: str | None = None,
    device: str | None = None,
    config: str | Path | None = None,
    overrides: list[str] | tuple = (),
    resume: str | Path | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    log=print,
    viewer: LiveViewerOptions | None = None,
    page: bool = True,
) -> Run:
    """Run text-to-3D and return the Run. Arguments override `config` (a YAML file laid over
    configs/generate/<representation>.yaml), which overrides the dataclass defaults; `resume` continues the run
    in that directory with its saved config; `viewer` shows the run live (`live_view`); `page=False` leaves the
    run's page (`viewer` in `export`) to the caller, e.g. to write it once after an evaluation."""
    if resume is not None:
        run_dir = Path(resume)
        expect_run_kind(run_dir, "generate")
        cfg = read_run_config(
            run_dir, list(overrides) + ([f"device={device}"] if device else []), action="cannot resume: "
        )
    else:
        cfg = new_run_config(prompt, representation, guidance, prior, steps, seed, out, device, config, overrides)
    stages = stage_configs(cfg)
    for stage in stages:  # before any stage trains
        check_orientation(stage)
    if resume is not None:
        session = RunSession.resume("generate", cfg, run_dir, log)
    else:
        session = RunSession.start(
            "generate", cfg, Path(cfg.out) / slugify(cfg.prompt), f"{cfg.guidance_type}-{cfg.representation}", log
        )
    with session:
        run_dir = session.dir
        resumed = resume is not None and session.has_checkpoint()
        first = int(latest_checkpoint(run_dir)[1].get("stage", 0)) if resumed else 0
        offset = sum(c.trainer.steps for c in stages[:first])
        with watching(viewer, cfg.trainer.steps, log=log) as live:  # one viewer through all the stages
            run, offset = _run_stages(cfg, stages, first, offset, session, live, progress, stop_at, log)
        if run is None:
            raise ThreeDistillError(f"nothing to run: stop_at={stop_at} is before the run's next step {offset}")
        if run.trainer.step == run.config.trainer.steps and run.trainer.stage == len(stages) - 1:
            run.model.cpu()  # turntable and exports run on the CPU whatever the training device
            log("writing the turntable and the exports")
            write_turntable(run)
            export_finished_run(run, log)
            session.finish()
            if page and RUN_PAGE in run.config.export:  # after metrics.json has the run's wall time
                export_run_page(run.dir, run.model, run.config.representation, log)
    return run


def _run_stages(cfg, stages, first: int, offset: int, session, live, progress, stop_at, log):
    """Stages `first`.. of a run, each from the previous one's result; (the last Run, the step after it)."""
    run_dir, run = session.dir, None
    for index in range(first, len(stages)):
        if stop_at is not None and stop_at <= offset:
            break
        previous = run
        model, trainer = build(stages[index], run_dir, log)
        trainer.stage, trainer.step_offset = index, offset
        if previous is not None:
            trainer.continue_from(previous.trainer, hand_over)
            log(f"stage {index}{f' ({cfg.stages[index].name})' if cfg.stages[index].name else ''} from step {offset}")
        else:
            session.restore(trainer, offset)
        run = Run(run_dir, stages[index], model, trainer)
        session.train(
            trainer,
            progress=progress,
            stop_at=None if stop_at is None else stop_at - offset,
            preview=lambda step, run=run: write_preview(run, step),
            on_step=on_step(live, model),
        )
        offset += stages[index].trainer.steps
        if trainer.step < stages[index].trainer.steps:
            break
    return run, offset


def generate_or_resume(out: str | Path, log=print, progress: bool = False, **kwargs) -> Run:
    """`generate(out=out, **kwargs)`, unless `out` holds an unfinished run of the same config (the newest if
    several): that run continues from its latest checkpoint. The body of batch and benchmark tasks, which an
    engine runs again when their worker died; a finished run, or one of another config, is left alone."""
    from omegaconf import OmegaConf

    from ..utils.files import read_json

    cfg = new_run_config(out=str(out), **kwargs)
    wanted = OmegaConf.to_container(OmegaConf.structured(cfg))
    found = Path(out).glob(f"{slugify(cfg.prompt)}/*/config.yaml")
    for run_dir in sorted((p.parent for p in found), key=lambda d: d.name.rpartition("@")[2], reverse=True):
        metrics = run_dir / "metrics.json"
        try:
            if metrics.is_file() and "wall_seconds" in read_json(metrics, "metrics file"):
                continue  # finished
            same = OmegaConf.to_container(OmegaConf.structured(read_run_config(run_dir))) == wanted
        except ThreeDistillError:  # damaged: not this task's run
            continue
        if same:
            log(f"continuing {run_dir}")
            return generate(resume=run_dir, progress=progress, log=log)
    return generate(out=str(out), progress=progress, log=log, **kwargs)


def export_finished_run(run: Run, log=print) -> None:
    """The config's `export` formats into RUN_DIR/export/; splat formats only for Gaussians runs (the page,
    `viewer`, comes after the run's metrics: `export_run_page`)."""
    export_formats(run.model, run.config.representation, run.config.export, run.dir, log)


def export_formats(model, representation: str, formats, run_dir: Path, log=print) -> None:
    """Write a model in each format into RUN_DIR/export/; a failed export is a warning, the run stays saved."""
    from ..export.run_export import MESH_FORMATS, check_format, default_export_path, export_model

    for fmt in formats:
        if fmt == RUN_PAGE:
            continue
        check_format(fmt)
        if fmt in MESH_FORMATS or representation == "gaussians":
            try:
                path = export_model(model, representation, fmt, default_export_path(run_dir, fmt), log=log)
            except ThreeDistillError as err:  # the run itself is saved; say why the file is missing and go on
                log(f"warning: no {fmt} export: {err}")
            else:
                log(f"exported {path}")


def export_run_page(run_dir: Path, model, representation: str, log=print) -> None:
    """`write_run_page`; a failure is a warning, the run stays saved."""
    try:
        path = write_run_page(run_dir, model, representation, log)
    except ThreeDistillError as err:
        log(f"warning: no {RUN_PAGE} page: {err}")
    else:
        log(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB; t3d view RUN_DIR rewrites it)")


def write_run_page(run_dir: Path, model, representation: str, log=print) -> Path:
    """RUN_DIR/export/viewer.html: the finished run as one HTML page (`threedistill.viewer`; `t3d view`); a staged
    run that ends as a mesh shows its last Gaussians stage's splats (`stage_splats`)."""
    from ..export.splats import SplatParams
    from ..viewer.content import default_page_path, run_page
    from ..viewer.page import write_page

    notes = []
    if representation == "gaussians":
        params = SplatParams.from_gaussians(model)
    else:
        params, notes = stage_splats(run_dir)
    out = default_page_path(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_page(run_page(run_dir, "generate", params, model, representation, log, notes), out)


def stage_splats(run_dir: Path, cfg: GenerateConfig | None = None):
    """(the splats of the last Gaussians stage of a staged run that ends in another representation, [a line saying
    so]) from the checkpoint at that stage's end; (None, []) for a run without one."""
    from ..export.splats import SplatParams
    from ..representations.gaussians import PARAM_NAMES
    from ..trainer import model_tensors, read_checkpoint

    cfg = cfg or read_run_config(run_dir)
    end, found = 0, None
    for index, stage in enumerate(stage_configs(cfg)):
        end += stage.trainer.steps
        if stage.representation == "gaussians":
            found = index, end
    if found is None:
        return None, []
    try:
        state = model_tensors(read_checkpoint(run_dir, found[1])[0])
        params = SplatParams(*(state[name].float().numpy() for name in PARAM_NAMES))
    except (ThreeDistillError, KeyError):
        return None, []
    return params, [f"splats: the Gaussians at the end of stage {found[0]} (step {found[1]}); the mesh: the result"]


def write_preview(run: Run, step: int) -> None:
    from ..cameras import orbit_cameras
    from ..utils.images import save_image

    out = run.render(orbit_cameras([0, 90, 180, 270], 15.0, 2.9), output_resolution(run))
    save_image(out["rgb"], run.dir / "renders" / f"preview_{step:06d}.png")


def output_resolution(run: Run) -> int:
    """Size of previews and turntables: twice the training renders, at least 64 px (a NeRF frame at 128 px
    costs ~13 s on one CPU core; `write_turntable(run, resolution=...)` renders larger ones from a loaded run)."""
    return max(64, 2 * run.config.trainer.resolution)


def write_turntable(run: Run, frames: int = 24, resolution: int | None = None) -> None:
    """renders/turntable.mp4 (or .gif without ffmpeg) and a PNG grid of 8 views."""
    import imageio.v3 as iio

    from ..cameras import orbit_cameras
    from ..utils.images import save_image, to_uint8

    resolution = resolution or output_resolution(run)
    cams = orbit_cameras(torch.linspace(0, 360, frames + 1)[:-1], 15.0, 2.9)
    rgb = torch.cat([run.render(cams[i : i + 4], resolution)["rgb"] for i in range(0, frames, 4)])
    renders = run.dir / "renders"
    renders.mkdir(parents=True, exist_ok=True)
    save_image(rgb[:: frames // 8], renders / "views.png")
    video = [to_uint8(f) for f in rgb]
    try:
        iio.imwrite(renders / "turntable.mp4", video, fps=12)
    except Exception:  # no ffmpeg backend: a GIF carries the same frames
        iio.imwrite(renders / "turntable.gif", video, duration=80, loop=0)
