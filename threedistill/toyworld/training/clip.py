"""Trains the embedded toy CLIP (`t3d critic train-clip`): a transformers CLIPModel with a tiny config (a ViT on
32 px views, a 2-layer text transformer over the toy vocabulary), saved with its word-level tokenizer and a
preprocessor_config.json, so the `clip` reward loads it like any CLIP directory (reward.name=clip
reward.model=assets/critics/toyworld-clip). Seeded: the same config gives the same weights on CPU.

Data: single views of the critic's rendered groups (toyworld/training/critic.py: random cameras, colour instances).
Loss: CLIP's image-to-text cross-entropy over the text embeddings of every catalogue prompt at once (each image's
own prompt is the positive, the other subjects' the negatives), plus text-to-image over the batch's images.
Evaluation on held-out groups: zero-shot accuracy (the best of the catalogue prompts is the right one) and the
cosine gap between the right prompt and the best wrong one."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...errors import ConfigError
from ...rewards import normalise_images
from ...utils.files import write_json
from ..catalogue import COLOURS, OBJECTS
from .common import clipped_step, warmup_cosine
from .components import build_tokenizer
from .critic import PROMPT_FORMS, CriticTrainConfig, cached_groups

SETTINGS = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


@dataclass
class ClipTrainConfig:
    out: str = "assets/critics/toyworld-clip"
    # The rendered groups: the critic's (same settings, same cache)
    dataset_cache: str = "data/critic_dataset"
    seed: int = 0
    eval_seed: int = 1000
    groups_per_subject: int = 48
    eval_groups_per_subject: int = 8
    resolution: int = 64
    supersample: int = 2
    elevation: list = field(default_factory=lambda: [-5.0, 40.0])
    radius: list = field(default_factory=lambda: [2.6, 3.2])
    fovy: float = 40.0
    colour_jitter: float = 0.06
    objects: list = field(default_factory=list)  # a subset of the catalogue ([]: every object)
    colours: list = field(default_factory=list)  # a subset of the colours ([]: every colour)
    # The model (transformers CLIPConfig)
    image_size: int = 32
    patch_size: int = 4
    width: int = 64
    vision_layers: int = 3
    text_layers: int = 2
    heads: int = 4
    projection_dim: int = 64
    # Optimisation
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    lr_end: float = 0.05
    weight_decay: float = 0.01
    threads: int = 0
    log_every: int = 100

    def __post_init__(self):
        for name in ("steps", "batch_size", "groups_per_subject", "eval_groups_per_subject", "width", "heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"patch_size {self.patch_size} must divide image_size {self.image_size}")
        if self.width % self.heads:
            raise ConfigError(f"heads {self.heads} must divide width {self.width}")
        if self.eval_seed == self.seed:
            raise ConfigError(f"eval_seed must differ from seed {self.seed} (held-out views)")

    def render_config(self) -> CriticTrainConfig:
        keys = ("dataset_cache", "resolution", "supersample", "elevation", "radius", "fovy", "colour_jitter",
                "objects", "colours")  # fmt: skip
        return CriticTrainConfig(**{k: getattr(self, k) for k in keys})


MAX_TOKENS = 16


def build_clip_tokenizer():
    """A word-level fast tokenizer over the toy vocabulary: [PAD] 0, [BOS] 1, [UNK] 2, the words, [EOS] last (so
    CLIP pools at the end-of-text token either way)."""
    words = sorted({"a", "an", "the", ","} | set(COLOURS) | set(OBJECTS))
    vocabulary = ["[PAD]", "[BOS]", "[UNK]", *words, "[EOS]"]
    return build_tokenizer(vocabulary, MAX_TOKENS, model_input_names=["input_ids", "attention_mask"])


def build_clip(cfg: ClipTrainConfig, vocab_size: int):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=cfg.width, intermediate_size=2 * cfg.width,
                         num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.heads,
                         max_position_embeddings=MAX_TOKENS, pad_token_id=0, bos_token_id=1,
                         eos_token_id=vocab_size - 1),
        vision_config=dict(hidden_size=cfg.width, intermediate_size=2 * cfg.width, num_hidden_layers=cfg.vision_layers,
                           num_attention_heads=cfg.heads, image_size=cfg.image_size, patch_size=cfg.patch_size),
        projection_dim=cfg.projection_dim,
    )  # fmt: skip
    return CLIPModel(config)


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _Embedder:
    def __init__(self, model, tokenizer, size: int):
        self.model, self.tokenizer, self.size = model, tokenizer, size

    def images(self, x: torch.Tensor) -> torch.Tensor:
        pixels = normalise_images(x, (self.size, self.size), SETTINGS)
        return F.normalize(_features(self.model.get_image_features(pixel_values=pixels)), dim=-1)

    def texts(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        return F.normalize(_features(self.model.get_text_features(**tokens)), dim=-1)


def _views(bank, groups: np.ndarray, views: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(bank.images[groups, views]).permute(0, 3, 1, 2).float() / 255


def train_clip(cfg: ClipTrainConfig, progress: bool = True, log=print) -> Path:
    """Train the toy CLIP, evaluate it on held-out views and save it as a CLIPModel directory in cfg.out."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    render = cfg.render_config()
    subjects = render.subjects()
    bank = cached_groups(render, subjects, cfg.groups_per_subject, cfg.seed, progress, log)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tokenizer = build_clip_tokenizer()
    model = build_clip(cfg, len(tokenizer)).train()
    embed = _Embedder(model, tokenizer, cfg.image_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_at = warmup_cosine(cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr_end)
    log(f"toy CLIP: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(bank) * 4} views, "
        f"{cfg.steps} steps of {cfg.batch_size}")  # fmt: skip
    start = time.time()
    subject_of = bank.subject.astype(np.int64)
    for step in tqdm(range(cfg.steps), desc="training toy CLIP", disable=not progress):
        groups = rng.integers(0, len(bank), cfg.batch_size)
        images = _views(bank, groups, rng.integers(0, bank.images.shape[1], cfg.batch_size))
        form = PROMPT_FORMS[int(rng.integers(len(PROMPT_FORMS)))]
        texts = embed.texts([form.format(colour=c, object=o) for c, o in subjects])
        logits = model.logit_scale.exp() * embed.images(images) @ texts.T  # (B, subjects)
        target = torch.from_numpy(subject_of[groups])
        present = torch.unique(target)  # text -> image over the batch: any image of the subject is right
        text_logits = logits.T[present]
        text_target = (target[None] == present[:, None]).float()
        text_loss = -(text_logits.log_softmax(-1) * text_target).sum(-1).div(text_target.sum(-1)).mean()
        loss = (F.cross_entropy(logits, target) + text_loss) / 2
        clipped_step(opt, loss, model.parameters(), lr_at(step))
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # at most 100, as CLIP
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            acc = float((logits.argmax(-1) == target).float().mean())
            log(json.dumps({"step": step + 1, "loss": round(float(loss), 4), "batch_acc": round(acc, 3),
                            "elapsed_s": round(time.time() - start, 1)}))  # fmt: skip
    train_s = time.time() - start
    model.eval()
    report = evaluate_clip(model, tokenizer, cfg, progress, log)
    out = Path(cfg.out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor = {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": cfg.image_size},
        "crop_size": {"height": cfg.image_size, "width": cfg.image_size},
        "do_rescale": False,
        **SETTINGS,
    }
    write_json(out / "preprocessor_config.json", processor)
    write_json(out / "toyworld_clip.json", {"train": asdict(cfg), "train_seconds": round(train_s, 1), "eval": report})
    log(
        f"saved the toy CLIP to {out} after {train_s:.0f}s of training; held-out zero-shot accuracy "
        f"{report['accuracy']:.3f} (colour {report['colour_accuracy']:.3f}, object {report['object_accuracy']:.3f})"
    )
    return out


@torch.no_grad()
def evaluate_clip(model, tokenizer, cfg: ClipTrainConfig, progress: bool = True, log=print) -> dict:
    """Zero-shot accuracy over the catalogue prompts on every view of held-out groups (cfg.eval_seed)."""
    render = cfg.render_config()
    subjects = render.subjects()
    bank = cached_groups(render, subjects, cfg.eval_groups_per_subject, cfg.eval_seed, progress, log)
    embed = _Embedder(model.eval(), tokenizer, cfg.image_size)
    texts = embed.texts([f"a {c} {o}" for c, o in subjects])
    k = bank.images.shape[1]
    groups = np.repeat(np.arange(len(bank)), k)
    views = np.tile(np.arange(k), len(bank))
    sims = torch.cat([embed.images(_views(bank, groups[i : i + 256], views[i : i + 256])) @ texts.T
                      for i in range(0, len(groups), 256)])  # fmt: skip
    target = torch.from_numpy(bank.subject.astype(np.int64)[groups])
    pred = sims.argmax(-1)
    right = sims.gather(1, target[:, None])[:, 0]
    wrong = sims.scatter(1, target[:, None], -2.0).amax(-1)
    colours = np.array([c for c, _ in subjects])
    objects = np.array([o for _, o in subjects])
    return {
        "views": int(len(groups)),
        "accuracy": float((pred == target).float().mean()),
        "colour_accuracy": float((colours[pred.numpy()] == colours[target.numpy()]).mean()),
        "object_accuracy": float((objects[pred.numpy()] == objects[target.numpy()]).mean()),
        "mean_cosine_right": float(right.mean()),
        "mean_cosine_best_wrong": float(wrong.mean()),
        "share_right_above_every_wrong": float((right > wrong).float().mean()),
        "eval_seed": cfg.eval_seed,
    }
