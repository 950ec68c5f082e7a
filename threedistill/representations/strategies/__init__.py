"""Training strategies of representations (densification and pruning of Gaussians)."""

from .base import Strategy
from .default import DefaultStrategy

__all__ = ["Strategy", "DefaultStrategy"]
