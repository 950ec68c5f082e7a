"""Instruct-NeRF2NeRF's Iterative Dataset Update (guidance_spec.md section 12.2) for `t3d edit --method in2n`.

Not a score-distillation gradient: the region is trained photometrically on a fixed set of edit views whose
images start as the unedited renders and are, every `edit_every` steps, replaced one by one by a diffusion edit
of the current render (SDEdit toward the prompt with a text-only prior, or InstructPix2Pix conditioned on the
original image), so the 3D edit and the 2D edits converge together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..cameras import Cameras
from ..errors import ConfigError, ThreeDistillError
from ..guidance.base import PromptState
from ..objective import Objective, ViewBatch
from ..priors.base import Prior
from ..priors.sampling import make_scheduler
from ..scenes.views import PhotometricLoss


@dataclass
class In2NConfig:
    """The `in2n:` section of an edit config: the edit dataset and how (often) its images are re-edited."""

    n_views: int = 24  # edit cameras in the dataset, drawn once around the region
    edit_every: int = 10  # trainer steps between dataset updates (IN2N's edit_rate)
    edit_count: int = 1  # dataset images replaced per update, cycling through the dataset in order
    t_min: float = 0.3  # T_e ~ U{floor(T t_min), ..., floor(T t_max)}; IN2N's IP2P uses 0.02..0.98, a text-only
    t_max: float = 0.7  # SDEdit needs a narrower window to keep the object where it is (configs/edit/in2n.yaml)
    edit_denoise_steps: int = 20  # DDIM steps from T_e to 0
    lambda_dssim: float = 0.2  # photometric loss (1 - l) L1 + l D-SSIM, as t3d fit

    def __post_init__(self):
        if self.n_views < 1 or self.edit_every < 1 or self.edit_denoise_steps < 1:
            raise ConfigError("in2n.n_views, in2n.edit_every and in2n.edit_denoise_steps must be >= 1")
        if not 1 <= self.edit_count <= self.n_views:
            raise ConfigError(
                f"in2n.edit_count must be between 1 and in2n.n_views ({self.n_views}), got {self.edit_count}"
            )
        if not 0 < self.t_min <= self.t_max < 1:
            raise ConfigError(
                f"in2n needs 0 < t_min <= t_max < 1 (fractions of the train timesteps), "
                f"got t_min={self.t_min}, t_max={self.t_max}"
            )
        if not 0 <= self.lambda_dssim <= 1:
            raise ConfigError(f"in2n.lambda_dssim must be in [0, 1], got {self.lambda_dssim}")


# ------------------------------------------------------------------ the 2D edits
def encode(prior: Prior, rgb: torch.Tensor, scaled: bool = True) -> torch.Tensor:
    """Images (B,3,H,W) in [0,1] -> the prior's x at its native size; latent priors take the VAE mode (a
    deterministic encoding, so a resumed run repeats its edits), scaled unless `scaled` is False (IP2P's
    image condition is the unscaled mode)."""
    if not prior.latent:
        return prior.to_diffusion_space(rgb)
    size = prior.native_resolution
    x = F.interpolate(rgb, (size, size), mode="bilinear", align_corners=False, antialias=rgb.shape[-1] > size)
    z = prior.vae.encode(x.to(prior.device, prior.dtype) * 2 - 1).latent_dist.mode()
    return z * prior.latent_scaling if scaled else z


def decode(prior: Prior, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The prior's x -> images (B,3,*size) in [0,1]."""
    rgb = prior.from_diffusion_space(x).float()
    if tuple(rgb.shape[-2:]) != tuple(size):
        rgb = F.interpolate(rgb, size, mode="bilinear", align_corners=False, antialias=rgb.shape[-1] > size[-1])
    return rgb.clamp(0, 1)


def edit_scheduler(prior: Prior, t_edit: int, steps: int):
    """A DDIM scheduler of the prior's schedule whose `steps` timesteps span [t_edit -> 0] (IN2N sets
    num_train_timesteps to T_e before set_timesteps; the noise levels stay those of the full schedule)."""
    scheduler = make_scheduler(prior, "ddim")
    scheduler.register_to_config(num_train_timesteps=int(t_edit))
    scheduler.set_timesteps(max(1, min(int(steps), int(t_edit))))
    return scheduler


@torch.no_grad()
def denoise_from(prior: Prior, x0: torch.Tensor, t_edit: int, steps: int, eps_fn, generator: torch.Generator):
    """SDEdit: noise x0 to the first timestep of `edit_scheduler` with the generator's noise, then DDIM (eta 0)
    to 0 with `eps_fn(x_t, t) -> epsilon`."""
    scheduler = edit_scheduler(prior, t_edit, steps)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    x = prior.add_noise(x0, noise, scheduler.timesteps[:1].to(x0.device))
    for t in scheduler.timesteps:
        x = scheduler.step(eps_fn(x, t.reshape(1).to(x0.device)), t, x).prev_sample
    return x


