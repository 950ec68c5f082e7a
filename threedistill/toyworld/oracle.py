"""The toy prior's ceiling: the exact denoiser of its training set, an "oracle" with no network.

For a finite image set {x_i} (the prompt's toy renders and their mirror images) the minimiser of the diffusion
training loss is closed-form: E[x0 | x_t] = sum_i softmax_i(-|x_t - alpha x_i|^2 / 2 sigma^2) x_i, and
eps = (x_t - alpha E[x0 | x_t]) / sigma. So this is what the embedded prior would be with unlimited capacity and
training on its data. Running a method with it separates what the trained network gets wrong from what the
method itself does (`--prior toyworld-oracle`); it knows only the toy world's prompts.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import PriorLoadError, ThreeDistillError
from ..priors.base import Prior, resize_to_native
from ..utils.cache import cache_dir

ORACLE = "toyworld-oracle"


def oracle_dataset(views_per_subject: int, seed: int, progress: bool = True):
    """The toy training set the oracle denoises toward, rendered once (about 100 s on 2 cores) and cached."""
    from .dataset import ToyDataset, generate_dataset

    path = cache_dir("oracle") / f"toyworld_{views_per_subject}v_32px_seed{seed}.npz"
    if path.is_file():
        try:
            return ToyDataset.load(path)
        except ThreeDistillError as err:  # a cache broken by an old version's non-atomic save: render it again
            warnings.warn(f"{err}; rendering the oracle's dataset again", stacklevel=2)
    data = generate_dataset(views_per_subject, 32, seed=seed, progress=progress)
    data.save(path)
    return data


def prompt_groups(data) -> dict[str, np.ndarray]:
    """Image indices for every prompt the prior was trained with: "" (all), each subject's plain prompt, and each
    subject's prompt with a view suffix (the images whose camera gives that suffix)."""
    from ..prompting import view_prompt

    groups: dict[str, list[int]] = {"": list(range(len(data)))}
    for i in range(len(data)):
        plain = data.prompt(i)
        groups.setdefault(plain, []).append(i)
        groups.setdefault(view_prompt(plain, float(data.azimuth[i]), float(data.elevation[i])), []).append(i)
    return {text: np.asarray(idx) for text, idx in groups.items()}


def posterior_mean(
    x_t: torch.Tensor, images: torch.Tensor, sq_norms: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """E[x0 | x_t] for x0 uniform over `images` (N, D), per row of x_t with its own alpha, sigma (B,): the
    softmax-weighted mean of the images under the Gaussian likelihood of x_t."""
    flat = x_t.reshape(x_t.shape[0], -1)
    a, s2 = alpha.reshape(-1, 1).double(), sigma.reshape(-1, 1).double() ** 2
    # -|x_t - alpha x_i|^2 / (2 sigma^2), dropping the |x_t|^2 term that is the same for every i
    logits = (2 * a * (flat @ images.T).double() - a**2 * sq_norms.double()) / (2 * s2)
    return (torch.softmax(logits, dim=1).to(images.dtype) @ images).reshape(x_t.shape)


class EmpiricalPrior(Prior):
    """Exact epsilon of the toy training set, per prompt; pixel space, 32 px, the embedded prior's schedule."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        views_per_subject: int = 500,
        seed: int = 3,
        data=None,
        progress: bool = True,
    ):
        """`data`: a ToyDataset to denoise toward instead of the rendered training set (`views_per_subject`
        random views of every catalogue subject, `seed`; the stage-4 training set by default)."""
        super().__init__()
        from ..priors.diffusers_prior import load_scheduler
        from .training.common import dataset_images

        self.scheduler = load_scheduler(None)  # the embedded prior's noise schedule, no network loaded
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(torch.float32).to(device)
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.latent, self.prediction_type, self.channels = False, "epsilon", 3
        self.device, self.dtype = torch.device(device), torch.float32
        if data is None:
            data = oracle_dataset(views_per_subject, seed, progress=progress)
            self.description = f"{views_per_subject} views per subject (seed {seed}) and their mirror images"
        else:
            self.description = f"{len(data)} given images and their mirror images"
        self.native_resolution = int(data.images.shape[1])
        images = dataset_images(data)
        # every toy object is left-right symmetric, and the prior was trained on mirror images too
        self.images = torch.cat([images, images.flip(-1)]).reshape(2 * len(images), -1).to(self.device)
        self.sq_norms = self.images.square().sum(1)
        groups = prompt_groups(data)
        self.group_indices = [np.concatenate([idx, idx + len(images)]) for idx in groups.values()]
        self.group_of = {text: g for g, text in enumerate(groups)}
        self._group_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"EmpiricalPrior({ORACLE}: {self.description})"

    @staticmethod
    def check_prompt(text: str) -> None:
        """A one-line error unless `text` is a toy-world subject's prompt, optionally with a view suffix (the
        prompts it has images for), checked without rendering anything."""
        from ..prompting import VIEW_SUFFIXES
        from .catalogue import catalogue_subjects
        from .prompts import subject_prompt

        plain = next((text[: -len(s) - 2] for s in VIEW_SUFFIXES if text.endswith(f", {s}")), text)
        if plain and plain not in {subject_prompt(c, o) for c, o in catalogue_subjects()}:
            raise PriorLoadError(
                f'the {ORACLE} prior knows only toy-world prompts ("a red cone", optionally with a '
                f'view suffix such as ", front view"), got {text!r}'
            )

    def _encode_uncached(self, texts: list[str]) -> torch.Tensor:
        for text in texts:
            self.check_prompt(text)
            if text not in self.group_of:
                raise PriorLoadError(f"the {ORACLE} prior's dataset holds no image for the prompt {text!r}")
        return torch.tensor([[[float(self.group_of[t])]] for t in texts])

    def to_diffusion_space(self, rgb: torch.Tensor) -> torch.Tensor:
        return resize_to_native(rgb, self.native_resolution).float() * 2.0 - 1.0

    def from_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1.0) / 2.0).clamp(0, 1)

    def _group(self, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A prompt's images and their squared norms (the empty prompt's are all of them, not copied)."""
        if self.group_of[""] == g:
            return self.images, self.sq_norms
        if g not in self._group_cache:
            idx = torch.from_numpy(self.group_indices[g]).to(self.device)
            self._group_cache[g] = self.images[idx], self.sq_norms[idx]
        return self._group_cache[g]

    def _unet(self, x_t, t, embeddings, **cond):
        alpha, sigma = (s.reshape(-1) for s in self.alpha_sigma(t.to(self.device)))
        groups = embeddings.reshape(-1).long().to(self.device)
        x = x_t.detach().to(self.device, torch.float32)
        x0 = torch.empty_like(x)
        for g in groups.unique().tolist():
            rows = (groups == g).nonzero().reshape(-1)
            x0[rows] = posterior_mean(x[rows], *self._group(g), alpha[rows], sigma[rows])
        eps = (x - alpha.view(-1, 1, 1, 1) * x0) / sigma.view(-1, 1, 1, 1)
        return eps.to(x_t.device, x_t.dtype)
