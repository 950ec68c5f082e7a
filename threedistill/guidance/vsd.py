"""VSD, Variational Score Distillation (ProlificDreamer, as threestudio implements it; guidance_spec.md section 2).

A particle score model eps_psi, a copy of the teacher UNet with LoRA on its attention projections (rank 4,
zero-initialised up projection) and a camera MLP (flattened 4x4 camera-to-world, 16 -> D -> D) added to the
timestep embedding (the class-embedding slot), learns the distribution of the current renders by denoising
them. G = w(t) (eps_pre - eps_est) on the same x_t, with eps_pre the teacher's CFG prediction (view-dependent
prompt, scale 7.5) and eps_est = eps_psi(x_t; y, 0) + s_L (eps_psi(x_t; y, c) - eps_psi(x_t; y, 0)) with the
view-independent prompt. Each step the particle model also takes its own loss (`loss_lora`) on the detached
renders at an independent t' ~ U{0..T-1}, with the camera zeroed 10% of the time. Cost: 2 teacher + 1 (2 when
s_L is not 1) LoRA evaluations without gradient + 1 LoRA training pass per view. Needs a diffusers prior.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..cameras import Cameras
from ..config import schedule_field
from ..errors import ConfigError
from .base import Guidance, GuidanceConfig, PromptState

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class ParticleConfig(GuidanceConfig):
    """Settings shared by VSD and ESD (threestudio's prolificdreamer.yaml scaled to 300 steps)."""

    guidance_scale: Any = 7.5
    max_step_percent: Any = schedule_field(60, 0.98, 0.5, 61)  # a step change at 20% of the run (5000 of 25000)
    lora_rank: int = 4
    camera_dropout: float = 0.1  # probability of the all-zero camera in the LoRA loss (enables the camera CFG)
    lora_timestep_samples: int = 1  # extra t' draws of the LoRA loss per view

    def __post_init__(self):
        super().__post_init__()
        if self.lora_rank < 1:
            raise ConfigError(f"guidance.lora_rank must be >= 1, got {self.lora_rank}")
        if not 0.0 <= self.camera_dropout <= 1.0:
            raise ConfigError(f"guidance.camera_dropout must be in [0, 1], got {self.camera_dropout}")
        if self.lora_timestep_samples < 1:
            raise ConfigError(f"guidance.lora_timestep_samples must be >= 1, got {self.lora_timestep_samples}")


@dataclass
class VSDConfig(ParticleConfig):
    guidance_scale_lora: float = 1.0  # s_L, CFG over the camera in the particle model (1: camera-conditional)


def lora_copy(unet, rank: int, init="default"):
    """A frozen copy of `unet` with trainable LoRA adapters of `rank` on its attention projections (peft's
    `init_lora_weights`: True ("default", zero up-projection) or "gaussian")."""
    from peft import LoraConfig

    copied = copy.deepcopy(unet).requires_grad_(False)
    init = True if init == "default" else init
    copied.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=init, target_modules=LORA_TARGETS))
    return copied


def camera_vectors(cameras: Cameras) -> torch.Tensor:
    """The particle model's camera input: flattened camera-to-world matrices (B, 16)."""
    return cameras.c2w.reshape(len(cameras), 16).float()


class ParticleGuidance(Guidance):
    """VSD-style guidance: a LoRA particle model trained alongside the 3D representation."""

    config_class = ParticleConfig

    def __init__(self, prior, cfg: Optional[ParticleConfig] = None):
        super().__init__(prior, cfg)
        if not hasattr(prior, "unet_output"):
            raise ConfigError(
                f"guidance {self.name} trains a LoRA copy of the prior's UNet and needs a diffusers "
                f"prior (the embedded one or --prior DIR), not {type(prior).__name__}"
            )
        self.lora_unet = lora_copy(prior.unet, self.cfg.lora_rank)
        width = self.lora_unet.time_embedding.linear_2.out_features
        self.camera_mlp = torch.nn.Sequential(
            torch.nn.Linear(16, width), torch.nn.SiLU(), torch.nn.Linear(width, width)
        ).to(prior.device)
        self._camera_embedding: Optional[torch.Tensor] = None
        self.lora_unet.time_embedding.register_forward_hook(self._add_camera)

    def _add_camera(self, module, inputs, output):
        return output if self._camera_embedding is None else output + self._camera_embedding.to(output.dtype)

    @property
    def lora_scale(self) -> float:
        """s_L, the weight of the camera-conditional particle prediction."""
        return self.cfg.guidance_scale_lora

    @property
    def teacher_evals(self) -> int:
        return self.guided_evals + (1 if self.lora_scale in (0.0, 1.0) else 2)

    def particle_output(
        self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, cameras: torch.Tensor
    ) -> torch.Tensor:
        """Raw output of the LoRA particle model for camera vectors (B, 16) (zeros: no camera)."""
        self._camera_embedding = self.camera_mlp(cameras.to(x_t.device))
        try:
            return self.prior.unet_output(self.lora_unet, x_t, t, embeddings)
        finally:
            self._camera_embedding = None

    @torch.no_grad()
    def particle_eps(self, x_t: torch.Tensor, t: torch.Tensor, cameras: Cameras, prompt: PromptState) -> torch.Tensor:
        """eps_est = (1 - s_L) eps_psi(x_t; y, 0) + s_L eps_psi(x_t; y, c), view-independent prompt y."""
        b, s = x_t.shape[0], self.lora_scale
        emb = self.prior.encode_prompt([prompt.prompt] * b)
        cams = camera_vectors(cameras)
        if s in (0.0, 1.0):  # one branch has weight 0: skip it (threestudio evaluates it anyway)
            cams = cams if s == 1.0 else torch.zeros_like(cams)
            return self.prior.to_epsilon(self.particle_output(x_t, t, emb, cams), x_t, t)
        out = self.particle_output(
            torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([emb, emb]), torch.cat([cams, torch.zeros_like(cams)])
        )
        eps_c, eps_0 = self.prior.to_epsilon(out, torch.cat([x_t, x_t]), torch.cat([t, t])).split(b)
        return eps_0 + s * (eps_c - eps_0)

    def gradient(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        x_t = self.prior.add_noise(x.detach(), noise, t)
        eps_pre = self.guided_eps(x_t, t, cameras, prompt, step)
        return self.weight(t) * (eps_pre - self.particle_eps(x_t, t, cameras, prompt))

    def loss_weights(self) -> dict[str, float]:
        return {"lora": 1.0}  # trainer.lambdas.lora changes it; lambda_guidance weights loss_vsd only

    def auxiliary_losses(
        self, x: torch.Tensor, cameras: Cameras, prompt: PromptState, step: int, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """The particle model's denoising loss on the detached renders (independent t', fresh noise,
        camera dropout)."""
        k = self.cfg.lora_timestep_samples
        x0 = x.detach().repeat(k, *[1] * (x.ndim - 1))
        b = x0.shape[0]
        t = torch.randint(0, self.prior.num_train_timesteps, (b,), generator=generator).to(x.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x.device)
        keep = (torch.rand(b, generator=generator) >= self.cfg.camera_dropout).float().unsqueeze(1)
        cams = camera_vectors(cameras).repeat(k, 1) * keep
        emb = self.prior.encode_prompt([prompt.prompt] * b)
        out = self.particle_output(self.prior.add_noise(x0, noise, t), t, emb, cams)
        target = self.prior.training_target(x0, noise, t)
        return {"loss_lora": torch.nn.functional.mse_loss(out.float(), target.float())}


class VSDGuidance(ParticleGuidance):
    config_class = VSDConfig
    name = "vsd"