def sdedit(
    prior: Prior,
    images: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    t_edit: int,
    steps: int,
    guidance_scale: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Text-only edit of images (B,3,H,W) toward the prompt embeddings `cond` (B,L,D): SDEdit from T_e with
    CFG (diffusers convention). Small T_e changes the images little."""
    with torch.no_grad():
        x0 = encode(prior, images)
    eps = lambda x, t: prior.predict_noise_cfg(x, t, cond, uncond, guidance_scale)[0]  # noqa: E731
    return decode(prior, denoise_from(prior, x0, t_edit, steps, eps, generator), images.shape[-2:])


def ip2p_eps(
    eps_full: torch.Tensor, eps_image: torch.Tensor, eps_none: torch.Tensor, text_scale: float, image_scale: float
) -> torch.Tensor:
    """InstructPix2Pix's 3-branch guidance: eps(0,0) + s_T (eps(y,I) - eps(0,I)) + s_I (eps(0,I) - eps(0,0))."""
    return eps_none + text_scale * (eps_full - eps_image) + image_scale * (eps_image - eps_none)


class TextEditor:
    """2D edits with a text-only prior (the embedded toy prior or a Stable Diffusion directory): SDEdit."""

    def __init__(self, prior: Prior, guidance_scale: float, steps: int, negative_prompt: str = ""):
        self.prior, self.guidance_scale, self.steps, self.negative_prompt = (
            prior,
            guidance_scale,
            steps,
            negative_prompt,
        )

    def prompt_state(self, prompt: str) -> PromptState:
        return PromptState(self.prior, prompt, self.negative_prompt, view_dependent=False)

    def __call__(
        self,
        renders: torch.Tensor,
        originals: torch.Tensor,
        prompt: PromptState,
        t_edit: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        b = renders.shape[0]
        return sdedit(
            self.prior,
            renders,
            prompt.prior.encode_prompt([prompt.prompt] * b),
            prompt.unconditional(b),
            t_edit,
            self.steps,
            self.guidance_scale,
            generator,
        )


class InstructPix2PixEditor:
    """2D edits with a local diffusers InstructPix2Pix pipeline (8-channel UNet: noisy latents + the image's
    latents): SDEdit of the render guided by the prompt (an instruction) and the ORIGINAL image (spec 12.2)."""

    def __init__(self, path: str, device, text_scale: float, image_scale: float, steps: int):
        from ..priors import load_prior

        try:
            self.prior = load_prior(path, device=device)
        except ThreeDistillError as err:
            raise ConfigError(
                f"guidance.instruct_pix2pix={path} is not a diffusers InstructPix2Pix pipeline ({err})"
            ) from None
        if not self.prior.latent or self.prior.channels != 8:
            raise ConfigError(
                f"guidance.instruct_pix2pix={path} is not a diffusers InstructPix2Pix pipeline "
                f"(needs a VAE and an 8-channel UNet, found {self.prior.channels} channels"
                f"{'' if self.prior.latent else ' and no VAE'})"
            )
        self.text_scale, self.image_scale, self.steps = text_scale, image_scale, steps

    def prompt_state(self, prompt: str) -> PromptState:
        return PromptState(self.prior, prompt, "", view_dependent=False)

    def __call__(
        self,
        renders: torch.Tensor,
        originals: torch.Tensor,
        prompt: PromptState,
        t_edit: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        p, b = self.prior, renders.shape[0]
        with torch.no_grad():
            x0, image = encode(p, renders), encode(p, originals, scaled=False)
        cond, null = p.encode_prompt([prompt.prompt] * b), p.encode_prompt([""] * b)
        embeddings = torch.cat([cond, null, null])
        condition = torch.cat([image, image, torch.zeros_like(image)])

        def eps(x, t):
            x3, t3 = torch.cat([x, x, x]), t.expand(3 * b)
            out = p.to_epsilon(p._unet(torch.cat([x3, condition], 1), t3, embeddings), x3, t3)
            return ip2p_eps(*out.chunk(3), self.text_scale, self.image_scale)

        return decode(p, denoise_from(p, x0, t_edit, self.steps, eps, generator), renders.shape[-2:])


# ------------------------------------------------------------------ the dataset and the objective
class EditDataset:
    """IN2N's dataset, the Trainer's `views`: `n_views` edit cameras drawn once (with the region views' camera
    sampling, from the run's generator) and their images, which start as the unedited renders."""

    def __init__(self, region_views, n_views: int):
        self.region_views, self.n_views = region_views, n_views
        self.image_size = region_views.image_size
        self.cams: Cameras | None = None

    def draw(self, generator: torch.Generator) -> None:
        """Draw the cameras and render the originals; call once, right after the Trainer is built."""
        self.cams = self.region_views.cameras(generator, self.n_views)
        with torch.no_grad():
            self.originals = self.region_views.original.render(self.cams, *self.image_size)["rgb"].detach()
        self.images = self.originals.clone()

    def cameras(self, generator: torch.Generator, n: int) -> Cameras:
        """Fresh edit cameras (previews), as the region views draw them."""
        return self.region_views.cameras(generator, n)

    def __len__(self) -> int:
        return self.n_views

    def sample(self, generator: torch.Generator, n: int) -> ViewBatch:
        if self.cams is None:
            raise ThreeDistillError("the in2n dataset was not drawn (call draw(generator) before training)")
        idx = torch.randperm(len(self), generator=generator)[:n]
        return ViewBatch(self.cams[idx], self.image_size, {"images": self.images[idx.to(self.images.device)]})


class In2NObjective(Objective):
    """The guidance slot of an in2n edit: the photometric loss against the dataset's current images; every
    `edit_every` calls, the next `edit_count` dataset images (cycling) become edits of the current render."""

    config_class = In2NConfig
    name = "in2n"
    targets = ("images",)

    def __init__(self, cfg: In2NConfig, dataset: EditDataset, render: Callable[[Cameras, int, int], dict], editor):
        super().__init__()
        self.cfg, self.dataset, self.render, self.editor = cfg, dataset, render, editor
        self.photometric = PhotometricLoss(cfg.lambda_dssim)
        self.calls, self.cursor = 0, 0  # forward calls (= trainer steps), next dataset image to edit

    @property
    def prior(self) -> Prior:
        return self.editor.prior

    def prompt_state(self, prompt: str) -> PromptState:
        return self.editor.prompt_state(prompt)

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        return {"images": self.dataset.images, "counters": torch.tensor([self.calls, self.cursor])}

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.dataset.images = tensors["images"].to(self.dataset.images)
        self.calls, self.cursor = (int(v) for v in tensors["counters"])

    def timestep(self, generator: torch.Generator) -> int:
        """T_e ~ U{floor(T t_min), ..., floor(T t_max)}, at least 1."""
        n = self.prior.num_train_timesteps
        lo, hi = max(1, int(n * self.cfg.t_min)), max(1, int(n * self.cfg.t_max))
        return int(torch.randint(lo, hi + 1, (1,), generator=generator))

    @torch.no_grad()
    def update(self, prompt: PromptState, generator: torch.Generator) -> list[int]:
        """Replace the next `edit_count` dataset images by edits of the current renders; returns their indices."""
        d = self.dataset
        edited = [(self.cursor + i) % len(d) for i in range(self.cfg.edit_count)]
        for i in edited:
            render = self.render(d.cams[i], *d.image_size)["rgb"].detach()
            d.images[i] = self.editor(render, d.originals[i : i + 1], prompt, self.timestep(generator), generator)[0]
        self.cursor = (self.cursor + self.cfg.edit_count) % len(d)
        return edited

    def forward(
        self,
        rgb: torch.Tensor,
        cameras: Cameras,
        prompt: PromptState,
        step: int,
        generator: torch.Generator | None = None,
        images: torch.Tensor | None = None,
        masks=None,
    ) -> dict[str, torch.Tensor]:
        losses = self.photometric(rgb, cameras, prompt, step, images=images)
        losses = {"loss_in2n": losses.pop("loss_photometric"), **losses}  # the objective's own term
        self.calls += 1
        if self.calls % self.cfg.edit_every == 0:
            losses["edited_view"] = torch.tensor(float(self.update(prompt, generator)[0]))
        return losses


def build_in2n(cfg, model, region_views, device) -> tuple[In2NObjective, EditDataset]:
    """The in2n objective and its dataset (the Trainer's views) for an edit config; the 2D editor is
    InstructPix2Pix when `guidance.instruct_pix2pix` names a pipeline directory, else SDEdit with the prior.
    Call `dataset.draw(trainer.generator)` once the Trainer exists."""
    from ..priors import load_prior

    g, steps = cfg.guidance, cfg.in2n.edit_denoise_steps
    if not isinstance(g.guidance_scale, (int, float)):
        raise ConfigError(f"in2n takes a number for guidance.guidance_scale, not a schedule ({g.guidance_scale!r})")
    if g.instruct_pix2pix:
        editor = InstructPix2PixEditor(
            g.instruct_pix2pix, device, float(g.guidance_scale), g.image_guidance_scale, steps
        )
    else:
        editor = TextEditor(load_prior(cfg.prior, device=device), float(g.guidance_scale), steps, g.negative_prompt)
    dataset = EditDataset(region_views, cfg.in2n.n_views)
    return In2NObjective(cfg.in2n, dataset, model.render, editor), dataset
