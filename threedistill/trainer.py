"""The per-prompt optimisation loop: sample cameras, render, named loss terms, step, strategy hooks, advance
schedules, log, preview, checkpoint. Knows nothing about specific methods or representations. All randomness
comes from one torch.Generator whose state is checkpointed, so a resumed run ends bit-identical to an
uninterrupted one."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .cameras import sample_orbit
from .config import scheduled
from .errors import ConfigError, ThreeDistillError
from .objective import Objective, ViewBatch, Views
from .representations.base import Representation, load_model_state
from .utils.files import atomic_path, read_json, write_json
from .utils.optim import Adam

if TYPE_CHECKING:
    from .rewards import ExtraTerm


@dataclass
class CameraRange:
    azimuth: list[float] = field(default_factory=lambda: [-180.0, 180.0])
    elevation: list[float] = field(default_factory=lambda: [-10.0, 45.0])
    radius: list[float] = field(default_factory=lambda: [2.6, 3.2])
    fovy: list[float] = field(default_factory=lambda: [38.0, 42.0])

    def __post_init__(self):
        limits = {"azimuth": (-720.0, 720.0), "elevation": (-90.0, 90.0), "radius": (1e-3, 1e3), "fovy": (1.0, 170.0)}
        for name, (lo, hi) in limits.items():
            value = list(getattr(self, name))
            if len(value) != 2 or not all(math.isfinite(v) for v in value):
                raise ConfigError(f"trainer.cameras.{name} must be [low, high] (two numbers), got {value}")
            if value[0] > value[1] or value[0] < lo or value[1] > hi:
                raise ConfigError(
                    f"trainer.cameras.{name} must be [low, high] with {lo:g} <= low <= high <= {hi:g}, got {value}"
                )


@dataclass
class TrainerConfig:
    steps: int = 300
    batch_size: int = 2  # views per step
    resolution: int = 32  # render size (square); the prior resizes to its native size
    seed: int = 0
    cameras: CameraRange = field(default_factory=CameraRange)
    # Loss weights, one per named term `loss_<name>` (threestudio's convention):
    lambda_guidance: float = 1.0  # the objective's own term (loss_sds, loss_vsd, loss_photometric, ...)
    lambda_opacity: float = 0.0  # sparsity: mean alpha (every representation)
    lambda_entropy: float = 0.0  # push alpha to 0 or 1 (every representation)
    lambda_orientation: float = 0.0  # NeRF / triplane: normals facing away from the camera (DreamFusion)
    lambda_scale: float = 0.0  # Gaussians: penalise large scales
    # Any other term by name (a number or a schedule), e.g. {lora: 0.5} for VSD's LoRA loss, {laplacian: 2.0} for
    # the mesh's smoothness; without an entry a term takes its objective's or representation's default weight.
    lambdas: dict = field(default_factory=dict)
    grad_clip_norm: float = 0.0  # 0 = off
    # The run length the schedules (guidance windows, CFG and coefficient schedules, learning rates, lambdas) are
    # written for; when set, they are stretched to `steps` (e.g. 300 with steps=150 runs every schedule twice as
    # fast). None: schedule keys are absolute steps. Densification steps stay absolute.
    schedule_steps: Optional[int] = None
    checkpoint_every: int = 100
    preview_every: int = 100
    log_every: int = 10

    def __post_init__(self):
        at_least = {"steps": 1, "batch_size": 1, "resolution": 1, "log_every": 1, "checkpoint_every": 0}
        at_least.update({"preview_every": 0, "seed": 0})
        for name, low in at_least.items():
            value = getattr(self, name)
            if value < low:
                off = " (0: off)" if low == 0 and name != "seed" else ""
                raise ConfigError(f"trainer.{name} must be at least {low}{off}, got {value}")
        if self.resolution > 4096:
            raise ConfigError(f"trainer.resolution must be at most 4096 pixels, got {self.resolution}")
        if self.seed >= 2**63:
            raise ConfigError(f"trainer.seed must be below 2**63, got {self.seed}")
        if self.schedule_steps is not None and self.schedule_steps < 1:
            raise ConfigError(f"trainer.schedule_steps must be at least 1 (or null), got {self.schedule_steps}")
        if not self.grad_clip_norm >= 0:
            raise ConfigError(f"trainer.grad_clip_norm must be 0 (off) or more, got {self.grad_clip_norm}")


def _generator_state(gen: torch.Generator) -> str:
    return base64.b64encode(gen.get_state().numpy().tobytes()).decode()


def _set_generator_state(gen: torch.Generator, state: str) -> None:
    gen.set_state(torch.frombuffer(bytearray(base64.b64decode(state, validate=True)), dtype=torch.uint8))


def _check_state(state: dict, where: str) -> dict:
    """A checkpoint's JSON state with a usable step, stage and random-generator state, else a one-line error."""
    for key in ("step", "stage"):
        value = state.get(key, 0 if key == "stage" else None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ThreeDistillError(f"{where}: {key} must be a whole number >= 0, found {value!r}")
    try:
        _set_generator_state(torch.Generator(), state.get("generator"))
    except (TypeError, ValueError, RuntimeError) as err:  # binascii.Error is a ValueError
        raise ThreeDistillError(f"{where}: the random generator state is damaged ({type(err).__name__})") from None
    return state


def latest_checkpoint(run_dir: Path, step: int | None = None) -> tuple[Path, dict]:
    """(path stem, JSON state) of a run's latest checkpoint (or the one at run step `step`), or a one-line error."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    try:
        if step is not None:
            name = f"step_{step:06d}"
        else:
            name = read_json(ckpt_dir / "latest.json", "checkpoint index")["checkpoint"]
        if not isinstance(name, str) or not re.fullmatch(r"step_\d+", name):
            raise ValueError(f"latest.json names {name!r}, not a step_NNNNNN checkpoint")
        stem = ckpt_dir / name
        state = read_json(stem.with_suffix(".json"), "checkpoint state")
    except (ThreeDistillError, KeyError, ValueError) as err:
        raise ThreeDistillError(
            f"{run_dir} has no readable checkpoint{'' if step is None else f' at step {step}'} "
            f"({err}); was the run started and did it reach that checkpoint?"
        ) from None
    return stem, _check_state(state, str(stem.with_suffix(".json")))


def read_checkpoint(run_dir: Path, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON state) of a run's latest checkpoint (or the one at run step `step`), or a one-line error;
    a checkpoint holding NaN or inf (a run that diverged) is refused too."""
    stem, state = latest_checkpoint(run_dir, step)
    try:
        tensors = load_file(str(stem.with_suffix(".safetensors")))
    except (OSError, ValueError, SafetensorError) as err:  # missing, truncated, empty, not safetensors
        raise ThreeDistillError(f"{run_dir}: checkpoint {stem.name} is unreadable ({err})") from None
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise ThreeDistillError(
                f"{run_dir}: checkpoint {stem.name} holds {bad} NaN or inf values in {key}; the run diverged or "
                "the file is damaged (an earlier checkpoints/step_*.safetensors may still be good)"
            )
    return tensors, state


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict inside a checkpoint's tensors."""
    return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}


