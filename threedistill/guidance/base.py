"""Shared machinery of score-distillation guidance (guidance_spec.md section 0): prompt state with
view-dependent prompts, timestep windows and annealing, w(t), gradient injection, and the Guidance base.

CFG convention everywhere: diffusers', eps_u + s (eps_c - eps_u); s = 1 is conditional only. threestudio's
"guidance_scale 100" is s = 101 here.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from ..cameras import Cameras
from ..config import check_schedules, schedule_values, scheduled
from ..errors import ConfigError
from ..objective import Objective
from ..priors.base import Prior
from ..prompting import check_prompt, view_prompts

WEIGHTINGS = ("sds", "uniform", "fantasia3d", "sigma_over_alpha")


@dataclass
class GuidanceConfig:
    guidance_scale: Any = 7.5  # diffusers CFG convention (1 = conditional only); number or schedule [k0, v0, v1, k1]
    min_step_percent: Any = 0.02  # number or schedule [k0, v0, v1, k1]
    max_step_percent: Any = 0.98
    # w(t): sds = sigma_t^2, uniform = 1, fantasia3d = alpha_t sigma_t^2, sigma_over_alpha = sigma_t / alpha_t (ISM)
    weighting: str = "sds"
    grad_clip: Any = None  # element-wise clamp of G (number or schedule), None = off
    view_dependent_prompting: bool = True
    negative_prompt: str = ""
    perp_neg: bool = False  # Perp-Neg view-aware CFG (4 teacher evals per view instead of 2), see perp_neg.py
    sqrt_anneal: bool = False  # HiFA: deterministic t from sqrt(step / trainer_max_steps)
    trainer_max_steps: int = 1000
    # Dreamer XL's pixel-wise gradient clipping on the rendered RGB (any method): every pixel's largest channel
    # gradient is scaled down to at most this value, its direction kept. None = off (their default: 0.05).
    pixel_grad_clip: Optional[float] = None

    # fields this method does not read, with what to set instead: a value other than the default is an error
    # rather than a setting that silently does nothing
    unused_fields: ClassVar[dict[str, str]] = {}

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name in self.unused_fields:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                if getattr(self, f.name) != default:
                    raise ConfigError(
                        f"guidance.{f.name} = {getattr(self, f.name)!r} does nothing for this method "
                        f"({type(self).__name__}); {self.unused_fields[f.name]}"
                    )
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.pixel_grad_clip is not None and self.pixel_grad_clip <= 0:
            raise ConfigError(
                f"guidance.pixel_grad_clip must be positive (or null for off), got {self.pixel_grad_clip}"
            )
        check_schedules(
            self,
            "guidance",
            ("guidance_scale", "min_step_percent", "max_step_percent")
            + (("grad_clip",) if self.grad_clip is not None else ()),
        )
        for name in ("guidance_scale", "min_step_percent", "max_step_percent"):
            values = schedule_values(getattr(self, name))
            if min(values) < 0 or (name != "guidance_scale" and max(values) > 1):
                limit = ">= 0" if name == "guidance_scale" else "in [0, 1]"
                raise ConfigError(f"guidance.{name} must be {limit}, got {getattr(self, name)}")


class PromptState:
    """A prompt prepared for a prior: conditional embeddings per camera (view suffixes when asked) and the
    unconditional / negative embedding. Embeddings come from the prior's cache, so this is cheap."""

    def __init__(self, prior: Prior, prompt: str, negative_prompt: str = "", view_dependent: bool = True):
        check_prompt(prompt)
        for problem in prior.prompt_warnings(prompt):
            warnings.warn(problem, stacklevel=2)
        self.prior, self.prompt, self.negative_prompt, self.view_dependent = (
            prior,
            prompt,
            negative_prompt,
            view_dependent,
        )

    def texts(self, cameras: Cameras) -> list[str]:
        """Each camera's prompt: with its view suffix ("..., back view") when view-dependent and the prior reads
        suffixes (every 2D prior; a multi-view prior is given the cameras themselves, and MVDream reads the plain
        prompt, the toy multi-view prior both)."""
        if self.view_dependent and self.prior.view_prompts:
            return view_prompts(self.prompt, cameras.azimuth, cameras.elevation)
        return [self.prompt] * len(cameras)

    def conditional(self, cameras: Cameras) -> torch.Tensor:
        return self.prior.encode_prompt(self.texts(cameras))

    def unconditional(self, batch: int) -> torch.Tensor:
        """The CFG unconditional slot: the negative prompt (the empty prompt unless one is configured)."""
        return self.prior.encode_prompt([self.negative_prompt] * batch)

    def empty(self, batch: int) -> torch.Tensor:
        """The empty prompt's embedding, for methods that keep it apart from the negative prompt."""
        return self.prior.encode_prompt([""] * batch)


