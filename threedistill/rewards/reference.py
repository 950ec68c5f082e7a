"""A reference image of the object from the front (VP3D's visual prompt; Magic123 / DreamGaussian's image-to-3D
reference view) as the trainer's loss term `reference`: at the reference camera the render's colour must match the
image inside its mask and the render's alpha the mask. `reference.image` is a file (RGBA: its alpha is the mask;
RGB: the mask is what differs from the border's colour) or `auto`: drawn from the run's prior for "<prompt>,
front view" with the run's seed, saved as RUN_DIR/reference.png (a resumed run reads it back).

`auto` draws `auto_candidates` images and keeps the best (VP3D's visual prompt, best of a few): a multi-view prior
draws whole sets (the front and three more views at their cameras), judged by the embedded multi-view critic (right
object and colour, one consistent shape, no second face; it cannot tell which view is the front). A 2D prior draws
front views alone: the embedded CLIP keeps those of the right object and colour (within CLIP_GATE of the best), and
among them the prior itself picks the one it takes most for a front view rather than a back view (`front_margin`:
its own noise-prediction error under the two view prompts, a diffusion model as a zero-shot classifier). The
candidates and their scores are saved beside the reference (reference_candidates.png, reference.json)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ThreeDistillError
from . import ExtraTerm

AUTO = "auto"
REFERENCE_FILE = "reference.png"


@dataclass
class ReferenceConfig:
    image: Optional[str] = None  # an image file, or auto (drawn from the prior); None: no reference
    azimuth: float = 0.0  # the reference camera (degrees; the toy world's front faces azimuth 0)
    elevation: float = 15.0
    radius: float = 2.9
    fovy: float = 40.0
    resolution: int = 64  # the size both the render and the image are compared at
    every: int = 1  # steps between reference evaluations
    auto_steps: int = 50  # auto: the prior's sampling steps
    auto_guidance: float = 5.0  # auto: the prior's CFG scale
    auto_candidates: int = 4  # auto: images (a multi-view prior: sets) drawn; the judge keeps the best one
    background_threshold: float = 0.08  # an RGB image's mask: pixels farther than this from the border colour

    def __post_init__(self):
        if self.resolution < 8 or self.every < 1 or self.auto_steps < 1 or self.auto_candidates < 1:
            raise ConfigError(
                f"reference.resolution, reference.every, reference.auto_steps and reference.auto_candidates must be "
                f"at least 8, 1, 1 and 1; got {self.resolution}, {self.every}, {self.auto_steps} and "
                f"{self.auto_candidates}"
            )
        if self.image not in (None, AUTO) and not Path(self.image).is_file():
            raise ConfigError(f"reference.image {self.image!r} is not an image file (or auto)")


def read_rgba(path: str | Path, threshold: float = 0.08) -> tuple[torch.Tensor, torch.Tensor]:
    """An image file as colour (3,H,W) in [0,1] and mask (1,H,W): the alpha of an RGBA image, else the pixels
    farther than `threshold` from the median colour of the border (a plain background). One-line errors."""
    import imageio.v3 as iio

    try:
        image = np.asarray(iio.imread(path), dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:  # imageio's message goes on about plugins: its first line says it
        first = str(err).splitlines()[0].rstrip(".") if str(err) else type(err).__name__
        raise ThreeDistillError(f"cannot read the image {path} ({first}); give a PNG or JPEG file") from None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ThreeDistillError(f"{path} is not an RGB or RGBA image (shape {image.shape})")
    rgb = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)
    if image.shape[-1] == 4:
        mask = torch.from_numpy(np.ascontiguousarray(image[..., 3]))[None]
        return rgb * mask + (1 - mask), mask  # on white, as the prior's images
    return rgb, background_mask(rgb, threshold)


def background_mask(rgb: torch.Tensor, threshold: float) -> torch.Tensor:
    """(1,H,W): 1 where a pixel differs from the median colour of the image's border by more than `threshold`."""
    border = torch.cat([rgb[:, 0], rgb[:, -1], rgb[:, :, 0], rgb[:, :, -1]], dim=1)
    background = border.median(dim=1).values[:, None, None]
    return ((rgb - background).abs().amax(0, keepdim=True) > threshold).float()


