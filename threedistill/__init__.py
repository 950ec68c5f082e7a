"""threedistill: text to 3D by score distillation, on a plain CPU, measured against toy-world ground truth."""
__version__ = "0.1.0"
