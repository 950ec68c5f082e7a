"""Training strategies of representations (densification and pruning of Gaussians), registered by name:
`default` (3DGS density control tuned for text-to-3D) and `capture` (3DGS / gsplat's recipe for photographs)."""

from .base import Strategy
from .capture import CaptureStrategy, CaptureStrategyConfig
from .default import DefaultStrategy

STRATEGIES = {"default": DefaultStrategy, "capture": CaptureStrategy}

__all__ = ["Strategy", "DefaultStrategy", "CaptureStrategy", "CaptureStrategyConfig", "STRATEGIES"]
