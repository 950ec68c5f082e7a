"""The `critic` reward: the embedded toy critic, a small multi-view yes/no model trained by the project on toy-world
ground truth (`t3d critic train`, threedistill/toyworld/training/critic.py) and shipped under
assets/critics/toyworld-critic. It plays the part of VLM3D's VLM (guidance_spec section 10): shown the k = 4 orbit
views and the prompt, it answers R = logit(Yes) - logit(No), high when the views show the prompt's object as one
consistent shape, low for a second face (Janus), front and back swapped, mirrored views, the wrong colour or
object, holes, floaters or blur.

View convention: view i is at start_azimuth + i * 360 / k degrees (k = 4: 90 degrees apart, the camera moving
with increasing azimuth, `cameras.orbit_cameras`), the start azimuth unknown to the critic, all at one elevation;
the same layout the reward term renders (`RewardTerm.cameras`). The critic is invariant to a cyclic shift of the
views (it does not know where the start is) but not to their order: reversed order is a mirrored object.

Its on-disk format (documented, no pickle): a folder with
- config.json: {"format": "threedistill-critic", "version": 1, "views", "image_size", "channels", "feature",
  "text_width", "hidden", "vocab": [words...], "train": {...}, "eval": {...}}
- model.safetensors: the weights of `CriticModel` (state_dict names), float32 or float16.
A tiny Qwen2-VL would be the real model's format, but it does not train to the target in minutes on 2 CPU
cores; this is the documented replacement."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import packaged_asset
from ..errors import ConfigError, ThreeDistillError
from ..utils.files import write_json
from . import REWARDS, Reward, RewardConfig

FORMAT = "threedistill-critic"
UNK, PAD = "[UNK]", "[PAD]"


def default_critic_path(name: str = "toyworld-critic") -> Path:
    """The shipped critic: the installed package's assets (threedistill/assets/critics) or the checkout's."""
    return packaged_asset("critics", name)


def words(text: str) -> list[str]:
    """A prompt's lower-cased words and punctuation marks."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.SiLU())


