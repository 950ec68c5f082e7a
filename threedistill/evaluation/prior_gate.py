"""Quality gate of a prior on the toy world: sample every catalogue prompt, judge each image against ground
truth (object by silhouette, colour, white background) and report accuracy per prompt and overall."""

from __future__ import annotations

import time
from collections import defaultdict

import torch

from ..cameras import orbit_cameras, sample_orbit
from ..errors import ThreeDistillError
from ..priors.base import Prior
from ..priors.sampling import sample_images
from ..prompting import view_prompt
from ..toyworld.catalogue import OBJECTS, catalogue_subjects
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


GATE_RADIUS = 2.9  # a multi-view prior's camera condition has no distance: its samples are judged at the middle one


def faces_its_camera(image: torch.Tensor, obj: str, colour: str, camera) -> bool:
    """Whether a sampled view of a fronted object shows the side its camera looks at: it is closer (mean squared
    error) to the ground-truth render from its camera than to the one from the opposite azimuth."""
    az, el = float(camera.azimuth[0]), float(camera.elevation[0])
    both = orbit_cameras(torch.tensor([az, az + 180.0]), el, GATE_RADIUS, float(torch.rad2deg(camera.fovy[0])))
    size = image.shape[-1]
    truth = render_toy(obj, colour, both, size, size, supersample=2)["rgb"]
    own, opposite = (((image - t) ** 2).mean() for t in truth)
    return bool(own < opposite)


def evaluate_prior(
    prior: Prior,
    samples_per_prompt: int = 8,
    steps: int = 100,
    guidance_scale: float = 5.0,
    seed: int = 0,
    subjects=None,
    progress: bool = True,
    bank: SilhouetteBank | None = None,
    view_prompts: bool = False,
) -> dict:
    """Sample and judge; returns a JSON-ready report with per-prompt and overall accuracies. A multi-view prior's
    samples are sets of views at random cameras, each judged, plus `front` (a fronted object's view shows the side
    its camera looks at) and `set` (every view of a set right). `view_prompts` asks a 2D prior the same way: each
    sample at a random camera, described by its view suffix (", back view"), judged for `front` too."""
    if samples_per_prompt < 1 or steps < 1:
        raise ThreeDistillError(f"--n and --steps must be positive, got {samples_per_prompt} and {steps}")
    subjects = subjects or catalogue_subjects()
    views = prior.num_views  # a multi-view prior: each sample is a set of views at known cameras
    per_subject = [s for s in subjects for _ in range(samples_per_prompt * views)]
    prompts = [subject_prompt(c, o) for c, o in per_subject]
    cameras = None
    if views > 1 or view_prompts:
        gen = torch.Generator().manual_seed(seed)
        n = len(prompts)
        cameras = sample_orbit(
            gen, n, elevation=TRAIN_ELEVATION, radius=(GATE_RADIUS, GATE_RADIUS), fovy=TRAIN_FOVY, views_per_set=views
        )
    if views == 1 and view_prompts:
        prompts = [view_prompt(p, float(a), float(e)) for p, a, e in zip(prompts, cameras.azimuth, cameras.elevation)]
    start = time.time()
    images = sample_images(
        prior,
        prompts,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        progress=progress,
        cameras=None if cameras is None or views == 1 else cameras.c2w,
    )
    sample_seconds = time.time() - start
    bank = bank or SilhouetteBank(images.shape[-1])
    keys = ("object", "colour", "background", "all") + (("front",) if cameras is not None else ())
    keys += ("set",) if views > 1 else ()
    per_prompt: dict[str, dict] = defaultdict(lambda: {"n": 0, "fronted": 0, "sets": 0} | dict.fromkeys(keys, 0))
    right = []
    for i, ((colour, obj), image) in enumerate(zip(per_subject, images)):
        j = judge_image(image, bank)
        row = per_prompt[subject_prompt(colour, obj)]
        ok_obj, ok_col, ok_bg = j.object == obj, j.colour == colour, j.background_clean
        row["n"] += 1
        row["object"] += ok_obj
        row["colour"] += ok_col
        row["background"] += ok_bg
        row["all"] += ok_obj and ok_col and ok_bg
        right.append(ok_obj and ok_col and ok_bg)
        if cameras is not None and OBJECTS[obj].has_front:
            row["fronted"] += 1
            row["front"] += faces_its_camera(image, obj, colour, cameras[i])
        if views > 1 and i % views == views - 1:
            row["sets"] += 1
            row["set"] += all(right[-views:])
    totals = ("n", "fronted", "sets") + keys
    total = {k: sum(r[k] for r in per_prompt.values()) for k in totals}
    denominator = {"front": "fronted", "set": "sets"}
    rate = lambda r, k: r[k] / max(r[denominator.get(k, "n")], 1)  # noqa: E731
    accuracy = {k: rate(total, k) for k in keys}
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
        "views_per_sample": views,
        "accuracy": accuracy,
        "judge_on_ground_truth": round(judge_ground_truth(bank, seed=seed), 4),
        "target": GATE_TARGET,
        "passed": accuracy["all"] >= GATE_TARGET and accuracy.get("front", 1.0) >= GATE_TARGET,
        "per_prompt": {
            p: {k: rate(r, k) for k in keys if k != "front" or r["fronted"]} | {"n": r["n"]}
            for p, r in per_prompt.items()
        },
        "_images": images,
    }
