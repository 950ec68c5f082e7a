"""View-dependent prompts (DreamFusion): a prompt gets "front view", "side view", "back view" or "overhead view"
from the camera's azimuth and elevation. Every guidance method uses them; the toy prior was trained on them."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import torch

from .errors import ConfigError, ThreeDistillError

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


def read_prompt_file(path: Path) -> list[str]:
    """The prompts of a prompt file: one per line, blank lines and lines starting with # skipped; a one-line
    error for a missing, unreadable or empty file or a line that cannot be a prompt (naming the line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ThreeDistillError(f"prompt file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ThreeDistillError(
            f"cannot read the prompt file {path}: {getattr(err, 'strerror', None) or err}"
        ) from None
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            prompts.append(check_prompt(line.strip(), f"line {number} of {path}"))
    if not prompts:
        raise ThreeDistillError(f"prompt file {path} has no prompts (one per line, # for comments)")
    return prompts


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
