"""Drag-SDS, Drag Your Gaussian's guidance (guidance_spec.md section 9.3-9.4), on the drag teacher of
priors/drag_teacher.py.

Per view, at one deterministic t for the batch, t(k) = floor(t_max - (k / K)(t_max - t_min)):
  eps_drag = the teacher's prediction with CFG over the points at s(k) = (s0 - 1)(1 - k/K)^2 + 1 (s0 = 4);
  eps_psi  = the estimator: a LoRA copy of the prior's UNet (rank 16 on q, k, v, out; Gaussian init) with a
             learnable text embedding e (zero-init), on the same x_t (the plain 3-channel input: no mask);
  x0_hat   = x - (sigma_t / alpha_t)(eps_drag - eps_psi);
  loss_drag  = sum_b ||x_b - sg(x0_hat_b)||^2 w(t) alpha_t / sigma_t / B, so dL/dx = (2 / B) w(t)(eps_drag - eps_psi)
               with w = sigma_t^2 (weight 1);
  loss_image = the same on the decoded image, RGB in [0, 1] (weight 0.1; for a pixel prior a rescaling of the first);
  loss_estimator = ||eps_psi(x_t'; t', e) - eps'||^2 at a fresh t' ~ U{0..999} on the detached render (trains only
               the LoRA and e: AdamW, 1e-3 for e, 5e-4 for the LoRA).
The ring regulariser (weight 2500) and the Gaussian groups are the model's (editing/drag_model.py).

The teacher works in the prior's pixel space, so Drag-SDS needs a pixel prior at the teacher's resolution (the
embedded toy prior and toy teacher: 32 px). With handle = target and eps_psi replaced by eps_drag, G = 0
(tests/test_drag_sds.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..cameras import Cameras
from ..errors import ConfigError
from ..guidance.base import Guidance, GuidanceConfig, PromptState
from ..guidance.vsd import lora_copy
from ..priors.drag_teacher import DragTeacher, drag_condition, guidance_scale


@dataclass
class DragSDSConfig(GuidanceConfig):
    teacher: Optional[str] = None  # a drag teacher directory; None: the embedded assets/priors/toyworld-drag
    guidance_scale: Any = 4.0  # s0 of the decaying CFG over the points
    view_dependent_prompting: bool = False  # the prompt is empty (spec 9.7)
    lora_rank: int = 16
    lr_embedding: float = 1.0e-3
    lr_lora: float = 5.0e-4

    def __post_init__(self):
        super().__post_init__()
        if self.lora_rank < 1:
            raise ConfigError(f"guidance.lora_rank must be >= 1, got {self.lora_rank}")
        if not isinstance(self.guidance_scale, (int, float)) or self.guidance_scale < 1:
            raise ConfigError(
                f"guidance.guidance_scale (s0 of Drag-SDS) must be a number >= 1, got {self.guidance_scale}"
            )


class DragSDSGuidance(Guidance):
    config_class = DragSDSConfig
    name = "drag"
    shared_timestep = True
    targets = ("reference", "part", "handles", "targets")

    def __init__(self, prior, cfg: Optional[DragSDSConfig] = None, teacher: DragTeacher | None = None):
        super().__init__(prior, cfg)
        if not hasattr(prior, "unet_output") or prior.latent:
            raise ConfigError(
                f"Drag-SDS needs a pixel-space diffusers prior for its estimator (the embedded toyworld prior), "
                f"not {prior}"
            )
        self.drag_teacher = teacher or DragTeacher(self.cfg.teacher, device=prior.device)
        if self.drag_teacher.resolution != prior.native_resolution:
            raise ConfigError(
                f"the drag teacher works at {self.drag_teacher.resolution} px but the prior at "
                f"{prior.native_resolution} px; give a prior of the teacher's resolution"
            )
        self.estimator = lora_copy(prior.unet, self.cfg.lora_rank, init="gaussian")
        width = prior.encode_prompt([""]).shape[1:]
        self.embedding = torch.nn.Parameter(torch.zeros(1, *width, device=prior.device))

    @property
    def teacher_evals(self) -> int:
        return 2 + 1 + 1  # the teacher's two CFG branches, the estimator without and with gradient

    def prompt_state(self, prompt: str):
        """No text: the teacher is conditioned on points, the estimator on its learnt embedding (spec 9.7)."""
        return None

    def param_groups(self) -> list[dict]:
        lora = [p for p in self.estimator.parameters() if p.requires_grad]
        return [
            {"params": [self.embedding], "lr": self.cfg.lr_embedding, "name": "drag_embedding"},
            {"params": lora, "lr": self.cfg.lr_lora, "name": "drag_lora"},
        ]

    def loss_weights(self) -> dict[str, float]:
        return {"image": 0.1, "estimator": 1.0}

    def sample_timesteps(self, batch: int, step: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """t(k) = floor(t_max - (k / K)(t_max - t_min)), the same for every view of a step."""
        lo, hi = self.timestep_window(step)
        k = min(step, self.cfg.trainer_max_steps) / self.cfg.trainer_max_steps
        return torch.full((batch,), int(hi - k * (hi - lo)), dtype=torch.long)

    def estimator_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embedding.expand(x_t.shape[0], *self.embedding.shape[1:])
        return self.prior.to_epsilon(self.prior.unet_output(self.estimator, x_t, t, emb), x_t, t)

    def teacher_eps(self, x_t, t, step, reference, part, handles, targets, moved=None) -> torch.Tensor:
        ref = self.prior.to_diffusion_space(reference.detach())
        if moved is not None:  # the part's 3D motion rendered (DragViews with a moved scene)
            moved = (self.prior.to_diffusion_space(moved[0].detach()), moved[1])
        cond, uncond, _ = drag_condition(ref, part, handles, targets, moved=moved)
        scale = guidance_scale(step, self.cfg.trainer_max_steps, float(self.cfg.guidance_scale))
        return self.drag_teacher.guided_eps(x_t, t, cond, uncond, scale)

    def gradient(
        self,
        x: torch.Tensor,
        cameras: Cameras,
        prompt: PromptState,
        step: int,
        t: torch.Tensor,
        noise: torch.Tensor,
        reference: torch.Tensor | None = None,
        part: torch.Tensor | None = None,
        handles: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        moved_reference: torch.Tensor | None = None,
        moved_part: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if reference is None or part is None or handles is None or targets is None:
            raise ConfigError("Drag-SDS needs views with the unedited render, the part's footprint and the points")
        x_t = self.prior.add_noise(x.detach(), noise, t)
        moved = None if moved_reference is None else (moved_reference, moved_part)
        eps_drag = self.teacher_eps(x_t, t, step, reference, part, handles, targets, moved)
        with torch.no_grad():
            eps_psi = self.estimator_eps(x_t, t)
        alpha, sigma = self.prior.alpha_sigma(t)
        self._x0_hat = (x.detach() - sigma / alpha * (eps_drag - eps_psi)).detach()
        self._scale = (self.weight(t) * alpha / sigma).detach()
        return 2 * self.weight(t) * (eps_drag - eps_psi)

    def auxiliary_losses(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        image = self.prior.from_diffusion_space(x)
        target = self.prior.from_diffusion_space(self._x0_hat)
        loss_image = (((image - target) ** 2).flatten(1).sum(1) * self._scale.flatten()).sum() / b
        t = torch.randint(0, self.prior.num_train_timesteps, (b,), generator=generator).to(x.device)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        with torch.no_grad():
            x_t = self.prior.add_noise(x.detach(), noise, t)
        out = self.prior.unet_output(self.estimator, x_t, t, self.embedding.expand(b, *self.embedding.shape[1:]))
        target_eps = self.prior.training_target(x.detach(), noise, t)
        return {"loss_image": loss_image, "loss_estimator": torch.nn.functional.mse_loss(out, target_eps)}
