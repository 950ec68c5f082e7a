"""Rewards: a differentiable score of a few renders of the object against the prompt (higher is better), added to
any guidance method as the named loss term `loss_reward` = -R (guidance_spec section 10). A reward is a frozen
model loaded from a local directory (no hub access): `clip` (a transformers CLIPModel: text-image cosine, or
image-image to a visual prompt), `vlm` (Qwen2-VL / Qwen2.5-VL asked a yes/no question about the views: R =
logit(Yes) - logit(No) of its first answer token, VLM3D), `critic` (the embedded toy critic, a small multi-view
yes/no model trained on toy-world ground truth; its model defaults to assets/critics/toyworld-critic), `orient`
(the orientation judge of rewards/orientation.py: each view's log-probability of its camera's azimuth). Every
image op on the way into the model is a torch op, so the gradient reaches the renders (no PIL or numpy on the
gradient path).

The trainer renders `RewardConfig.views` orbit views 90 degrees apart at a random elevation (MVDream / VLM3D),
every `every` steps, and weighs the term by `trainer.lambdas.reward` (default the VLM3D schedule 300 -> 1)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ThreeDistillError
from ..registry import Registry


@dataclass
class RewardConfig:
    name: Optional[str] = None  # clip | vlm | critic | orient; None: no reward
    model: Optional[str] = None  # the reward model's local directory (critic, orient: default the shipped one)
    views: int = 4  # orbit views 90 degrees apart (360 / views)
    resolution: int = 64  # render size of the reward's views (the model resizes them to its own input)
    every: int = 1  # steps between reward evaluations
    elevation: list = field(default_factory=lambda: [0.0, 30.0])  # degrees, drawn uniformly per evaluation
    radius: float = 2.9
    fovy: float = 40.0
    # vlm: the question (the prompt is put in for {prompt}); VLM3D asks about the text AND geometric consistency
    question: str = (
        "These are {views} views of one 3D object, 90 degrees apart. Do they show {prompt}, with one consistent "
        "shape seen from different sides (no second face, no broken or floating parts)? Answer Yes or No."
    )
    yes: str = "Yes"
    no: str = "No"
    visual_prompt: Optional[str] = None  # clip: an image file to match instead of the text

    def __post_init__(self):
        if self.name is not None and self.name not in REWARDS:
            raise ConfigError(f"unknown reward {self.name!r}; known: {', '.join(REWARDS.names())}")
        needs_model = self.name is not None and getattr(REWARDS.get(self.name), "default_model", None) is None
        if needs_model and not self.model:  # the critic defaults to the shipped one
            raise ConfigError(f"reward {self.name} needs reward.model=DIR (a local {self.name} model directory)")
        if self.views < 1 or self.resolution < 8 or self.every < 1:
            raise ConfigError(
                f"reward.views, reward.resolution and reward.every must be at least 1, 8 and 1; got "
                f"{self.views}, {self.resolution} and {self.every}"
            )
        if len(self.elevation) != 2 or self.elevation[0] > self.elevation[1]:
            raise ConfigError(f"reward.elevation must be [low, high] degrees, got {list(self.elevation)}")


class Reward(nn.Module):
    """A frozen model scoring images (k,3,H,W) in [0,1] against a prompt: `score` returns a scalar tensor with
    gradient with respect to the images (higher is better)."""

    uses_azimuths = False  # True: `score` also takes `azimuths`, the views' camera azimuths in degrees (k,)

    def __init__(self, cfg: RewardConfig):
        super().__init__()
        self.cfg = cfg

    def score(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        raise NotImplementedError


REWARDS: Registry[Reward] = Registry("reward")


def model_dir(path: str | None, kind: str) -> Path:
    """A reward model's local directory, or a one-line error."""
    folder = Path(path or "")
    if not path or not folder.is_dir() or not (folder / "config.json").is_file():
        raise ThreeDistillError(f"reward model {path!r} is not a local {kind} directory (with config.json)")
    return folder


OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_pretrained(model_class, folder: Path, what: str):
    """(model, tokenizer) of a transformers directory, offline, or a one-line error naming the `what` reward."""
    from transformers import AutoTokenizer

    try:
        model = model_class.from_pretrained(folder, local_files_only=True)
        return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ThreeDistillError(f"cannot load the {what} reward from {folder}: {str(err).splitlines()[0]}") from None


def processor_settings(folder: Path) -> dict:
    """A model directory's preprocessor_config.json ({} without one), and its image_mean / image_std filled in
    with OpenAI CLIP's (what CLIP and Qwen2-VL ship)."""
    path = Path(folder) / "preprocessor_config.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    return {"image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD, **settings}


def normalise_images(images: torch.Tensor, size: tuple[int, int], settings: dict) -> torch.Tensor:
    """Images (k,3,H,W) in [0,1] resized to `size` (bilinear, antialiased) and normalised by the processor's
    mean and std, differentiably (no rescale: they are in [0,1] already)."""
    out = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(settings["image_mean"], dtype=out.dtype, device=out.device)[:, None, None]
    std = torch.tensor(settings["image_std"], dtype=out.dtype, device=out.device)[:, None, None]
    return (out - mean) / std


def load_reward(cfg: RewardConfig, device: torch.device | str = "cpu") -> Reward | None:
    """The reward a config names (frozen, eval mode, on `device`), or None."""
    if cfg.name is None:
        return None
    reward = REWARDS.build(cfg.name, cfg)
    return reward.to(device).eval().requires_grad_(False)


class ExtraTerm:
    """A loss term the trainer adds on views of its own (`Trainer(terms=[...])`): `name` (logged and weighted as
    loss_<name>), `due(step)`, `loss(model, generator, prompt)` and its default `loss_weights(run_steps)`."""

    name = "extra"

    def due(self, step: int) -> bool:
        return True

    def loss_weights(self, run_steps: int) -> dict:
        return {}

    def loss(self, model, generator: torch.Generator, prompt: str) -> torch.Tensor:
        raise NotImplementedError


class RewardTerm(ExtraTerm):
    """The reward as the trainer's loss term `reward`: every `every` steps, `cfg.views` orbit views of the model
    90 degrees apart (360 / views) from a random azimuth and elevation drawn from the run's generator, rendered at
    `cfg.resolution` and scored; the loss is -R. Its default weight is VLM3D's 300 -> 1 over the run."""

    name = "reward"

    def __init__(self, reward: Reward, cfg: RewardConfig):
        self.reward, self.cfg = reward, cfg

    def due(self, step: int) -> bool:
        return step % self.cfg.every == 0

    def loss_weights(self, run_steps: int) -> dict:
        return {"reward": [300.0, 1.0, run_steps]}

    def cameras(self, generator: torch.Generator):
        """(cameras, their azimuths in degrees)."""
        from ..cameras import orbit_cameras

        start, lift = torch.rand(2, generator=generator).tolist()
        low, high = self.cfg.elevation
        azimuths = [(start * 360.0 + i * 360.0 / self.cfg.views) % 360.0 for i in range(self.cfg.views)]
        cams = orbit_cameras(azimuths, low + (high - low) * lift, self.cfg.radius, self.cfg.fovy)
        return cams, torch.tensor(azimuths)

    def loss(self, model, generator: torch.Generator, prompt: str) -> torch.Tensor:
        cams, azimuths = self.cameras(generator)
        out = model.render(cams.to(model.device), self.cfg.resolution, self.cfg.resolution, generator=generator)
        if self.reward.uses_azimuths:
            return -self.reward.score(out["rgb"], prompt, azimuths=azimuths)
        return -self.reward.score(out["rgb"], prompt)


def reward_term(cfg: RewardConfig, device: torch.device | str = "cpu") -> RewardTerm | None:
    """The trainer's reward term of a config, or None without a reward."""
    reward = load_reward(cfg, device)
    return None if reward is None else RewardTerm(reward, cfg)


from . import clip, critic, orientation, vlm  # noqa: E402,F401  (register the rewards)
from .reference import ReferenceConfig, reference_term  # noqa: E402,F401