class CriticModel(nn.Module):
    """Per-view CNN (shared) -> a feature per view, modulated by the prompt's embedding (FiLM) -> for each view
    i the ordered ring (f_i, f_i+1, ..., f_i+k-1) through an MLP -> mean and max over i (invariant to the unknown
    start) -> logits (No, Yes). The text embedding is the mean of learned word embeddings of the toy vocabulary."""

    def __init__(
        self,
        vocab: list[str],
        views: int = 4,
        image_size: int = 48,
        channels: tuple[int, ...] = (32, 48, 64, 96),
        feature: int = 128,
        text_width: int = 64,
        hidden: int = 192,
    ):
        super().__init__()
        self.vocab, self.views, self.image_size = list(vocab), views, image_size
        self.index = {w: i for i, w in enumerate(self.vocab)}
        layers, c_in = [], 3
        for i, c in enumerate(channels):  # stride 2 but in the last block: image_size / 2^(len - 1) at the end
            layers.append(_block(c_in, c, 2 if i < len(channels) - 1 else 1))
            c_in = c
        self.cnn = nn.Sequential(*layers)
        side = image_size // 2 ** (len(channels) - 1)
        self.project = nn.Linear(c_in * side * side, feature)  # keeps where things are in the view
        self.embed = nn.Embedding(len(self.vocab), text_width)
        self.film = nn.Linear(text_width, 2 * feature)
        self.ring = nn.Sequential(
            nn.Linear(views * feature + text_width, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.head = nn.Sequential(nn.Linear(2 * hidden + text_width, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """(B, L) word ids, padded with [PAD] (id 0); unknown words are [UNK]."""
        ids = [[self.index.get(w, self.index[UNK]) for w in words(p)] or [self.index[UNK]] for p in prompts]
        width = max(len(i) for i in ids)
        return torch.tensor([i + [self.index[PAD]] * (width - len(i)) for i in ids])

    def text(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.index[PAD]).float()[..., None]
        return (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def view_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, k, feature) of views (B, k, 3, H, W) in [0, 1], before the prompt modulates them."""
        b, k = images.shape[:2]
        if k != self.views:
            raise ThreeDistillError(f"the critic was trained on {self.views} views, got {k}")
        x = images.reshape(b * k, *images.shape[2:])
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        return self.project(self.cnn(x * 2 - 1).flatten(1)).reshape(b, k, -1)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2) = (No, Yes) of views (B, k, 3, H, W) in [0, 1] and word ids (B, L)."""
        return self.judge(self.view_features(images), ids)

    def judge(self, feats: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2) of view features (B, k, feature) and word ids (B, L)."""
        k = feats.shape[1]
        t = self.text(ids.to(feats.device))
        gamma, beta = self.film(t).chunk(2, -1)
        feats = F.silu(feats * (1 + gamma[:, None]) + beta[:, None])
        rings = torch.stack([torch.roll(feats, -i, dims=1).flatten(1) for i in range(k)], 1)  # (B, k, k*F)
        h = self.ring(torch.cat([rings, t[:, None].expand(-1, k, -1)], -1))
        return self.head(torch.cat([h.mean(1), h.amax(1), t], -1))

    def reward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """R = logit(Yes) - logit(No), (B,)."""
        logits = self(images, self.token_ids(prompts))
        return logits[:, 1] - logits[:, 0]

    def settings(self) -> dict:
        return {
            "format": FORMAT,
            "version": 1,
            "views": self.views,
            "image_size": self.image_size,
            "channels": [m[0].out_channels for m in self.cnn],
            "feature": self.project.out_features,
            "text_width": self.embed.embedding_dim,
            "hidden": self.ring[0].out_features,
            "vocab": self.vocab,
        }


ARCHITECTURE_KEYS = ("views", "image_size", "channels", "feature", "text_width", "hidden")


def build_critic(vocab: list[str], **settings) -> CriticModel:
    if PAD not in vocab or UNK not in vocab:
        raise ConfigError(f"the critic's vocabulary needs {PAD} and {UNK}")
    return CriticModel(vocab, **settings)


def save_critic(model: CriticModel, folder: str | Path, extra: dict | None = None, dtype=torch.float32) -> Path:
    """Write config.json and model.safetensors (the documented format of the module docstring)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": FORMAT})
    write_json(folder / "config.json", model.settings() | (extra or {}))
    return folder


def load_critic(path: str | Path | None = None) -> CriticModel:
    """A critic folder (default the shipped one) in eval mode, or a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path) if path else default_critic_path()
    config, weights = folder / "config.json", folder / "model.safetensors"
    if not folder.is_dir() or not config.is_file() or not weights.is_file():
        raise ThreeDistillError(f"critic {str(folder)!r} is not a critic directory (config.json + model.safetensors)")
    try:
        settings = json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise ThreeDistillError(f"cannot read the critic's {config}: {err}") from None
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise ThreeDistillError(f"{config} is not a {FORMAT} config (its 'format' must be {FORMAT!r})")
    try:
        model = build_critic(settings["vocab"], **{k: settings[k] for k in ARCHITECTURE_KEYS})
        state = load_file(str(weights))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (KeyError, TypeError, RuntimeError, SafetensorError, ConfigError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ThreeDistillError(f"cannot load the critic from {folder}: {message}") from None
    return model.eval()


@REWARDS.register("critic")
class CriticReward(Reward):
    """R = logit(Yes) - logit(No) of the toy critic for the k views (k,3,H,W) in [0,1] (views in the order of
    the module docstring); `reward.model` defaults to the shipped critic."""

    default_model = staticmethod(default_critic_path)

    def __init__(self, cfg: RewardConfig):
        super().__init__(cfg)
        self.model = load_critic(cfg.model)
        if cfg.views != self.model.views:
            raise ConfigError(f"the critic judges {self.model.views} views 90 degrees apart; set reward.views=4")
        self._warned: set[str] = set()

    def score(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        unknown = sorted({w for w in words(prompt) if w not in self.model.index} - {","})
        if unknown and prompt not in self._warned:
            self._warned.add(prompt)
            warnings.warn(f"the toy critic does not know the word(s) {', '.join(unknown)} of {prompt!r}")
        return self.model.reward(images[None], [prompt])[0]