class ReferenceTerm(ExtraTerm):
    """loss_reference: mean of mask x (render - image)^2 over colour, plus (alpha - mask)^2, at the reference
    camera; default weight 1000."""

    name = "reference"

    def __init__(self, rgb: torch.Tensor, mask: torch.Tensor, cfg: ReferenceConfig):
        size = (cfg.resolution, cfg.resolution)
        self.rgb = F.interpolate(rgb[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        self.mask = F.interpolate(mask[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        self.cfg = cfg

    def due(self, step: int) -> bool:
        return step % self.cfg.every == 0

    def loss_weights(self, run_steps: int) -> dict:
        return {"reference": 1000.0}

    def camera(self):
        from ..cameras import orbit_cameras

        c = self.cfg
        return orbit_cameras(c.azimuth, c.elevation, c.radius, c.fovy)

    def loss(self, model, generator: torch.Generator, prompt: str) -> torch.Tensor:
        out = model.render(
            self.camera().to(model.device), self.cfg.resolution, self.cfg.resolution, generator=generator
        )
        rgb, mask = self.rgb.to(out["rgb"].device), self.mask.to(out["rgb"].device)
        colour = (mask * (out["rgb"][0] - rgb) ** 2).mean()
        return colour + ((out["alpha"][0] - mask) ** 2).mean()


def reference_term(cfg: ReferenceConfig, prior, run_cfg, run_dir: Path | None, log=print) -> ReferenceTerm | None:
    """The trainer's reference term of a config (None without reference.image); `auto` draws the image from
    `prior` once per run and keeps it in RUN_DIR/reference.png."""
    if cfg.image is None:
        return None
    if cfg.image != AUTO:
        return ReferenceTerm(*read_rgba(cfg.image, cfg.background_threshold), cfg)
    saved = Path(run_dir) / REFERENCE_FILE if run_dir is not None else None
    if saved is None or not saved.is_file():
        image = draw_reference(prior, run_cfg.prompt, cfg, run_cfg.trainer.seed, saved.parent if saved else None, log)
        if saved is None:
            return ReferenceTerm(image, background_mask(image, cfg.background_threshold), cfg)
        from ..utils.images import save_image

        save_image(image, saved)
    return ReferenceTerm(*read_rgba(saved, cfg.background_threshold), cfg)


def draw_reference(prior, prompt: str, cfg: ReferenceConfig, seed: int, out_dir: Path | None = None, log=print):
    """The auto reference (3,H,W) in [0,1]: `cfg.auto_candidates` draws of the front view of `prompt` from `prior`
    (a multi-view prior: whole sets, the front first), the one the judge scores highest (module docstring). With
    `out_dir`, the candidates (a row each; a set's views side by side) and the scores go there too."""
    from ..cameras import set_azimuths
    from ..priors.sampling import DEFAULT_VIEW_ELEVATION, sample_images
    from ..prompting import view_prompt

    # a 2D prior is asked for the front view in words; a multi-view prior draws sets whose first view is the
    # front (sample_images' default cameras), each view in words too where it reads them
    views, n = prior.num_views, cfg.auto_candidates
    prompts = [f"{prompt}, front view"]
    if views > 1:
        suffixed = prior.view_prompts
        azimuths = set_azimuths(torch.zeros(1), views).tolist()  # sample_images' default cameras
        prompts = [view_prompt(prompt, a, DEFAULT_VIEW_ELEVATION) if suffixed else prompt for a in azimuths]
    log(
        f"drawing the reference image of '{prompts[0]}' from the prior ({cfg.auto_steps} steps"
        + (f", the best of {n})" if n > 1 else ")")
    )
    images = sample_images(prior, prompts * n, steps=cfg.auto_steps, guidance_scale=cfg.auto_guidance, seed=seed)
    images = images.cpu().reshape(n, views, *images.shape[1:])
    scores, details = judge_candidates(images, prompt, prior, seed) if n > 1 else (torch.zeros(1), {})
    best = int(scores.argmax())
    if n > 1:
        log(
            f"reference candidates' scores ({details['judge']}): {', '.join(f'{v:.2f}' for v in scores.tolist())}; "
            f"kept #{best}"
        )
        if out_dir is not None:
            from ..utils.files import write_json
            from ..utils.images import save_image

            grid = torch.cat([torch.cat(list(row), dim=2) for row in images], dim=1)  # rows: candidates
            save_image(grid, Path(out_dir) / "reference_candidates.png")
            write_json(Path(out_dir) / "reference.json", {"scores": scores.tolist(), "kept": best} | details)
    return images[best, 0]


CLIP_GATE = 0.05  # a 2D candidate is judged on its view only if its CLIP score is this close to the best one's
FRONT_SAMPLES = 64  # (timestep, noise) pairs of the front/back margin
FRONT_STEPS = (50, 950)  # the timesteps they are drawn from


@torch.no_grad()
def front_margin(prior, images: torch.Tensor, prompt: str, seed: int = 0) -> torch.Tensor:
    """(n,) how much more the prior takes each image (n,3,H,W) in [0,1] for "<prompt>, front view" than for
    "<prompt>, back view": its noise-prediction error under the back prompt minus under the front prompt, over
    FRONT_SAMPLES shared (timestep, noise) pairs, as a z-score (a diffusion model as a zero-shot classifier,
    Li et al. 2023). On the toy world's true views the shipped prior tells front from back in 48 of 48."""
    gen = torch.Generator().manual_seed(seed)
    x0 = prior.to_diffusion_space(images.to(prior.device))
    k = FRONT_SAMPLES
    t = torch.randint(*FRONT_STEPS, (k,), generator=gen)
    noise = torch.randn((k, *x0.shape[1:]), generator=gen)
    front, back = prior.encode_prompt([f"{prompt}, front view", f"{prompt}, back view"]).chunk(2)
    margins = []
    for x in x0:
        x_t = prior.add_noise(x[None].expand(k, -1, -1, -1), noise.to(x.device), t.to(x.device))
        err = [
            ((prior.predict_noise(x_t, t.to(x.device), emb.expand(k, -1, -1)) - noise.to(x.device)) ** 2)
            .float()
            .mean((1, 2, 3))
            for emb in (front, back)
        ]
        diff = (err[1] - err[0]).cpu()
        margins.append(diff.mean() / (diff.std() / k**0.5 + 1e-8))
    return torch.stack(margins)


def judge_candidates(images: torch.Tensor, prompt: str, prior=None, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """(scores (n,), what they came from) of candidates (n, views, 3, H, W), higher better: for sets of the
    critic's number of views, the embedded critic's logit(Yes) - logit(No); for single images, the embedded CLIP's
    text-image cosine (right object and colour), and with `prior`, among the candidates within CLIP_GATE of the
    best CLIP score, the prior's own front/back margin (`front_margin`; the others score below every one of them).
    The embedded critic and CLIP know the toy world's words only: a prompt with other words is not judged by them
    (sets: every score 0, so the first is kept; single images: the margin alone)."""
    n, views = images.shape[:2]
    with torch.no_grad():
        if views > 1:
            from .critic import load_critic, words

            critic = load_critic()
            if critic.views != views:
                raise ThreeDistillError(
                    f"the critic judges sets of {critic.views} views; this prior draws {views}: set "
                    f"reference.auto_candidates=1"
                )
            if any(w not in critic.index for w in words(prompt) if w != ","):
                return torch.zeros(n), {"judge": "none (words the embedded critic does not know)"}
            return critic.reward(images, [prompt] * n), {"judge": "toyworld-critic"}
        from ..config import packaged_asset
        from . import RewardConfig, load_reward

        clip = load_reward(RewardConfig(name="clip", model=str(packaged_asset("critics", "toyworld-clip"))))
        known = clip.tokenizer.unk_token_id not in clip.tokenizer([prompt]).input_ids[0]
        if known:
            similarity = torch.stack([clip.score(image, prompt) for image in images])
            if prior is None:
                return similarity, {"judge": "toyworld-clip"}
        elif prior is None:
            return torch.zeros(n), {"judge": "none (words the embedded CLIP does not know)"}
        else:
            similarity = torch.zeros(n)  # every candidate passes the gate
        margin = front_margin(prior, images[:, 0], prompt, seed)
        passed = similarity >= similarity.max() - CLIP_GATE
        scores = torch.where(passed, margin, margin.min() - 1.0 - (similarity.max() - similarity))
        judge = "toyworld-clip, then the prior's front/back margin" if known else "the prior's front/back margin"
        details = {"judge": judge, "clip": similarity.tolist() if known else None}
        return scores, details | {"front_margin": margin.tolist()}
