"""Trains and evaluates the embedded toy critic (`t3d critic train`, `t3d critic eval`; the model and its format:
threedistill/rewards/critic.py) on toy-world ground truth, seeded, so the same config and seed give the same
weights on CPU.

Data: groups of k = 4 orbit views 90 degrees apart (view i at start + 90 i degrees, the start azimuth uniform, one
elevation and radius per group), rendered by the toy world's ground-truth renderer for every (colour, object) of
the catalogue, each group an *instance*: its body colour jittered around the named colour. Positives are those
groups with their own prompt. Negatives (NEGATIVES) are what score distillation gets wrong, built from the same
renders where the truth is known:

- janus: a genuinely two-faced object (the front parts copied onto the back, rotated 180 degrees), rendered;
- front_copy: the view nearest the back replaced by the view nearest the front (the back shows the face);
- swap: the views nearest the front and the back exchanged;
- mirror: side views, or all four, mirrored left-right (the face turns the wrong way; the order reverses);
- wrong_colour / wrong_object: the views with the prompt of another colour / object;
- holes: see-through discs cut into the object in some views;
- floaters: blobs floating around the object in every view;
- blur: every view Gaussian-blurred.

The first four need an object with a front (snowman, duck, house, robot). The evaluation renders groups with
another seed (cameras and colour instances it never saw) and reports accuracy (R > 0 means yes) and AUC, overall
and per negative type."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...cameras import orbit_cameras
from ...errors import ConfigError, ThreeDistillError
from ...rewards.critic import ARCHITECTURE_KEYS, PAD, UNK, CriticModel, build_critic, save_critic
from ...utils.files import atomic_path, write_json
from ..catalogue import COLOURS, OBJECTS, ToyObject, get_colour, rotation
from ..render import object_sdf, render_field
from .common import WEIGHT_DTYPES, clipped_step, warmup_cosine

NEGATIVES = ("janus", "front_copy", "swap", "mirror", "wrong_colour", "wrong_object", "holes", "floaters", "blur")
FRONT_NEGATIVES = ("janus", "front_copy", "swap", "mirror")  # need an object with a front
PROMPT_FORMS = ("a {colour} {object}", "{colour} {object}", "the {colour} {object}")
FRONT_PART_Z = 0.15  # parts placed this far in front (+Z) are the face: eyes, nose, beak, door, windows


@dataclass
class CriticTrainConfig:
    out: str = "assets/critics/toyworld-critic"
    dataset_cache: str = "data/critic_dataset"  # rendered groups are cached here (.npz + .json), per settings
    seed: int = 0
    eval_seed: int = 1000  # held-out groups: other cameras and colour instances
    groups_per_subject: int = 48  # training groups of views per (colour, object)
    eval_groups_per_subject: int = 8
    views: int = 4
    resolution: int = 64  # render size (the reward's default reward.resolution)
    supersample: int = 2
    elevation: list = field(default_factory=lambda: [-5.0, 40.0])  # degrees (the reward draws within [0, 30])
    radius: list = field(default_factory=lambda: [2.6, 3.2])  # the reward's is 2.9
    fovy: float = 40.0
    colour_jitter: float = 0.06  # per-channel spread of an instance's body colour around the named colour
    objects: list = field(default_factory=list)  # a subset of the catalogue ([]: every object)
    colours: list = field(default_factory=list)  # a subset of the colours ([]: every colour)
    holdout_subjects: list = field(default_factory=list)  # "green duck": never trained on, reported apart
    negatives: list = field(default_factory=lambda: list(NEGATIVES))
    positive_fraction: float = 0.5
    noise: float = 0.02  # Gaussian pixel noise up to this sigma on every training group (positives and negatives)
    # The model (threedistill/rewards/critic.py)
    image_size: int = 48
    channels: list = field(default_factory=lambda: [32, 48, 64, 96])
    feature: int = 128
    text_width: int = 64
    hidden: int = 192
    # Optimisation
    steps: int = 8000
    batch_size: int = 48
    lr: float = 1.5e-3
    warmup_steps: int = 100
    lr_end: float = 0.05
    weight_decay: float = 0.01
    aux_weight: float = 0.3  # training-only heads: each view's colour, object and azimuth (AuxiliaryHeads)
    logit_penalty: float = 1e-3  # + this * R² keeps R = logit(Yes) - logit(No) in a VLM-like range (about +-10)
    threads: int = 0  # torch threads; 0 keeps torch's default
    log_every: int = 100
    weights_dtype: str = "float16"

    def __post_init__(self):
        for name in ("groups_per_subject", "eval_groups_per_subject", "steps", "batch_size", "supersample"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.views != 4:
            raise ConfigError(f"views must be 4 (orbit views 90 degrees apart), got {self.views}")
        if not 16 <= self.resolution <= 256 or not 16 <= self.image_size <= 256:
            raise ConfigError(f"resolution and image_size must be within 16..256, got {self.resolution}, "
                              f"{self.image_size}")  # fmt: skip
        if not self.channels or any(c < 8 or c % 8 for c in self.channels):
            raise ConfigError(f"channels must be a non-empty list of multiples of 8, got {self.channels}")
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise ConfigError(f"image_size {self.image_size} must be divisible by 2^(len(channels) - 1)")
        for name in ("elevation", "radius"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or low_high[0] > low_high[1]:
                raise ConfigError(f"{name} must be [low, high], got {list(low_high)}")
        if self.radius[0] <= 1.0:
            raise ConfigError(f"radius must exceed 1 (the objects fill the unit sphere), got {list(self.radius)}")
        for name in self.objects:
            if name not in OBJECTS:
                raise ConfigError(f"objects: unknown object {name!r}; known: {', '.join(OBJECTS)}")
        for name in self.colours:
            if name not in COLOURS:
                raise ConfigError(f"colours: unknown colour {name!r}; known: {', '.join(COLOURS)}")
        for name in self.negatives:
            if name not in NEGATIVES:
                raise ConfigError(f"negatives: unknown negative {name!r}; known: {', '.join(NEGATIVES)}")
        if not self.negatives:
            raise ConfigError("negatives must name at least one negative type")
        for subject in self.holdout_subjects:
            parts = str(subject).split()
            if len(parts) != 2 or parts[0] not in COLOURS or parts[1] not in OBJECTS:
                raise ConfigError(f"holdout_subjects: {subject!r} is not '<colour> <object>'")
        if not 0 < self.positive_fraction < 1:
            raise ConfigError(f"positive_fraction must be between 0 and 1, got {self.positive_fraction}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ConfigError(f"weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}, got {self.weights_dtype!r}")

    def subjects(self) -> list[tuple[str, str]]:
        """Every (colour, object) the critic knows, in a fixed order."""
        objects = self.objects or list(OBJECTS)
        colours = self.colours or list(COLOURS)
        return [(c, o) for o in objects for c in colours]

    def vocabulary(self) -> list[str]:
        words = {"a", "an", "the", ","} | set(COLOURS) | set(OBJECTS)
        return [PAD, UNK, *sorted(words)]


# ---------------------------------------------------------------- rendering the groups
def two_faced(obj: ToyObject) -> ToyObject:
    """The object with its front parts (eyes, nose, beak, door...) copied onto its back, turned 180 degrees
    about the vertical axis: a genuine Janus object."""
    turn = rotation("y", 180)
    copies = []
    for part in obj.parts:
        if part.offset[2] > FRONT_PART_Z:
            x, y, z = part.offset
            rot = turn if part.rotation is None else turn @ part.rotation
            copies.append(replace(part, offset=(-x, y, -z), rotation=rot))
    return ToyObject(f"{obj.name}~janus", list(obj.parts) + copies, obj.has_front, f"two-faced {obj.name}")


def palette(obj: ToyObject, body) -> torch.Tensor:
    return torch.tensor([p.colour if p.colour is not None else body for p in obj.parts], dtype=torch.float32)


@dataclass
class GroupBank:
    """Rendered groups: images uint8 (G,k,H,W,3), alpha uint8 (G,k,H,W), azimuth (G,k) degrees, subject (G,)
    index into `subjects`, janus uint8 (J,k,H,W,3) the two-faced renders of the fronted groups and janus_row
    (G,) their row (-1 for objects without a front)."""

    images: np.ndarray
    alpha: np.ndarray
    azimuth: np.ndarray
    subject: np.ndarray
    janus: np.ndarray
    janus_row: np.ndarray
    subjects: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.images)

    def fronted(self, g: int) -> bool:
        return self.janus_row[g] >= 0

    def save(self, path: Path) -> None:
        fields = {k: getattr(self, k) for k in ("images", "alpha", "azimuth", "subject", "janus", "janus_row")}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, subjects=np.array([f"{c} {o}" for c, o in self.subjects]), **fields)

    @classmethod
    def load(cls, path: Path) -> "GroupBank":
        data = np.load(path)
        subjects = [tuple(s.split(" ")) for s in data["subjects"].tolist()]
        return cls(*(data[k] for k in ("images", "alpha", "azimuth", "subject", "janus", "janus_row")), subjects)


def render_groups(
    cfg: CriticTrainConfig, subjects: list[tuple[str, str]], per_subject: int, seed: int, progress: bool = True
) -> GroupBank:
    """`per_subject` groups of cfg.views orbit views for every subject, seeded: start azimuth, elevation, radius
    and the body colour's jitter drawn per group; the two-faced twin rendered from the same cameras."""
    gen = torch.Generator().manual_seed(seed)
    k, res = cfg.views, cfg.resolution
    images, alphas, azimuths, subject_idx, janus, janus_row = [], [], [], [], [], []
    for s, (colour, name) in enumerate(tqdm(subjects, desc="rendering critic groups", disable=not progress)):
        obj = OBJECTS[name]
        twin = two_faced(obj) if obj.has_front else None
        for _ in range(per_subject):
            start, lift, dist = torch.rand(3, generator=gen).tolist()
            jitter = (torch.rand(3, generator=gen) * 2 - 1) * cfg.colour_jitter
            body = (torch.tensor(get_colour(colour)) + jitter).clamp(0, 1).tolist()
            az = [(start * 360.0 + i * 360.0 / k) % 360.0 for i in range(k)]
            el = cfg.elevation[0] + (cfg.elevation[1] - cfg.elevation[0]) * lift
            r = cfg.radius[0] + (cfg.radius[1] - cfg.radius[0]) * dist
            cams = orbit_cameras(az, el, r, cfg.fovy)
            with torch.no_grad():
                out, _ = render_field(partial(object_sdf, obj), palette(obj, body), cams, res, res, cfg.supersample)
            images.append(_to_uint8(out["rgb"]))
            alphas.append(_to_uint8(out["alpha"])[..., 0])
            azimuths.append(az)
            subject_idx.append(s)
            if twin is not None:
                with torch.no_grad():
                    two, _ = render_field(partial(object_sdf, twin), palette(twin, body), cams, res, res,
                                          cfg.supersample)  # fmt: skip
                janus_row.append(len(janus))
                janus.append(_to_uint8(two["rgb"]))
            else:
                janus_row.append(-1)
    empty = np.zeros((0, k, res, res, 3), np.uint8)
    return GroupBank(
        np.stack(images),
        np.stack(alphas),
        np.array(azimuths, np.float32),
        np.array(subject_idx, np.int16),
        np.stack(janus) if janus else empty,
        np.array(janus_row, np.int32),
        list(subjects),
    )


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.permute(0, 2, 3, 1).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def cached_groups(
    cfg: CriticTrainConfig, subjects: list[tuple[str, str]], per_subject: int, seed: int, progress: bool = True,
    log=print,
) -> GroupBank:  # fmt: skip
    """render_groups, cached under cfg.dataset_cache per settings (a different setting renders anew)."""
    meta = {
        "subjects": [f"{c} {o}" for c, o in subjects],
        "per_subject": per_subject,
        "seed": seed,
        **{k: getattr(cfg, k) for k in ("views", "resolution", "supersample", "elevation", "radius", "fovy")},
        "colour_jitter": cfg.colour_jitter,
        "version": 1,
    }
    key = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(f"{cfg.dataset_cache}_{key}.npz")
    if path.is_file():
        try:
            return GroupBank.load(path)
        except (OSError, KeyError, ValueError, EOFError) as err:
            log(f"re-rendering the damaged cache {path}: {err}")
    start = time.time()
    bank = render_groups(cfg, subjects, per_subject, seed, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    bank.save(path)
    write_json(path.with_suffix(".json"), meta, indent=1)
    log(f"rendered {len(bank)} groups of {cfg.views} views in {time.time() - start:.0f}s (cached at {path})")
    return bank


# ---------------------------------------------------------------- positives and negatives
def _front_back(azimuth: np.ndarray) -> tuple[int, int]:
    """Indices of the views nearest the front (azimuth 0) and the one opposite it (nearest the back)."""
    front = int(np.argmin(np.abs((azimuth + 180.0) % 360.0 - 180.0)))
    return front, (front + len(azimuth) // 2) % len(azimuth)


def _disc(size: int, cy: float, cx: float, radius: float) -> torch.Tensor:
    """A soft disc mask (H,W) in [0,1]."""
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    d = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
    return (radius + 0.5 - d).clamp(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_example(bank: GroupBank, g: int, kind: str, rng: np.random.Generator) -> tuple[torch.Tensor, str]:
    """The views (k,3,H,W) in [0,1] and prompt of one example of group g: `positive` or a NEGATIVES type."""
    colour, obj = bank.subjects[int(bank.subject[g])]
    x = torch.from_numpy(bank.images[g]).permute(0, 3, 1, 2).float() / 255
    alpha = torch.from_numpy(bank.alpha[g]).float() / 255
    k, size = x.shape[0], x.shape[-1]
    if kind == "wrong_colour":
        colour = str(rng.choice(sorted({c for c, o in bank.subjects if o == obj and c != colour})))
    elif kind == "wrong_object":
        obj = str(rng.choice(sorted({o for c, o in bank.subjects if c == colour and o != obj})))
    elif kind == "janus":
        x = torch.from_numpy(bank.janus[bank.janus_row[g]]).permute(0, 3, 1, 2).float() / 255
    elif kind in ("front_copy", "swap"):
        front, back = _front_back(bank.azimuth[g])
        x = x.clone()
        x[back] = x[front]
        if kind == "swap":
            x[front] = torch.from_numpy(bank.images[g][back]).permute(2, 0, 1).float() / 255
    elif kind == "mirror":
        side = [i for i in range(k) if abs(math.sin(math.radians(float(bank.azimuth[g][i])))) > 0.5]
        choice = rng.integers(4)
        flip = list(range(k)) if choice == 0 else side if choice == 1 else [side[int(rng.integers(len(side)))]]
        x = x.clone()
        x[flip] = x[flip].flip(-1)
    elif kind == "holes":
        x = x.clone()
        chosen = [i for i in range(k) if rng.random() < 0.6] or [int(rng.integers(k))]
        for i in chosen:
            inside = torch.nonzero(alpha[i] > 0.9)
            if len(inside) == 0:
                continue
            for _ in range(int(rng.integers(1, 4))):
                cy, cx = (inside[int(rng.integers(len(inside)))].float() + 0.5).tolist()
                mask = _disc(size, cy, cx, float(rng.uniform(0.06, 0.13)) * size) * alpha[i]
                x[i] = x[i] * (1 - mask) + mask  # see-through: the white background
    elif kind == "floaters":
        x = x.clone()
        for _ in range(int(rng.integers(1, 4))):
            body = torch.tensor(get_colour(colour)) if rng.random() < 0.5 else torch.from_numpy(rng.random(3)).float()
            radius = float(rng.uniform(0.03, 0.08)) * size
            for i in range(k):
                outside = torch.nonzero((alpha[i] < 0.05) & (_disc(size, size / 2, size / 2, 0.45 * size) > 0))
                if len(outside) == 0 or rng.random() < 0.15:
                    continue
                cy, cx = (outside[int(rng.integers(len(outside)))].float() + 0.5).tolist()
                mask = _disc(size, cy, cx, radius) * float(rng.uniform(0.7, 1.0))
                shade = float(rng.uniform(0.6, 1.0))
                x[i] = x[i] * (1 - mask) + mask * (body * shade)[:, None, None]
    elif kind == "blur":
        x = _gaussian_blur(x, float(rng.uniform(1.0, 2.5)) * size / 64)
    elif kind != "positive":
        raise ThreeDistillError(f"unknown example kind {kind!r}")
    form = PROMPT_FORMS[int(rng.integers(len(PROMPT_FORMS)))]
    return x.clamp(0, 1), form.format(colour=colour, object=obj)


def eligible(bank: GroupBank, kind: str) -> np.ndarray:
    """Groups an example of `kind` can be made of (the front negatives need an object with a front)."""
    if kind in FRONT_NEGATIVES:
        return np.nonzero(bank.janus_row >= 0)[0]
    if kind == "wrong_colour":
        ok = [len({c for c, o in bank.subjects if o == obj}) > 1 for _, obj in bank.subjects]
        return np.nonzero(np.array(ok)[bank.subject.astype(np.int64)])[0]
    if kind == "wrong_object":
        ok = [len({o for c, o in bank.subjects if c == col}) > 1 for col, _ in bank.subjects]
        return np.nonzero(np.array(ok)[bank.subject.astype(np.int64)])[0]
    return np.arange(len(bank))


UNMODIFIED = ("positive", "wrong_colour", "wrong_object")  # the views are true renders (their azimuths hold)


def training_batch(bank: GroupBank, cfg: CriticTrainConfig, rng: np.random.Generator, pools: dict):
    """(views (B,k,3,H,W), prompts, labels (B,), groups (B,), kinds): a positive with probability
    cfg.positive_fraction, else a negative of a type drawn uniformly from cfg.negatives; Gaussian noise on every
    example."""
    views, prompts, labels, groups, kinds_drawn = [], [], [], [], []
    kinds = [k for k in cfg.negatives if len(pools[k])]
    for _ in range(cfg.batch_size):
        kind = "positive" if rng.random() < cfg.positive_fraction else kinds[int(rng.integers(len(kinds)))]
        pool = pools[kind]
        g = int(pool[int(rng.integers(len(pool)))])
        x, prompt = make_example(bank, g, kind, rng)
        groups.append(g)
        kinds_drawn.append(kind)
        sigma = float(rng.uniform(0, cfg.noise))
        if sigma > 0:
            x = (x + sigma * torch.from_numpy(rng.standard_normal(x.shape)).float()).clamp(0, 1)
        views.append(x)
        prompts.append(prompt)
        labels.append(1.0 if kind == "positive" else 0.0)
    return torch.stack(views), prompts, torch.tensor(labels), np.array(groups), kinds_drawn


class AuxiliaryHeads(torch.nn.Module):
    """Training-only heads on the per-view features (not saved): the true colour and object of every view, and
    for true renders of objects with a front the view's azimuth (sin, cos), which teaches the features where the
    front is, so the critic can tell two faces, a swap or a mirror."""

    def __init__(self, feature: int, subjects: list[tuple[str, str]]):
        super().__init__()
        self.colours = sorted({c for c, _ in subjects})
        self.objects = sorted({o for _, o in subjects})
        self.colour_of = torch.tensor([self.colours.index(c) for c, _ in subjects])
        self.object_of = torch.tensor([self.objects.index(o) for _, o in subjects])
        self.head = torch.nn.Linear(feature, len(self.colours) + len(self.objects) + 2)

    def loss(self, feats: torch.Tensor, bank: GroupBank, groups: np.ndarray, kinds: list[str]) -> torch.Tensor:
        b, k, _ = feats.shape
        out = self.head(feats)  # (B, k, C + O + 2)
        subject = torch.from_numpy(bank.subject[groups].astype(np.int64))
        n_c = len(self.colours)
        colour = F.cross_entropy(out[..., :n_c].reshape(b * k, -1), self.colour_of[subject].repeat_interleave(k))
        obj = F.cross_entropy(out[..., n_c:-2].reshape(b * k, -1), self.object_of[subject].repeat_interleave(k))
        keep = torch.tensor([kind in UNMODIFIED and bank.fronted(g) for g, kind in zip(groups, kinds)])
        if not keep.any():
            return colour + obj
        az = torch.deg2rad(torch.from_numpy(bank.azimuth[groups]).float())[keep]
        target = torch.stack([az.sin(), az.cos()], -1)
        return colour + obj + F.mse_loss(out[keep][..., -2:], target) * 2


# ---------------------------------------------------------------- training
def new_critic(cfg: CriticTrainConfig) -> CriticModel:
    return build_critic(cfg.vocabulary(), **{k: getattr(cfg, k) for k in ARCHITECTURE_KEYS})


def split_subjects(cfg: CriticTrainConfig) -> tuple[list, list]:
    held = {tuple(s.split()) for s in cfg.holdout_subjects}
    subjects = cfg.subjects()
    return [s for s in subjects if s not in held], [s for s in subjects if s in held]


def train_critic(cfg: CriticTrainConfig, progress: bool = True, log=print) -> Path:
    """Train the critic `cfg` describes, evaluate it on held-out groups and save it to cfg.out (config.json with
    the training config and the evaluation, model.safetensors); returns that folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_subjects, _ = split_subjects(cfg)
    if not train_subjects:
        raise ConfigError("holdout_subjects leaves nothing to train on")
    start = time.time()
    bank = restrict(cached_groups(cfg, cfg.subjects(), cfg.groups_per_subject, cfg.seed, progress, log), train_subjects)
    render_s = time.time() - start
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = new_critic(cfg).train()
    aux = AuxiliaryHeads(cfg.feature, bank.subjects)
    params = list(model.parameters()) + list(aux.parameters())
    pools = {kind: eligible(bank, kind) for kind in ("positive", *cfg.negatives)}
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_at = warmup_cosine(cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr_end)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"toy critic: {n_params / 1e6:.2f}M parameters, {len(bank)} groups of {cfg.views} views "
        f"({len(train_subjects)} subjects), {cfg.steps} steps of {cfg.batch_size}")  # fmt: skip
    train_start, running = time.time(), []
    bar = tqdm(range(cfg.steps), desc="training toy critic", disable=not progress)
    for step in bar:
        views, prompts, labels, groups, kinds = training_batch(bank, cfg, rng, pools)
        feats = model.view_features(views)
        logits = model.judge(feats, model.token_ids(prompts))
        reward = logits[:, 1] - logits[:, 0]
        bce = F.binary_cross_entropy_with_logits(reward, labels)
        loss = bce + cfg.logit_penalty * reward.pow(2).mean()
        if cfg.aux_weight:
            loss = loss + cfg.aux_weight * aux.loss(feats, bank, groups, kinds)
        clipped_step(opt, loss, params, lr_at(step))
        running.append(float(bce.detach()))
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            acc = float(((reward > 0).float() == labels).float().mean())
            log(json.dumps({"step": step + 1, "bce": round(float(np.mean(running)), 4), "batch_acc": round(acc, 3),
                            "elapsed_s": round(time.time() - train_start, 1)}))  # fmt: skip
            running = []
    train_s = time.time() - train_start
    model.eval()
    report = evaluate_critic(model, cfg, progress=progress, log=log)
    extra = {
        "train": asdict(cfg),
        "train_seconds": {"render": round(render_s, 1), "optimise": round(train_s, 1)},
        "torch_threads": torch.get_num_threads(),
        "eval": report,
    }
    out = save_critic(model, cfg.out, extra, WEIGHT_DTYPES[cfg.weights_dtype])
    log(f"saved the toy critic to {out} after {time.time() - start:.0f}s (rendering {render_s:.0f}s, "
        f"training {train_s:.0f}s); held-out AUC {report['overall']['auc']:.4f}")  # fmt: skip
    return out


# ---------------------------------------------------------------- evaluation
def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve: P(a positive scores above a negative), ties counting half."""
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos_ranks = ranks[: len(positive)].sum()
    return float((pos_ranks - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative)))


@torch.no_grad()
def score_examples(model: CriticModel, bank: GroupBank, kinds: list[str], seed: int, batch: int = 64):
    """R of one example of every kind (positive first) for every eligible group: {kind: (groups, R)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for kind in ["positive", *kinds]:
        groups = eligible(bank, kind)
        scores = []
        for i in range(0, len(groups), batch):
            examples = [make_example(bank, int(g), kind, rng) for g in groups[i : i + batch]]
            views = torch.stack([x for x, _ in examples])
            scores.append(model.reward(views, [p for _, p in examples]).numpy())
        out[kind] = (groups, np.concatenate(scores) if scores else np.zeros(0))
    return out


def _rows(scored: dict, bank: GroupBank, kinds: list[str]) -> dict:
    groups, pos = scored["positive"]
    fronted = bank.janus_row[groups] >= 0
    rows, negatives = {}, []
    for kind in kinds:
        _, neg = scored[kind]
        p = pos[fronted] if kind in FRONT_NEGATIVES else pos
        negatives.append(neg)
        rows[kind] = {"n": int(len(neg)), "accuracy": float((neg < 0).mean()) if len(neg) else float("nan"),
                      "auc": auc(p, neg), "mean_R": float(neg.mean()) if len(neg) else float("nan")}  # fmt: skip
    neg = np.concatenate(negatives) if negatives else np.zeros(0)
    pos_acc, neg_acc = float((pos > 0).mean()), float((neg < 0).mean())
    overall = {
        "positives": int(len(pos)),
        "negatives": int(len(neg)),
        "positive_accuracy": pos_acc,
        "negative_accuracy": neg_acc,
        "balanced_accuracy": (pos_acc + neg_acc) / 2,
        "auc": auc(pos, neg),
        "mean_R_positive": float(pos.mean()),
    }
    return {"overall": overall, "per_negative": rows}


def evaluate_critic(
    model: CriticModel, cfg: CriticTrainConfig, progress: bool = True, log=print, seed: Optional[int] = None
) -> dict:
    """Held-out report: groups rendered with cfg.eval_seed (cameras and colour instances never trained on), one
    example of every kind per eligible group; accuracy (R > 0 is yes) and AUC overall and per negative type over
    the trained subjects, and over cfg.holdout_subjects (never trained on at all, not even as a wrong prompt)
    apart (their wrong prompts: any other subject's)."""
    seed = cfg.eval_seed if seed is None else seed
    if seed == cfg.seed:
        raise ConfigError(f"eval_seed must differ from the training seed {cfg.seed} (held-out views)")
    seen, held = split_subjects(cfg)
    start = time.time()
    every = cached_groups(cfg, cfg.subjects(), cfg.eval_groups_per_subject, seed, progress, log)
    kinds = list(cfg.negatives)
    bank = restrict(every, seen)
    report = _rows(score_examples(model, bank, kinds, seed), bank, kinds)
    if held:  # their groups, the wrong prompts from every subject
        keep = np.isin(every.subject, [every.subjects.index(s) for s in held])
        sub = GroupBank(every.images[keep], every.alpha[keep], every.azimuth[keep], every.subject[keep], every.janus,
                        every.janus_row[keep], every.subjects)  # fmt: skip
        report["holdout_subjects"] = {"subjects": cfg.holdout_subjects} | _rows(
            score_examples(model, sub, kinds, seed + 1), sub, kinds
        )
    report["eval_seed"] = seed
    report["groups"] = len(bank)
    report["seconds"] = round(time.time() - start, 1)
    return report


def restrict(bank: GroupBank, subjects: list[tuple[str, str]]) -> GroupBank:
    """The groups of `subjects` only, which are then all the bank knows (its wrong prompts come from them)."""
    if list(subjects) == list(bank.subjects):
        return bank
    index = {s: i for i, s in enumerate(bank.subjects)}
    old = np.array([index[s] for s in subjects], np.int64)
    keep = np.isin(bank.subject, old)
    remap = np.full(len(bank.subjects), -1, np.int64)
    remap[old] = np.arange(len(old))
    return GroupBank(bank.images[keep], bank.alpha[keep], bank.azimuth[keep],
                     remap[bank.subject[keep]].astype(np.int16), bank.janus, bank.janus_row[keep],
                     list(subjects))  # fmt: skip


def report_table(report: dict) -> str:
    """The evaluation as a markdown table."""
    o = report["overall"]
    lines = [
        "| examples | n | accuracy | AUC vs positives | mean R |",
        "|---|---:|---:|---:|---:|",
        f"| positives | {o['positives']} | {o['positive_accuracy']:.3f} | | {o['mean_R_positive']:.2f} |",
    ]
    for kind, row in report["per_negative"].items():
        lines.append(f"| {kind} | {row['n']} | {row['accuracy']:.3f} | {row['auc']:.4f} | {row['mean_R']:.2f} |")
    lines.append(f"| **all negatives** | {o['negatives']} | {o['negative_accuracy']:.3f} | **{o['auc']:.4f}** | |")
    lines.append(f"\nbalanced accuracy {o['balanced_accuracy']:.3f}, overall AUC {o['auc']:.4f}")
    return "\n".join(lines)
