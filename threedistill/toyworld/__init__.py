"""The toy world: procedural objects with known 3D ground truth, their renderer, prompts and datasets."""

from . import drags as _drags  # noqa: F401  (registers the `<object>@<drag>` objects with the catalogue)
