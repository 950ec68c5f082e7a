"""Frozen 2D diffusion teachers behind one interface (`Prior`), loaded from local diffusers directories."""
from ..registry import Registry
from .base import Prior
from .diffusers_prior import EMBEDDED, DiffusersPrior, default_prior_path, embedded_prior_path
from .empirical import ORACLE, EmpiricalPrior

PRIORS: Registry[Prior] = Registry("prior")
PRIORS.register("diffusers")(DiffusersPrior)
PRIORS.register("empirical")(EmpiricalPrior)


def load_prior(path=None, device="cpu") -> Prior:
    """The prior at `path` (a local diffusers directory, or the name of an embedded prior: "toyworld",
    "toyworld-latent"), the exact denoiser of the toy training set ("toyworld-oracle"), or the embedded pixel
    prior when `path` is None."""
    if str(path) == ORACLE:
        return EmpiricalPrior(device=device)
    return DiffusersPrior(path, device=device)


__all__ = ["Prior", "DiffusersPrior", "EmpiricalPrior", "ORACLE", "PRIORS", "load_prior", "default_prior_path",
           "embedded_prior_path", "EMBEDDED"]
