"""A diffusion "teacher" whose data distribution is a known Gaussian, so its exact epsilon is closed-form.

Data for prompt y: x ~ N(mu_y, s^2 I) with mu_y a fixed pseudo-random image per prompt (the empty prompt
has mean 0). Then x_t = alpha x + sigma eps is N(alpha mu, (alpha^2 s^2 + sigma^2) I) and the optimal
eps(x_t) = sigma (x_t - alpha mu) / (alpha^2 s^2 + sigma^2). Used to test guidance identities exactly.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from .base import Prior


class AnalyticGaussianPrior(Prior):
    def __init__(
        self,
        resolution: int = 16,
        channels: int = 3,
        data_std: float = 0.5,
        mean_scale: float = 0.5,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ):
        super().__init__()
        self.native_resolution = resolution
        self.channels = channels
        self.latent = False
        self.prediction_type = "epsilon"
        self.data_std = data_std
        self.mean_scale = mean_scale
        betas = torch.linspace(beta_start, beta_end, 1000, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1 - betas, 0).float()
        self.device = torch.device("cpu")

    def mean_for(self, text: str) -> torch.Tensor:
        """The data mean of a prompt, (C,H,W); zero for the empty prompt."""
        shape = (self.channels, self.native_resolution, self.native_resolution)
        if text == "":
            return torch.zeros(shape)
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % (2**63)
        return self.mean_scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed))

    def _encode_uncached(self, texts: list[str]) -> torch.Tensor:
        # The "embedding" is the flattened mean image, one token: exact and invertible.
        return torch.stack([self.mean_for(t).reshape(1, -1) for t in texts])

    def to_diffusion_space(self, rgb: torch.Tensor) -> torch.Tensor:
        size = self.native_resolution
        if rgb.shape[-2:] != (size, size):
            rgb = F.interpolate(rgb, (size, size), mode="bilinear", align_corners=False)
        return rgb * 2.0 - 1.0

    def from_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1.0) / 2.0).clamp(0, 1)

    def _unet(self, x_t, t, embeddings, **cond):
        mu = embeddings.reshape(x_t.shape)
        alpha, sigma = self.alpha_sigma(t)
        return sigma * (x_t - alpha * mu) / (alpha**2 * self.data_std**2 + sigma**2)