def inject_gradient(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """L = 1/(2B) sum_b ||x_b - sg(x_b - G_b)||^2, so dL/dx = G / B (guidance_spec 0.3, option 1)."""
    target = (x - grad).detach()
    return 0.5 * (x - target).pow(2).sum() / x.shape[0]


def pixel_clip(grad: torch.Tensor, tau: float) -> torch.Tensor:
    """Dreamer XL's pixel-wise gradient clipping (guidance_spec 7.3): scale each pixel's gradient (B,C,H,W) by
    min(1, tau / max_c |g|), so its largest channel is at most tau and its direction is unchanged."""
    peak = grad.abs().amax(dim=1, keepdim=True)
    return grad * (tau / peak.clamp_min(1e-20)).clamp(max=1.0)


class Guidance(Objective):
    """Base class: turns renders into a gradient through a frozen prior.

    `forward` maps renders into the prior's space, draws t and noise, asks `gradient` (the method's update
    rule, deterministic given the draws) for G, and injects it as `loss_<name>`; methods with auxiliary
    networks add their own `loss_*` terms in `auxiliary_losses`. `teacher_evals` counts UNet evaluations per
    view and step (guidance_spec 0.5)."""

    config_class = GuidanceConfig
    name = "guidance"
    shared_timestep = False  # one t for every view of a step (LucidDreamer-family methods)
    perp_neg_path = True  # False: the method has no Perp-Neg form, and guidance.perp_neg=true is ignored (a warning)

    def __init__(self, prior: Prior, cfg: Optional[GuidanceConfig] = None):
        super().__init__()
        self.prior = prior
        self.cfg = cfg or self.config_class()
        if prior.num_views > 1 and self.cfg.perp_neg:
            raise ConfigError(
                "guidance.perp_neg=true is a 2D prior's remedy for views; a multi-view prior is told each view's "
                "camera instead: set guidance.perp_neg=false"
            )
        if self.cfg.perp_neg and not self.perp_neg_path:
            warnings.warn(
                f"{self.name} has no Perp-Neg form: guidance.perp_neg=true is ignored (guidance.perp_neg=false "
                "silences this)",
                stacklevel=2,
            )

    @property
    def views_per_set(self) -> int:
        """The prior's set size: a multi-view prior judges its views in sets (the Trainer draws them so)."""
        return self.prior.num_views

    @property
    def guided_evals(self) -> int:
        """Teacher evaluations of one `guided_eps` call per view: CFG's 2, or Perp-Neg's 4."""
        return 4 if self.cfg.perp_neg else 2

    @property
    def teacher_evals(self) -> int:
        """Teacher (UNet) evaluations per view and step, every CFG branch counted (guidance_spec 0.5)."""
        return self.guided_evals

    def prompt_state(self, prompt: str) -> PromptState:
        return PromptState(self.prior, prompt, self.cfg.negative_prompt, self.cfg.view_dependent_prompting)

    def timestep_window(self, step: int) -> tuple[int, int]:
        """Inclusive integer window [floor(T p_min), floor(T p_max)] at this step."""
        n = self.prior.num_train_timesteps
        lo = scheduled(self.cfg.min_step_percent, step)
        hi = scheduled(self.cfg.max_step_percent, step)
        if self.cfg.sqrt_anneal:
            q = math.sqrt(min(step, self.cfg.trainer_max_steps) / self.cfg.trainer_max_steps)
            lo = hi = lo + (hi - lo) * (1 - q)
        return int(n * lo), int(n * hi)

    def sample_timesteps(self, batch: int, step: int, generator: torch.Generator | None = None) -> torch.Tensor:
        lo, hi = self.timestep_window(step)
        if self.shared_timestep:
            return torch.randint(lo, hi + 1, (1,), generator=generator).expand(batch).clone()
        return torch.randint(lo, hi + 1, (batch,), generator=generator)

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.prior.alpha_sigma(t)
        if self.cfg.weighting == "sds":
            return sigma**2
        if self.cfg.weighting == "fantasia3d":
            return alpha * sigma**2
        if self.cfg.weighting == "sigma_over_alpha":
            return sigma / alpha
        return torch.ones_like(alpha)

    @torch.no_grad()
    def teacher(self, *branches: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Epsilon of the frozen teacher for several (x_t, t, embeddings) branches in one batched call."""
        xs, ts, embs = zip(*branches)
        eps = self.prior.predict_noise(
            torch.cat(xs), torch.cat([t.expand(x.shape[0]) for x, t in zip(xs, ts)]), torch.cat(embs)
        )
        return eps.split([x.shape[0] for x in xs])

    @torch.no_grad()
    def prompt_eps(
        self, x_t: torch.Tensor, t: torch.Tensor, cameras: Cameras, prompt: PromptState
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(eps_y, eps_negative, eps_empty) at x_t in one batched call; without a negative prompt the negative
        prediction is the empty one (no extra evaluation). classifier_terms without Perp-Neg."""
        b = x_t.shape[0]
        branches = [(x_t, t, prompt.conditional(cameras)), (x_t, t, prompt.empty(b))]
        if prompt.negative_prompt != "":
            branches.append((x_t, t, prompt.unconditional(b)))
        eps = self.teacher(*branches)
        return eps[0], eps[2] if len(eps) == 3 else eps[1], eps[1]

    @property
    def classifier_evals(self) -> int:
        """Teacher evaluations of one `classifier_terms` call per view: prompt and empty, the negative prompt's
        when there is one, and Perp-Neg's two negative views when it is on."""
        return (2 if self.cfg.negative_prompt == "" else 3) + (2 if self.cfg.perp_neg else 0)

    @torch.no_grad()
    def classifier_terms(
        self, x_t: torch.Tensor, t: torch.Tensor, cameras: Cameras, prompt: PromptState
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(eps_y, eps_negative, eps_empty, perp) at x_t, for methods that keep the branches apart (CSD, NFSD):
        prompt_eps's three, and Perp-Neg's perpendicular sum over the other views' directions,
        sum_i w_i perp(eps_neg_i - eps_empty; eps_y - eps_empty), with eps_y the view-interpolated prompt's
        prediction, when guidance.perp_neg is on (0 when off)."""
        if not self.cfg.perp_neg:
            eps_y, eps_n, eps_e = self.prompt_eps(x_t, t, cameras, prompt)
            return eps_y, eps_n, eps_e, torch.zeros_like(eps_y)
        from .perp_neg import perp_neg_embeddings, perp_neg_terms

        b = x_t.shape[0]
        pos, negs, weights = perp_neg_embeddings(self.prior, prompt.prompt, cameras)
        eps_y, eps_e, perp = perp_neg_terms(self.prior, x_t, t, pos, negs, weights, prompt.empty(b))
        eps_n = eps_e if prompt.negative_prompt == "" else self.teacher((x_t, t, prompt.unconditional(b)))[0]
        return eps_y, eps_n, eps_e, perp

    @torch.no_grad()
    def guided_eps(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cameras: Cameras,
        prompt: PromptState,
        step: int,
        scale: float | None = None,
    ) -> torch.Tensor:
        """The teacher's guided epsilon at noisy renders: plain CFG with the (view-suffixed) prompt, or
        Perp-Neg when configured; `scale` defaults to the configured guidance scale at this step."""
        scale = scheduled(self.cfg.guidance_scale, step) if scale is None else scale
        uncond = prompt.unconditional(x_t.shape[0])
        if self.cfg.perp_neg:
            from .perp_neg import perp_neg_embeddings, perp_neg_eps

            pos, negs, weights = perp_neg_embeddings(self.prior, prompt.prompt, cameras)
            return perp_neg_eps(self.prior, x_t, t, pos, negs, weights, uncond, scale)
        return self.prior.predict_noise_cfg(x_t, t, prompt.conditional(cameras), uncond, scale)[0]

    def finish_gradient(self, grad: torch.Tensor, step: int) -> torch.Tensor:
        """Optional element-wise clamp (debiased SDS) and NaN removal before injection."""
        if self.cfg.grad_clip is not None:
            clip = scheduled(self.cfg.grad_clip, step)
            grad = grad.clamp(-clip, clip)
        return torch.nan_to_num(grad)

    # ------------------------------------------------------------ checkpoints
    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must keep of this guidance: trained parameters and buffers (not the frozen UNet)."""
        out = {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}
        out.update(dict(self.named_buffers()))
        return out

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore `checkpoint_tensors` (buffers may change shape, e.g. CDS's noise drawn at the first step)."""
        params, buffers = dict(self.named_parameters()), dict(self.named_buffers())
        for name, value in tensors.items():
            if name in params:
                params[name].data.copy_(value)
            elif name in buffers:
                owner, _, attr = name.rpartition(".")
                module = self.get_submodule(owner) if owner else self
                setattr(module, attr, value.to(buffers[name].device))

    # ------------------------------------------------------------ the step
    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """The method's G at renders x (diffusion space) for the given timesteps and noise."""
        raise NotImplementedError

    def sample_noise(self, x: torch.Tensor, step: int, generator: torch.Generator | None) -> torch.Tensor:
        """Fresh Gaussian noise like x, drawn on the CPU generator (the same numbers on any device)."""
        return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)

    def sample_extras(self, batch: int, step: int, generator: torch.Generator | None) -> dict:
        """Further random draws a method's `gradient` takes as keyword arguments (drawn after t and noise)."""
        return {}

    def auxiliary_losses(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Extra `loss_*` terms (e.g. VSD's LoRA denoising loss); none by default."""
        return {}

    def forward(
        self,
        rgb: torch.Tensor,
        cameras: Cameras,
        prompt: PromptState,
        step: int,
        generator: torch.Generator | None = None,
        **targets,
    ) -> dict[str, torch.Tensor]:
        """Loss terms whose gradient w.r.t. `rgb` is the method's G. `targets` are per-view images that come with
        the cameras (e.g. DDS's render of the unedited scene) and reach `gradient` as keyword arguments."""
        if self.cfg.pixel_grad_clip is not None and rgb.requires_grad:
            rgb.register_hook(lambda g: pixel_clip(g, self.cfg.pixel_grad_clip))
        x = self.prior.to_diffusion_space(rgb)
        t = self.sample_timesteps(x.shape[0], step, generator).to(x.device)
        if self.views_per_set > 1:  # MVDream: the views of a set share their timestep
            t = t[:: self.views_per_set].repeat_interleave(self.views_per_set)
        noise = self.sample_noise(x, step, generator)
        extras = self.sample_extras(x.shape[0], step, generator)
        with self.prior.viewing(cameras.c2w):  # a multi-view prior's camera condition (a 2D prior ignores it)
            grad = self.gradient(x, cameras, prompt, step, t, noise, **extras, **targets)
            grad = self.finish_gradient(grad, step)
            out = {
                f"loss_{self.name}": inject_gradient(x, grad),
                "grad_norm": grad.flatten(1).norm(dim=1).mean(),
                "timestep": t.float().mean(),
            }
            out.update(self.auxiliary_losses(x, cameras, prompt, step, generator))
        return out
