"""Training data for the toy prior: renders of every catalogue subject from random views, with prompts."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..cameras import sample_orbit
from ..errors import ThreeDistillError
from ..utils.files import atomic_path
from .catalogue import catalogue_subjects
from .prompts import subject_prompt
from .render import render_toy


@dataclass
class ToyDataset:
    """images uint8 (N,H,W,3); per image: subject index into `subjects`, azimuth, elevation, radius, fovy."""

    images: np.ndarray
    subject: np.ndarray
    azimuth: np.ndarray
    elevation: np.ndarray
    radius: np.ndarray
    fovy: np.ndarray
    subjects: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.images)

    def prompt(self, i: int) -> str:
        return subject_prompt(*self.subjects[int(self.subject[i])])

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a kill mid-save leaves no broken cache behind
            np.savez_compressed(
                f,
                images=self.images,
                subject=self.subject,
                azimuth=self.azimuth,
                elevation=self.elevation,
                radius=self.radius,
                fovy=self.fovy,
                subjects=np.array([f"{c} {o}" for c, o in self.subjects]),
            )

    @classmethod
    def load(cls, path: str | Path) -> "ToyDataset":
        try:
            data = np.load(path)
            subjects = [tuple(s.split(" ")) for s in data["subjects"].tolist()]
            return cls(
                data["images"],
                data["subject"],
                data["azimuth"],
                data["elevation"],
                data["radius"],
                data["fovy"],
                subjects,
            )
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:  # missing, damaged, truncated
            raise ThreeDistillError(f"cannot read toy dataset {path}: {err}") from None


# The views the prior is trained on (azimuth covers the full circle); the gate judges ground truth on the same.
TRAIN_ELEVATION, TRAIN_RADIUS, TRAIN_FOVY = (-10.0, 75.0), (2.6, 3.2), (40.0, 40.0)


def generate_dataset(
    views_per_subject: int,
    resolution: int,
    seed: int = 0,
    elevation=TRAIN_ELEVATION,
    radius=TRAIN_RADIUS,
    fovy=TRAIN_FOVY,
    supersample: int = 2,
    progress: bool = True,
    views_per_set: int = 1,
) -> ToyDataset:
    """Render `views_per_subject` random views of every catalogue subject (seeded, so reproducible). With
    `views_per_set` V > 1 the views come in sets of V consecutive images (a multi-view prior's training data):
    one random camera, then V - 1 more at its elevation, distance and field of view, 360/V degrees apart."""
    if views_per_subject < 1 or not 8 <= resolution <= 512:
        raise ThreeDistillError(
            f"--views must be >= 1 and --resolution within 8..512, got {views_per_subject}, {resolution}"
        )
    if views_per_set < 1 or views_per_subject % views_per_set:
        raise ThreeDistillError(f"views_per_subject {views_per_subject} is not a multiple of {views_per_set} views")
    gen = torch.Generator().manual_seed(seed)
    subjects = catalogue_subjects()
    images, subject_idx, cams = [], [], []
    for i, (colour, obj) in enumerate(tqdm(subjects, desc="rendering toy dataset", disable=not progress)):
        cameras = sample_orbit(
            gen, views_per_subject, elevation=elevation, radius=radius, fovy=fovy, views_per_set=views_per_set
        )
        for chunk in range(0, views_per_subject, 64):
            part = cameras[chunk : chunk + 64]
            rgb = render_toy(obj, colour, part, resolution, resolution, supersample=supersample)["rgb"]
            images.append((rgb.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
        subject_idx.append(np.full(views_per_subject, i, dtype=np.int16))
        cams.append(cameras)
    cat = lambda f: np.concatenate([getattr(c, f).numpy() for c in cams]).astype(np.float32)  # noqa: E731
    return ToyDataset(
        np.concatenate(images),
        np.concatenate(subject_idx),
        cat("azimuth"),
        cat("elevation"),
        cat("radius"),
        np.rad2deg(cat("fovy")),
        subjects,
    )