class Trainer:
    """Optimises `model` (a `Representation`) against `guidance` (an `Objective`: a guidance method, the
    photometric loss of a fit, an edit's objective) for `prompt`. Cameras are random orbits, or come from `views`
    (a `Views`: captured scenes, edit cameras), whose targets are passed to the objective as keyword arguments.
    It calls the representation's strategy hooks around each step and checkpoints their state, and weights every
    named loss term by its own lambda; it knows no representation or method by name."""

    def __init__(
        self,
        cfg: TrainerConfig,
        model: Representation,
        guidance: Objective,
        prompt: str,
        run_dir: Path | None = None,
        log: Callable[[str], None] | None = None,
        views: Views | None = None,
        terms: list[ExtraTerm] = (),
        checks: list = (),
    ):
        self.cfg, self.model, self.guidance, self.views = cfg, model, guidance, views
        per_set = getattr(guidance, "views_per_set", 1)
        if views is None and cfg.batch_size % per_set:
            raise ConfigError(
                f"trainer.batch_size={cfg.batch_size}: this prior judges sets of {per_set} views at once; "
                f"set trainer.batch_size to a multiple of {per_set}"
            )
        self.terms = [t for t in terms if t is not None]
        # checks after the step at steps of their own (`due(step, steps)`), which may change the model in place
        # (`apply(model, optimizer)` -> logs), e.g. the orientation check (rewards/orientation.py)
        self.checks = [c for c in checks if c is not None]
        self.prompt = prompt
        self.prompt_state = guidance.prompt_state(prompt)
        self.run_dir = run_dir
        self.log = log or (lambda s: None)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0  # steps taken in this stage
        self.checked = False  # whether the last step ran a check (`checks`)
        self.stage, self.step_offset = 0, 0  # a multi-stage run: this stage's index and the steps before it
        self.optimizer = self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        groups = self.model.param_groups() + self.guidance.param_groups()
        groups = [g for g in groups if g["params"]]
        for g in groups:  # a learning rate may be a schedule [k0, v0, v1, k1] (threestudio style)
            g["lr_schedule"] = g["lr"]
            g["lr"] = scheduled(g["lr"], self.schedule_step)
        return Adam(groups, betas=(0.9, 0.99), eps=1e-15)

    def continue_from(self, previous: "Trainer", hand_over: Callable) -> None:
        """Start this stage from the previous stage's result and random state, with a fresh optimiser:
        `hand_over(previous_model, model, generator, log)` initialises this stage's model from the previous one
        (the same representation: a copy; another: e.g. NeRF -> mesh by isosurface)."""
        self.generator.set_state(previous.generator.get_state())
        hand_over(previous.model, self.model, self.generator, self.log)
        self.optimizer = self._make_optimizer()

    @property
    def schedule_step(self) -> int:
        """The step the schedules see: this stage's step, stretched when `schedule_steps` is set."""
        if not self.cfg.schedule_steps:
            return self.step
        return int(self.step * self.cfg.schedule_steps / self.cfg.steps)

    def _update_learning_rates(self) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = scheduled(g["lr_schedule"], self.schedule_step)

    # ------------------------------------------------------------ one step
    def loss_weights(self) -> dict[str, float]:
        """This step's weight of every named loss term: the objective's and the representation's defaults, then
        the trainer's `lambda_<name>` fields, then `lambdas` (numbers or schedules, evaluated at this step)."""
        c = self.cfg
        fields = {
            f.name[len("lambda_") :]: getattr(c, f.name)
            for f in dataclasses.fields(c)
            if f.name.startswith("lambda_") and f.name != "lambda_guidance"
        }
        extra = {k: v for t in self.terms for k, v in t.loss_weights(c.schedule_steps or c.steps).items()}
        weights = {**self.guidance.loss_weights(), **self.model.loss_weights(), **extra, **fields, **c.lambdas}
        when = self.schedule_step
        return {name: scheduled(value, when) for name, value in weights.items()}

    def _weighted_terms(
        self, losses: dict, out: dict, weights: dict[str, float]
    ) -> list[tuple[str, float, torch.Tensor]]:
        """(name, weight, value) of every term of the total loss, in a fixed order: the objective's terms, the
        opacity terms every representation has (mean alpha, alpha entropy), then the representation's own."""
        terms = []
        for key, value in losses.items():
            if key.startswith("loss_"):
                name = key[len("loss_") :]
                if name == self.guidance.name:
                    weight = scheduled(self.cfg.lambda_guidance, self.schedule_step)
                elif name in weights:
                    weight = weights[name]
                else:
                    raise ConfigError(
                        f"the objective {self.guidance.name!r} returned loss_{name} but no weight is set "
                        f"for it; set trainer.lambdas.{name}=<weight>"
                    )
                terms.append((name, weight, value))
        alpha = out["alpha"].clamp(1e-5, 1 - 1e-5)
        if weights.get("opacity"):
            terms.append(("opacity", weights["opacity"], alpha.mean()))
        if weights.get("entropy"):
            terms.append(
                ("entropy", weights["entropy"], -(alpha * alpha.log() + (1 - alpha) * (1 - alpha).log()).mean())
            )
        for key, value in self.model.training_losses(out, weights).items():
            name = key[len("loss_") :]
            terms.append((name, weights[name], value))
        return terms

    def train_step(self) -> dict[str, float]:
        c = self.cfg
        if self.views is None:
            cams = sample_orbit(
                self.generator,
                c.batch_size,
                tuple(c.cameras.azimuth),
                tuple(c.cameras.elevation),
                tuple(c.cameras.radius),
                tuple(c.cameras.fovy),
                views_per_set=getattr(self.guidance, "views_per_set", 1),
            )
            batch = ViewBatch(cams, (c.resolution, c.resolution))
        else:
            batch = self.views.sample(self.generator, c.batch_size)
        cams, targets = batch.cameras, batch.targets
        weights = self.loss_weights()
        wants_depth = self.guidance.wants_depth  # e.g. a fit's sparse SfM depth loss
        geometry = wants_depth or any(weights.get(name) for name in self.model.geometry_losses)
        render = dict(generator=self.generator, geometry=geometry)
        if batch.background is not None:
            render["background"] = batch.background
        out = self.model.render(cams, *batch.size, **render)
        if wants_depth:
            targets = {**targets, "depth": out["depth"]}
        losses = self.guidance(out["rgb"], cams, self.prompt_state, self.schedule_step, self.generator, **targets)
        for term in self.terms:  # terms on views of their own (a reward, a reference image), when due
            if term.due(self.step + 1):
                losses[f"loss_{term.name}"] = term.loss(self.model, self.generator, self.prompt)
        logs = {k: float(v.detach()) for k, v in losses.items()}
        terms = self._weighted_terms(losses, out, weights)
        total = sum(weight * value for _, weight, value in terms)
        logs.update({f"loss_{name}": float(value.detach()) for name, _, value in terms})
        strategy, step = self.model.strategy, self.step + 1
        self.optimizer.zero_grad(set_to_none=True)
        self._update_learning_rates()
        if strategy is not None:
            strategy.step_pre_backward(self.model, self.optimizer, step)
        total.backward()
        if c.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], c.grad_clip_norm
            )
        self.optimizer.step()
        self.model.after_step()
        if strategy is not None:
            event = lambda name, record: self.log(json.dumps({"step": self.step_offset + step, name: record}))  # noqa: E731
            logs.update(strategy.step_post_backward(self.model, self.optimizer, step, self.generator, event))
        self.step = step
        self.checked = False  # a step with a check is always written to log.jsonl
        for check in self.checks:
            if check.due(step, c.steps):
                record = check.apply(self.model, self.optimizer)
                self.log(json.dumps({"step": self.step_offset + step, check.name: record}))
                logs.update(record)
                self.checked = True
        logs["loss"] = float(total.detach())
        return logs

    # ------------------------------------------------------------ loop
    def fit(
        self,
        progress: bool = True,
        stop_at: int | None = None,
        preview: Callable[[int], None] | None = None,
        on_step: Callable[[int, dict], None] | None = None,
    ) -> None:
        """Run until cfg.steps (or `stop_at`, for tests that simulate an interruption); `on_step(run step, logs)`
        after every step (e.g. the live viewer: it must not change the model or draw random numbers)."""
        end = min(self.cfg.steps, stop_at) if stop_at is not None else self.cfg.steps
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="optimising", disable=not progress, unit="step")
        log_file = (self.run_dir / "log.jsonl").open("a") if self.run_dir else None
        try:
            while self.step < end:
                start = time.perf_counter()
                logs = self.train_step()
                logs["step_seconds"] = round(time.perf_counter() - start, 4)
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", s_per_step=f"{logs['step_seconds']:.2f}")
                if log_file and (self.step % self.cfg.log_every == 0 or self.step == end or self.checked):
                    stage = {"stage": self.stage} if self.stage else {}
                    log_file.write(json.dumps({"step": self.step_offset + self.step, **stage, **logs}) + "\n")
                    log_file.flush()
                if self.run_dir and self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if preview and self.cfg.preview_every and self.step % self.cfg.preview_every == 0:
                    preview(self.step_offset + self.step)
                if on_step is not None:
                    on_step(self.step_offset + self.step, logs)
        finally:
            bar.close()
            if log_file:
                log_file.close()
        if self.run_dir and self.step == self.cfg.steps:
            self.save_checkpoint()

    # ------------------------------------------------------------ checkpoints
    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"model.{k}": v.detach() for k, v in self.model.state_dict().items()}
        if self.model.strategy is not None:  # e.g. densification statistics
            tensors.update({f"stats.{k}": v for k, v in self.model.strategy.state_dict().items()})
        tensors.update({f"guidance.{k}": v for k, v in self.guidance.checkpoint_tensors().items()})
        for gi, group in enumerate(self.optimizer.param_groups):
            for pi, p in enumerate(group["params"]):
                for key, value in self.optimizer.state.get(p, {}).items():
                    tensors[f"optim.{gi}.{pi}.{key}"] = torch.as_tensor(value)
        return {k: v.cpu().contiguous() for k, v in tensors.items()}

    def save_checkpoint(self) -> Path:
        """Write checkpoints/step_XXXXXX.safetensors + .json atomically, and point latest.json at them."""
        ckpt_dir = self.run_dir / "checkpoints"
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        stem = ckpt_dir / f"step_{self.step_offset + self.step:06d}"
        with atomic_path(stem.with_suffix(".safetensors")) as tmp:
            save_file(self._tensors(), str(tmp))
        state = {
            "step": self.step,
            "stage": self.stage,
            "generator": _generator_state(self.generator),
            "num_points": len(self.model) if hasattr(self.model, "__len__") else None,
        }
        write_json(stem.with_suffix(".json"), state, indent=None)
        write_json(ckpt_dir / "latest.json", {"checkpoint": stem.name}, indent=None)
        return stem

    def load_checkpoint(self, run_dir: Path, step: int | None = None) -> None:
        """Restore the latest checkpoint (or the one at run step `step`): model, optimiser, guidance, random state."""
        tensors, state = read_checkpoint(run_dir, step)
        load_model_state(self.model, model_tensors(tensors))
        if self.model.strategy is not None:
            self.model.strategy.load_state_dict(
                {k[len("stats.") :]: v.to(self.model.device) for k, v in tensors.items() if k.startswith("stats.")}
            )
        self.guidance.load_checkpoint_tensors(
            {k[len("guidance.") :]: v for k, v in tensors.items() if k.startswith("guidance.")}
        )
        self.optimizer = self._make_optimizer()
        for gi, group in enumerate(self.optimizer.param_groups):
            for pi, p in enumerate(group["params"]):
                prefix = f"optim.{gi}.{pi}."
                # Adam keeps its step counter on the CPU (non-capturable); the moments live with the parameter.
                entries = {
                    k[len(prefix) :]: v.clone() if k.endswith(".step") else v.to(p.device)
                    for k, v in tensors.items()
                    if k.startswith(prefix)
                }
                if any(k != "step" and v.shape != p.shape for k, v in entries.items()):
                    raise ThreeDistillError(
                        f"{run_dir}: the checkpoint's optimiser state does not match its model (group {gi})"
                    )
                if entries:
                    self.optimizer.state[p] = entries
        self.step = state["step"]
        _set_generator_state(self.generator, state["generator"])
