"""View-dependent prompts (DreamFusion): a prompt gets "front view", "side view", "back view" or "overhead view"
from the camera's azimuth and elevation. Every guidance method uses them; the toy prior was trained on them."""

from __future__ import annotations

import torch

VIEW_SUFFIXES = ("front view", "side view", "back view", "overhead view")
OVERHEAD_ELEVATION = 60.0


def view_name(azimuth: float, elevation: float) -> str:
    """DreamFusion's rule: overhead above 60 degrees elevation, else front (|az| < 45), back (|az| > 135), side."""
    if elevation > OVERHEAD_ELEVATION:
        return "overhead view"
    az = (float(azimuth) + 180.0) % 360.0 - 180.0
    if abs(az) < 45.0:
        return "front view"
    if abs(az) > 135.0:
        return "back view"
    return "side view"


def view_prompt(prompt: str, azimuth: float, elevation: float) -> str:
    return f"{prompt}, {view_name(azimuth, elevation)}"


def view_prompts(prompt: str, azimuth: torch.Tensor, elevation: torch.Tensor) -> list[str]:
    """View-suffixed prompts for a batch of cameras."""
    return [view_prompt(prompt, a, e) for a, e in zip(azimuth.tolist(), elevation.tolist())]
