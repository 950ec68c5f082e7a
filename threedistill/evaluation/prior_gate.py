"""Quality gate of a prior on the toy world: sample every catalogue prompt, judge each image against ground
truth (object by silhouette, colour, white background) and report accuracy per prompt and overall."""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from ..cameras import sample_orbit
from ..errors import ThreeDistillError
from ..priors.base import Prior
from ..priors.sampling import sample_images
from ..toyworld.catalogue import catalogue_subjects
from ..toyworld.dataset import TRAIN_ELEVATION, TRAIN_FOVY, TRAIN_RADIUS
from ..toyworld.prompts import subject_prompt
from ..toyworld.render import render_toy
from .image_judge import SilhouetteBank, judge_image

GATE_TARGET = 0.90


def judge_ground_truth(bank: SilhouetteBank, views_per_subject: int = 4, seed: int = 0) -> float:
    """The judge's own ceiling: share of ground-truth renders (random training-range views) judged fully right."""
    gen = torch.Generator().manual_seed(seed)
    right = total = 0
    for colour, obj in catalogue_subjects():
        cams = sample_orbit(gen, views_per_subject, elevation=TRAIN_ELEVATION, radius=TRAIN_RADIUS, fovy=TRAIN_FOVY)
        for image in render_toy(obj, colour, cams, bank.resolution, bank.resolution, supersample=2)["rgb"]:
            j = judge_image(image, bank)
            right += j.object == obj and j.colour == colour and j.background_clean
            total += 1
    return right / total


def evaluate_prior(
    prior: Prior,
    samples_per_prompt: int = 8,
    steps: int = 100,
    guidance_scale: float = 5.0,
    seed: int = 0,
    subjects=None,
    progress: bool = True,
) -> dict:
    """Sample and judge; returns a JSON-ready report with per-prompt and overall accuracies."""
    if samples_per_prompt < 1 or steps < 1:
        raise ThreeDistillError(f"--n and --steps must be positive, got {samples_per_prompt} and {steps}")
    subjects = subjects or catalogue_subjects()
    prompts = [subject_prompt(c, o) for c, o in subjects for _ in range(samples_per_prompt)]
    start = time.time()
    images = sample_images(prior, prompts, steps=steps, guidance_scale=guidance_scale, seed=seed, progress=progress)
    sample_seconds = time.time() - start
    bank = SilhouetteBank(images.shape[-1])
    per_prompt: dict[str, dict] = defaultdict(lambda: {"n": 0, "object": 0, "colour": 0, "background": 0, "all": 0})
    for (colour, obj), image in zip([s for s in subjects for _ in range(samples_per_prompt)], images):
        j = judge_image(image, bank)
        row = per_prompt[subject_prompt(colour, obj)]
        ok_obj, ok_col, ok_bg = j.object == obj, j.colour == colour, j.background_clean
        row["n"] += 1
        row["object"] += ok_obj
        row["colour"] += ok_col
        row["background"] += ok_bg
        row["all"] += ok_obj and ok_col and ok_bg
    total = {k: sum(r[k] for r in per_prompt.values()) for k in ("n", "object", "colour", "background", "all")}
    rate = lambda r, k: r[k] / max(r["n"], 1)  # noqa: E731
    return {
        "settings": {
            "samples_per_prompt": samples_per_prompt,
            "steps": steps,
            "guidance_scale": guidance_scale,
            "seed": seed,
            "resolution": images.shape[-1],
        },
        "sample_seconds": round(sample_seconds, 1),
        "seconds_per_image": round(sample_seconds / len(prompts), 4),
        "accuracy": {k: rate(total, k) for k in ("all", "object", "colour", "background")},
        "judge_on_ground_truth": round(judge_ground_truth(bank, seed=seed), 4),
        "target": GATE_TARGET,
        "passed": rate(total, "all") >= GATE_TARGET,
        "per_prompt": {
            p: {k: rate(r, k) for k in ("all", "object", "colour", "background")} | {"n": r["n"]}
            for p, r in per_prompt.items()
        },
        "_images": images,
    }
