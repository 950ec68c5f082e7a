"""Trains the toy drag teacher (`t3d prior train-drag`, configs/prior/toyworld_drag.yaml) on random toy drags
(toyworld/drag_pairs.py) and gates it on the benchmark's twelve named drags, which training never sees.

The teacher is a diffusers UNet2DModel predicting, from x_t and the drag condition of priors/drag_teacher.py (mask,
masked reference, reference, cut-and-paste hint, point maps), either the noise of the dragged image (`prediction:
epsilon`, min-SNR weighted; the first shipped teacher) or the dragged image itself (`prediction: sample`, a plain
clean-image MSE, optionally as a correction to the hint: `hint_residual`). The point condition
is dropped (zero maps, unmoved hint) with probability `uncond_prob` so CFG over points works. Loop: AdamW with
warm-up and cosine decay, EMA weights, snapshots (as the prior's).

Gate (`drag_gate`): DDIM samples (50 steps, point CFG 4) of the held-out pairs; the object's pixels are those that
differ from the empty ground's render by more than 0.1; the moved-part IoU is the IoU of the sample's object
pixels with the dragged truth's inside the drag mask m. Passed when IoU >= 0.8 on >= 85% of samples. The same
IoU of the unedited reference and of the 2D hint are reported as baselines the teacher must beat.

That IoU counts every object pixel inside m, and most of them do not move: the unedited reference scores about
0.76 on it. So the gate also reports the drag itself (`*_moved_accuracy`, a diagnostic, not part of passing): of
the pixels inside m whose object-or-ground label differs between the reference and the dragged truth (where the
part arrives and where it leaves), the share an image labels as the truth does. The reference scores 0 on it by
construction and the truth 1. `teacher_iou_by_drag` gives the teacher's mean IoU per named drag.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from ...errors import ConfigError
from ...priors.drag_teacher import CHANNELS, CLASS_NAME, DragTeacher, drag_condition, inpainting_eps, inpainting_x0
from .common import clipped_step, ema_update, min_snr_loss, warmup_cosine
from .components import build_scheduler, norm_groups


@dataclass
class DragTeacherTrainConfig:
    out: str = "assets/priors/toyworld-drag"
    dataset_cache: str = "data/toyworld_drag_pairs.pt"  # rendered once, reused while its settings match
    drags: int = 1500  # random drags (toyworld/drag_pairs.random_drag seeds 0..drags-1)
    views_per_drag: int = 8
    resolution: int = 32
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 100
    lr_end: float = 0.1
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0  # eps prediction only: min-SNR weighting of the noise loss
    prediction: str = "epsilon"  # what the network predicts: "epsilon" (noise) or "sample" (the clean image)
    hint_residual: bool = False  # "sample" only: the network predicts a correction to the hint channel
    uncond_prob: float = 0.1  # the point condition dropped (for CFG over points)
    channels: list[int] = field(default_factory=lambda: [32, 64, 96])
    layers_per_block: int = 2
    beta_schedule: str = "squaredcos_cap_v2"  # the toy prior's (Drag-SDS shares t between both networks)
    snapshot_every: int = 250
    threads: int = 0
    init_from: Optional[str] = None  # continue from the UNet of a saved teacher (a second stage)
    gate_views: int = 8  # views per named drag in the gate
    gate_steps: int = 50  # DDIM steps of the gate's samples
    gate_scale: float = 4.0  # point CFG of the gate's samples (DYG's s0)
    gate_iou: float = 0.8
    gate_share: float = 0.85

    def __post_init__(self):
        for name in ("drags", "views_per_drag", "steps", "batch_size", "gate_views", "gate_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.resolution not in (16, 32, 64):
            raise ConfigError(f"resolution must be 16, 32 or 64, got {self.resolution}")
        if self.prediction not in ("epsilon", "sample"):
            raise ConfigError(f"prediction must be 'epsilon' or 'sample', got {self.prediction!r}")
        if self.hint_residual and self.prediction != "sample":
            raise ConfigError("hint_residual needs prediction=sample (a correction to the hint is an image)")
        if not 0 <= self.uncond_prob < 1:
            raise ConfigError(f"uncond_prob must be in [0, 1), got {self.uncond_prob}")


def load_or_render_pairs(cfg: DragTeacherTrainConfig, progress: bool = True) -> dict:
    from ..drag_pairs import random_drag_set

    cache = Path(cfg.dataset_cache)
    meta = {"drags": cfg.drags, "views_per_drag": cfg.views_per_drag, "resolution": cfg.resolution}
    if cache.is_file():
        data = torch.load(cache, weights_only=True)
        if data.get("meta") == meta:
            return data
    data = random_drag_set(0, cfg.drags, cfg.views_per_drag, cfg.resolution, progress=progress)
    data["meta"] = meta
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, cache)
    return data


def batch_inputs(data: dict, idx: torch.Tensor, drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0 in [-1, 1], the 12 condition channels) of samples `idx`, the point condition dropped where `drop`."""
    ref = data["before"][idx].float() / 127.5 - 1
    part = data["part"][idx].float() / 255
    cond, uncond, _ = drag_condition(ref, part, data["handles"][idx], data["targets"][idx], data["valid"][idx])
    x0 = data["after"][idx].float() / 127.5 - 1
    return x0, torch.where(drop[:, None, None, None], uncond, cond)


