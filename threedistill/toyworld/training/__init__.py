"""Training of the toy world's models: the embedded pixel and latent priors (`t3d prior train`)."""

from .common import PriorTrainConfig
from .prior import train_prior

__all__ = ["PriorTrainConfig", "train_prior"]
