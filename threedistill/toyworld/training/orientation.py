"""Trains the orientation check's judge (`t3d critic train-orient`; rewards/orientation.py): single toy-world views
of the objects that have a front, each labelled with the azimuth bin it shows the object from, blurred, noised and
tinted at random so that the blobby renders of a score-distillation run look like its training images. Seeded:
the same config gives the same weights on CPU. Evaluation on views rendered with another seed (new cameras and
body-colour instances): the share of views whose bin is exact, within one bin, and on the right side (front half
or back half), which is what the check needs."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...cameras import orbit_cameras
from ...errors import ConfigError
from ...rewards.orientation import OrientationJudge, azimuth_bins, save_judge
from ..catalogue import COLOURS, OBJECTS, get_colour
from ..render import object_sdf, render_field
from .critic import palette

FRONTED = [name for name, obj in OBJECTS.items() if obj.has_front]  # the objects the judge learns (snowman, ...)


@dataclass
class OrientTrainConfig:
    out: str = "assets/critics/toyworld-orient"
    seed: int = 0
    eval_seed: int = 1000
    views_per_subject: int = 250  # training views of every (colour, fronted object)
    eval_views_per_subject: int = 40
    resolution: int = 32
    supersample: int = 2
    elevation: list = field(default_factory=lambda: [-5.0, 40.0])
    radius: list = field(default_factory=lambda: [2.6, 3.2])
    fovy: float = 40.0
    colour_jitter: float = 0.06  # per-channel spread of a body-colour instance around the named colour
    views_per_instance: int = 50  # views rendered together, sharing one body-colour instance
    bins: int = 8
    channels: list = field(default_factory=lambda: [32, 64, 96, 128])
    # augmentations of every training image: Gaussian blur with sigma up to this (pixels), gain per channel in
    # [1 - gain, 1 + gain], additive noise of this sigma
    blur_sigma: float = 1.5
    gain: float = 0.2
    noise: float = 0.03
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2.0e-3
    weight_decay: float = 1.0e-4
    label_smoothing: float = 0.1
    threads: int = 1
    log_every: int = 500

    def __post_init__(self):
        if self.bins < 2 or self.bins % 2:
            raise ConfigError(f"bins must be an even number >= 2 (front and back are bins apart), got {self.bins}")
        if min(self.views_per_subject, self.eval_views_per_subject, self.steps, self.batch_size) < 1:
            raise ConfigError("views_per_subject, eval_views_per_subject, steps and batch_size must be >= 1")


def render_views(cfg: OrientTrainConfig, per_subject: int, seed: int, progress: bool = True) -> dict:
    """`per_subject` views of every (colour, fronted object) at random azimuth, elevation and radius, in batches of
    `views_per_instance` sharing a body-colour instance: images (N,3,H,W) uint8, azimuth (N,) degrees, object
    index (N,) into the fronted objects."""
    gen = torch.Generator().manual_seed(seed)
    images, azimuths, objects = [], [], []
    subjects = [(colour, name) for name in FRONTED for colour in COLOURS]
    for colour, name in tqdm(subjects, desc="rendering orientation views", disable=not progress):
        obj = OBJECTS[name]
        for first in range(0, per_subject, cfg.views_per_instance):
            n = min(cfg.views_per_instance, per_subject - first)
            az, lift, dist = (torch.rand(3, n, generator=gen) * torch.tensor([[360.0], [1.0], [1.0]])).unbind(0)
            jitter = (torch.rand(3, generator=gen) * 2 - 1) * cfg.colour_jitter
            body = (torch.tensor(get_colour(colour)) + jitter).clamp(0, 1).tolist()
            el = cfg.elevation[0] + (cfg.elevation[1] - cfg.elevation[0]) * lift
            r = cfg.radius[0] + (cfg.radius[1] - cfg.radius[0]) * dist
            cams = orbit_cameras(az.tolist(), el.tolist(), r.tolist(), cfg.fovy)
            with torch.no_grad():
                out, _ = render_field(
                    partial(object_sdf, obj), palette(obj, body), cams, cfg.resolution, cfg.resolution, cfg.supersample
                )
            images.append((out["rgb"].clamp(0, 1) * 255).round().to(torch.uint8))
            azimuths.append(az)
            objects.append(torch.full((n,), FRONTED.index(name)))
    return {"images": torch.cat(images), "azimuth": torch.cat(azimuths), "object": torch.cat(objects)}


def augment(images: torch.Tensor, cfg: OrientTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Blur (separable Gaussian, sigma drawn per image), per-channel gain and noise, as score-distillation renders."""
    n, c, h, w = images.shape
    sigma = (torch.rand(n, generator=gen) * cfg.blur_sigma).clamp_min(1e-3)
    taps = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n*c, 7)
    x = images.reshape(1, n * c, h, w)
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), kernel[:, None, :, None], groups=n * c)
    x = x.reshape(n, c, h, w) * (1 - cfg.gain + 2 * cfg.gain * torch.rand(n, c, 1, 1, generator=gen))
    return (x + cfg.noise * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def evaluate_judge(judge: OrientationJudge, views: dict, bins: int) -> dict:
    """Held-out accuracy: exact bin, within one bin, and the right half (front or back), overall and per object."""
    with torch.no_grad():
        predicted = judge(views["images"].float() / 255).argmax(1)
    truth = azimuth_bins(views["azimuth"], bins)
    off = (predicted - truth) % bins
    distance = torch.minimum(off, bins - off)

    def rates(keep):
        d = distance[keep]
        return {
            "views": int(keep.sum()),
            "exact": round(float((d == 0).float().mean()), 4),
            "within_one_bin": round(float((d <= 1).float().mean()), 4),
            "right_half": round(float((d < bins // 4).float().mean() + 0.5 * (d == bins // 4).float().mean()), 4),
        }

    report = rates(torch.ones_like(truth, dtype=torch.bool))
    report["per_object"] = {name: rates(views["object"] == i) for i, name in enumerate(FRONTED)}
    return report


def train_judge(cfg: OrientTrainConfig, progress: bool = True, log=print) -> Path:
    """Render, train, evaluate and save the judge to cfg.out; returns the folder."""
    torch.set_num_threads(cfg.threads)
    started = time.time()
    train = render_views(cfg, cfg.views_per_subject, cfg.seed, progress)
    held_out = render_views(cfg, cfg.eval_views_per_subject, cfg.eval_seed, progress)
    rendered = time.time() - started
    torch.manual_seed(cfg.seed)
    judge = OrientationJudge(cfg.bins, cfg.resolution, tuple(cfg.channels))
    opt = torch.optim.AdamW(judge.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    labels = azimuth_bins(train["azimuth"], cfg.bins)
    for step in tqdm(range(1, cfg.steps + 1), desc="training the orientation judge", disable=not progress):
        idx = torch.randint(len(labels), (cfg.batch_size,), generator=gen)
        images = augment(train["images"][idx].float() / 255, cfg, gen)
        logp, target = judge(images), labels[idx]
        loss = (1 - cfg.label_smoothing) * F.nll_loss(logp, target) - cfg.label_smoothing * logp.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0:
            log(f"step {step}: loss {float(loss):.4f}")
    judge.eval()
    report = evaluate_judge(judge, held_out, cfg.bins)
    seconds = {"rendering": round(rendered, 1), "total": round(time.time() - started, 1)}
    return save_judge(judge, cfg.out, {"train": asdict(cfg), "eval": report, "seconds": seconds})