def build_teacher_unet(cfg: DragTeacherTrainConfig):
    from diffusers import UNet2DModel

    n = len(cfg.channels)
    unet = UNet2DModel(
        sample_size=cfg.resolution,
        in_channels=CHANNELS,
        out_channels=3,
        block_out_channels=tuple(cfg.channels),
        down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=8,
        norm_num_groups=norm_groups(cfg.channels),
    )
    if cfg.hint_residual:  # a zero correction: the untrained teacher returns the hint
        torch.nn.init.zeros_(unet.conv_out.weight)
        torch.nn.init.zeros_(unet.conv_out.bias)
    return unet


def save_teacher(out: Path, unet, scheduler, extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet")
    scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": CLASS_NAME,
        "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "threedistill": extra,
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=1) + "\n")


def train_drag_teacher(cfg: DragTeacherTrainConfig, progress: bool = True, log=print) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = load_or_render_pairs(cfg, progress)
    n = len(data["before"])
    if cfg.init_from:
        from diffusers import UNet2DModel

        unet = UNet2DModel.from_pretrained(Path(cfg.init_from) / "unet").float()
    else:
        unet = build_teacher_unet(cfg)
    scheduler = build_scheduler(cfg.beta_schedule, prediction_type=cfg.prediction)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_at = warmup_cosine(cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr_end)
    abar = scheduler.alphas_cumprod
    snr = abar / (1 - abar)
    log(
        f"toy drag teacher: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters, {n} pairs of "
        f"{cfg.drags} random drags at {cfg.resolution}px, {cfg.steps} steps"
        + (f", starting from {cfg.init_from}" if cfg.init_from else "")
    )
    out, start = Path(cfg.out), time.time()

    def snapshot(step: int, gate: dict | None = None):
        extra = {
            "trained_steps": step,
            "hint_residual": cfg.hint_residual,
            "train_config": asdict(cfg),
            "train_seconds": round(time.time() - start, 1),
        }
        save_teacher(out, ema, scheduler, extra | ({"gate": gate} if gate else {}))

    bar = tqdm(range(cfg.steps), desc="training toy drag teacher", disable=not progress)
    for step in bar:
        idx = torch.from_numpy(rng.integers(0, n, cfg.batch_size))
        drop = torch.from_numpy(rng.random(cfg.batch_size) < cfg.uncond_prob)
        x0, condition = batch_inputs(data, idx, drop)
        t = torch.from_numpy(rng.integers(0, 1000, cfg.batch_size))
        noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        xt = scheduler.add_noise(x0, noise, t)
        raw = unet(torch.cat([xt, condition], 1), t).sample
        if cfg.prediction == "sample":  # the clean-image MSE, every t weighted alike
            loss = torch.nn.functional.mse_loss(inpainting_x0(raw, condition, cfg.hint_residual), x0)
        else:
            loss = min_snr_loss(inpainting_eps(raw, xt, t, condition, abar), noise, t, snr, cfg.min_snr_gamma)
        clipped_step(opt, loss, unet.parameters(), lr_at(step))
        ema_update(ema, unet, step, cfg.ema_decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % 50 == 0:
            log(json.dumps({"step": step + 1, "loss": round(loss.item(), 5), "elapsed_s": round(time.time() - start)}))
        if cfg.snapshot_every and (step + 1) % cfg.snapshot_every == 0 and step + 1 < cfg.steps:
            snapshot(step + 1)
    snapshot(cfg.steps)
    gate = drag_gate(DragTeacher(out), cfg, progress=progress)
    snapshot(cfg.steps, gate)
    log(f"saved toy drag teacher to {out} after {time.time() - start:.0f}s; gate: {json.dumps(gate)}")
    return out


def object_pixels(images: torch.Tensor, empty: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """(B,H,W) the pixels where images in [0,1] differ from the empty ground's render by more than `threshold`."""
    return (images - empty).abs().amax(1) > threshold


def mask_iou(mine: torch.Tensor, truth: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(B,) IoU of boolean (B,H,W) object pixels with the truth's within `inside` (1 where both are empty there)."""
    both = (mine & truth & inside).sum((1, 2)).float()
    either = ((mine | truth) & inside).sum((1, 2)).float()
    return torch.where(either > 0, both / either.clamp_min(1), torch.ones_like(both))


def moved_accuracy(mine: torch.Tensor, truth: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """(B,) share of the `moved` pixels whose object label in `mine` equals the truth's (NaN where none moved)."""
    right = ((mine == truth) & moved).sum((1, 2)).float()
    count = moved.sum((1, 2)).float()
    return torch.where(count > 0, right / count.clamp_min(1), torch.full_like(right, float("nan")))


@torch.no_grad()
def drag_gate(teacher: DragTeacher, cfg: DragTeacherTrainConfig, progress: bool = True, images: Path | None = None):
    """The held-out gate on the named drags (see the module docstring)."""
    from ...utils.images import make_grid, save_image
    from ..drag_pairs import named_drag_set
    from ..drags import DRAGS

    data = named_drag_set(cfg.gate_views, cfg.resolution, progress=progress)
    idx = torch.arange(len(data["before"]))
    ref = data["before"].float() / 127.5 - 1
    cond, uncond, m = drag_condition(ref, data["part"].float() / 255, data["handles"], data["targets"], data["valid"])
    samples = []
    for chunk in idx.split(64):
        samples.append(teacher.sample(cond[chunk], uncond[chunk], cfg.gate_scale, cfg.gate_steps, seed=int(chunk[0])))
    sample = (torch.cat(samples) + 1) / 2
    empty = data["empty"].float() / 255
    truth = object_pixels(data["after"].float() / 255, empty)
    inside = m[:, 0] > 0.5
    before = data["before"].float() / 255
    hint = (cond[:, 7:10] + 1) / 2
    labels = {k: object_pixels(v, empty) for k, v in (("teacher", sample), ("reference", before), ("hint", hint))}
    scores = {k: mask_iou(v, truth, inside) for k, v in labels.items()}
    moved = (labels["reference"] != truth) & inside
    moves = {k: moved_accuracy(v, truth, moved) for k, v in labels.items()}
    if images is not None:
        rows = torch.cat([before, hint, sample, data["after"].float() / 255])
        order = torch.arange(len(idx)).reshape(-1, cfg.gate_views)[:, 0]  # the first view of each drag
        save_image(
            make_grid(rows.reshape(4, len(idx), 3, *rows.shape[-2:])[:, order].flatten(0, 1), nrow=len(order)), images
        )
    share = lambda s: float((s >= cfg.gate_iou).float().mean())  # noqa: E731
    names = list(DRAGS)
    by_drag = {names[i]: round(float(scores["teacher"][data["drag"] == i].mean()), 4) for i in range(len(names))}
    return {
        "samples": len(idx),
        "iou_threshold": cfg.gate_iou,
        **{f"{k}_mean_iou": round(float(v.mean()), 4) for k, v in scores.items()},
        **{f"{k}_share": round(share(v), 4) for k, v in scores.items()},
        **{f"{k}_moved_accuracy": round(float(v.nanmean()), 4) for k, v in moves.items()},
        "passed": share(scores["teacher"]) >= cfg.gate_share,
        "teacher_iou_by_drag": by_drag,
    }
