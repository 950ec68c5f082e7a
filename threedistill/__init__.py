"""threedistill: text to 3D by score distillation, on a plain CPU, measured against toy-world ground truth.

`threedistill.generate(prompt=..., representation=..., ...)` mirrors `t3d generate` and returns the Run.
"""
__version__ = "0.1.0"


def __getattr__(name):
    if name == "generate":  # imported lazily: `import threedistill` stays light
        from .runs import generate
        return generate
    raise AttributeError(f"module 'threedistill' has no attribute {name!r}")
