"""View-dependent prompts (DreamFusion): a prompt gets "front view", "side view", "back view" or "overhead view"
from the camera's azimuth and elevation. Every guidance method uses them; the toy prior was trained on them."""

from __future__ import annotations

import unicodedata

import torch

from .errors import ConfigError

VIEW_SUFFIXES = ("front view", "side view", "back view", "overhead view")
OVERHEAD_ELEVATION = 60.0


def check_prompt(text: str, what: str = "the prompt", example: str = "a red duck") -> str:
    """`text` when it can be a prompt: not empty or blank, no control characters (a NUL, an escape code, a
    newline pasted in). Else a one-line ConfigError naming `what`."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{what} is empty; give a text prompt such as --prompt '{example}'")
    bad = next((c for c in text if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ConfigError(
            f"{what} contains the control character U+{ord(bad):04X} at position {text.index(bad)}; "
            "a prompt is one line of text"
        )
    return text


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
