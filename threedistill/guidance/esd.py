"""ESD, Entropic Score Distillation (guidance_spec.md section 3): VSD plus an entropy term on the rendered-image
distribution, through the particle model's camera-unconditional branch:
G = w(t) [eps_pre - lambda eps_psi(x_t; y, 0) - (1 - lambda) eps_psi(x_t; y, c)], i.e. VSD with s_L = 1 - lambda.
lambda = 0 is VSD; the authors' README uses 0.5. Fights the mode collapse (Janus faces) of VSD and SDS.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .vsd import ParticleConfig, ParticleGuidance


@dataclass
class ESDConfig(ParticleConfig):
    entropy_lambda: float = 0.5  # lambda: weight of the camera-unconditional (entropy) branch

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.entropy_lambda <= 1.0:
            raise ConfigError(f"guidance.entropy_lambda must be in [0, 1], got {self.entropy_lambda}")


class ESDGuidance(ParticleGuidance):
    config_class = ESDConfig
    name = "esd"

    @property
    def lora_scale(self) -> float:
        return 1.0 - self.cfg.entropy_lambda
