"""threedistill: text to 3D by score distillation, on a plain CPU, measured against toy-world ground truth.

`threedistill.generate(prompt=..., representation=..., ...)` mirrors `t3d generate` and returns the Run; `fit`,
`edit`, `load_run`, `export_run` and `evaluate_run` mirror the other commands.
"""

__version__ = "0.1.0"


def __getattr__(name):  # imported lazily: `import threedistill` stays light
    if name == "generate":
        from .workflows.generate import generate

        return generate
    if name in ("fit", "edit"):
        from .workflows import edit, fit

        return {"fit": fit.fit, "edit": edit.edit}[name]
    if name in ("load_run", "export_run", "evaluate_run"):
        from .workflows import results

        return getattr(results, name)
    raise AttributeError(f"module 'threedistill' has no attribute {name!r}")
