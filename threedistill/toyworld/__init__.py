"""The toy world: procedural objects with known 3D ground truth, their renderer, prompts and datasets."""
