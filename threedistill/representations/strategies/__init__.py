"""Training strategies of representations (densification and pruning of Gaussians), registered by name:
`default` (3DGS density control tuned for text-to-3D), `capture` (3DGS / gsplat's recipe for photographs) and
`mcmc` (3DGS-MCMC's relocation and noise, gsplat's `MCMCStrategy`, for photographs)."""

from .base import Strategy
from .capture import CaptureStrategy, CaptureStrategyConfig
from .default import DefaultStrategy
from .mcmc import McmcStrategy, McmcStrategyConfig

STRATEGIES = {"default": DefaultStrategy, "capture": CaptureStrategy, "mcmc": McmcStrategy}

__all__ = [
    "Strategy",
    "DefaultStrategy",
    "CaptureStrategy",
    "CaptureStrategyConfig",
    "McmcStrategy",
    "McmcStrategyConfig",
    "STRATEGIES",
]
