"""The one interface every frozen 2D teacher implements (pixel priors such as the toy prior or DeepFloyd IF,
latent priors such as Stable Diffusion). Guidance methods talk only to this."""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from ..errors import ConfigError, ThreeDistillError

PRECISIONS = ("auto", "float32", "bfloat16")


def check_precision(name: str, key: str = "prior_precision") -> str:
    """A precision setting's name, or a one-line error."""
    if name not in PRECISIONS:
        raise ConfigError(f"{key} must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


@functools.lru_cache(maxsize=None)
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX-BF16; read from /proc/cpuinfo, so
    Linux only): there oneDNN's bfloat16 convolutions are faster than float32 ones, elsewhere slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The dtype a prior's network computes in under `name` on `device` (None: its own, float32). `auto` is
    bfloat16 on a CPU with native bfloat16 (about 25% off the toy prior's UNet at the default batch) and float32
    elsewhere, GPUs included."""
    check_precision(name)
    if name == "bfloat16" or (name == "auto" and torch.device(device).type == "cpu" and cpu_has_native_bfloat16()):
        return torch.bfloat16
    return None


def precision_name(name: str, device: torch.device) -> str:
    """What `name` resolves to on `device`, as a word: "bfloat16" or "float32"."""
    return str(resolve_precision(name, device) or torch.float32).removeprefix("torch.")


def resize_to_native(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """Renders (B,3,H,W) resized differentiably to a prior's native size: bilinear, antialiased when shrinking."""
    if rgb.shape[-2:] == (size, size):
        return rgb
    return torch.nn.functional.interpolate(
        rgb, (size, size), mode="bilinear", align_corners=False, antialias=rgb.shape[-1] > size
    )


def alpha_sigma_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t) of a schedule, shaped (B,1,1,1)."""
    abar = alphas_cumprod.to(t.device)[t.long()].view(-1, 1, 1, 1)
    return abar.sqrt(), (1 - abar).sqrt()


def epsilon_from_prediction(
    prediction_type: str, out: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """The noise a model output of `prediction_type` implies at x_t = alpha_t x0 + sigma_t eps (sigma_t floored,
    so t = 0 stays finite): the one conversion the priors and the drag teacher share."""
    alpha, sigma = alpha.to(x_t.dtype), sigma.to(x_t.dtype)
    if prediction_type == "epsilon":
        return out
    if prediction_type == "v_prediction":
        return sigma * x_t + alpha * out
    if prediction_type == "sample":
        return (x_t - alpha * out) / sigma.clamp_min(1e-8)
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


class Prior(ABC):
    """A frozen text-conditioned diffusion model.

    Attributes: `alphas_cumprod` (T,) of the training noise schedule, `native_resolution` (pixels the model
    was trained at), `latent` (whether x lives in a VAE latent space), `prediction_type` of the raw UNet
    ("epsilon", "v_prediction" or "sample"; `predict_noise` always returns epsilon).
    """

    alphas_cumprod: torch.Tensor
    native_resolution: int
    latent: bool
    prediction_type: str
    num_train_timesteps: int = 1000

    compute_dtype: torch.dtype | None = None  # the network's autocast type (None: as stored); `set_precision`
    use_graph: bool = False  # whether the network runs through a traced graph without gradient (priors/graph.py)
    # A multi-view prior (MVDream) denoises sets of `num_views` views of one object jointly, each view conditioned on
    # its camera: the cameras of the images being denoised are given with `viewing(cameras)`; 1: a 2D prior.
    num_views: int = 1
    # whether the prior reads view-suffixed prompts (", back view"): every 2D prior; a multi-view prior only when it
    # was trained with them (the toy one; MVDream is told the camera alone)
    view_prompts: bool = True

    def __init__(self):
        self._prompt_cache: dict[str, torch.Tensor] = {}
        self._cameras: torch.Tensor | None = None

    @contextlib.contextmanager
    def viewing(self, c2w: torch.Tensor | None):
        """The camera-to-world matrices (V,4,4) of the views a multi-view prior denoises inside this context (the
        views of one batch in order; a teacher call on k stacked copies of that batch, e.g. CFG's conditional and
        unconditional halves, sees the cameras repeated k times). A 2D prior ignores them."""
        previous, self._cameras = self._cameras, None if c2w is None else c2w.detach()
        try:
            yield self
        finally:
            self._cameras = previous

    def view_cameras(self, batch: int) -> torch.Tensor:
        """The cameras (batch,4,4) of a batch of images a multi-view prior denoises, or a one-line error."""
        if self._cameras is None:
            raise ThreeDistillError(
                f"this multi-view prior needs the cameras of the {batch} images it denoises (Prior.viewing)"
            )
        views = len(self._cameras)
        if views % self.num_views or batch % views:
            raise ThreeDistillError(
                f"a multi-view prior of {self.num_views} views needs whole sets of views: got {views} cameras for "
                f"a batch of {batch} images (trainer.batch_size must be a multiple of {self.num_views})"
            )
        return self._cameras.repeat(batch // views, 1, 1)

    def set_precision(self, name: str) -> "Prior":
        """Run the network's forward passes in the type `resolve_precision(name)` picks for this prior's device
        (autocast: weights, inputs and outputs stay float32; only the teacher's arithmetic is lower precision)."""
        self.compute_dtype = resolve_precision(name, getattr(self, "device", torch.device("cpu")))
        return self

    def autocast(self):
        """The context the network runs in: autocast to `compute_dtype`, or nothing."""
        if self.compute_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(torch.device(getattr(self, "device", "cpu")).type, dtype=self.compute_dtype)

    @abstractmethod
    def _encode_uncached(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings (B, L, D) for the given prompts."""

    def encode_prompt(self, texts: str | list[str]) -> torch.Tensor:
        """Text embeddings (B, L, D); each distinct prompt is encoded once per prior and then cached."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        missing = sorted({t for t in texts if t not in self._prompt_cache})
        if missing:
            with torch.no_grad():
                for text, emb in zip(missing, self._encode_uncached(missing)):
                    self._prompt_cache[text] = emb
        return torch.stack([self._prompt_cache[t] for t in texts])

    def prompt_warnings(self, text: str) -> list[str]:
        """What the prior will not understand in a prompt (unknown words, a cut-off tail), as warning lines."""
        return []

    @abstractmethod
    def to_diffusion_space(self, rgb: torch.Tensor) -> torch.Tensor:
        """Differentiably map renders (B,3,H,W) in [0,1] to the model's input space x at native resolution."""

    @abstractmethod
    def from_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        """Map x back to RGB images (B,3,h,w) in [0,1] (VAE decode for latent priors)."""

    @abstractmethod
    def _unet(self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, **cond) -> torch.Tensor:
        """Raw model output with the model's prediction type and the input's channel count."""

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signal and noise scales alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), shaped (B,1,1,1)."""
        return alpha_sigma_at(self.alphas_cumprod, t)

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t)
        return alpha.to(x.dtype) * x + sigma.to(x.dtype) * noise

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor, **cond) -> torch.Tensor:
        """Epsilon prediction, converting v- or x0-prediction models (no gradient through the teacher)."""
        t = t.expand(x_t.shape[0]) if t.ndim == 0 or t.numel() == 1 else t
        return self.to_epsilon(self._unet(x_t, t, embeddings, **cond), x_t, t)

    def to_epsilon(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert a raw model output of this prior's prediction type to epsilon."""
        if self.prediction_type == "epsilon":
            return out
        return epsilon_from_prediction(self.prediction_type, out, x_t, *self.alpha_sigma(t))

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What a model of this prediction type is trained to output at alpha_t x0 + sigma_t noise."""
        if self.prediction_type == "epsilon":
            return noise
        alpha, sigma = (s.to(x0.dtype) for s in self.alpha_sigma(t))
        if self.prediction_type == "v_prediction":
            return alpha * noise - sigma * x0
        if self.prediction_type == "sample":
            return x0
        raise ValueError(f"unsupported prediction type {self.prediction_type!r}")

    def predict_noise_cfg(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Classifier-free guidance in the diffusers convention: eps_u + s * (eps_c - eps_u), so s = 1 is
        conditional only (threestudio's scale s' equals s - 1 here). Returns (eps_cfg, eps_cond, eps_uncond);
        both branches run in one batched call."""
        b = x_t.shape[0]
        t = t.expand(b) if t.numel() == 1 else t
        eps = self.predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, uncond]))
        eps_c, eps_u = eps[:b], eps[b:]
        return eps_u + guidance_scale * (eps_c - eps_u), eps_c, eps_u

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One-step clean estimate (x_t - sigma_t eps) / alpha_t."""
        alpha, sigma = self.alpha_sigma(t)
        return (x_t - sigma * eps) / alpha
