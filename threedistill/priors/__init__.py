"""Frozen 2D diffusion teachers behind one interface (`Prior`), loaded from local diffusers directories or by a
name registered in `PRIORS` (this package's own, or a plugin's through the `threedistill.prior` entry point
group: the toy world's exact prior `toyworld-oracle` registers that way)."""

from pathlib import Path

from ..registry import Registry
from .base import Prior
from .diffusers_prior import EMBEDDED, DiffusersPrior, default_prior_path, embedded_prior_path

PRIORS: Registry[Prior] = Registry("prior")
PRIORS.register("diffusers")(DiffusersPrior)


def load_prior(path=None, device="cpu", prompts=()) -> Prior:
    """The prior at `path`: a name registered in `PRIORS` (e.g. "toyworld-oracle", the exact denoiser of the toy
    training set), a local diffusers directory or the name of an embedded one ("toyworld", "toyworld-latent");
    the embedded pixel prior when `path` is None. A registered prior with a `check_prompt(text)` class method sees
    `prompts` before it is built (a one-line error then costs no set-up)."""
    name = None if path is None else str(path)
    if name is not None and name != "diffusers" and not Path(name).exists() and name in PRIORS:
        cls = PRIORS.get(name)
        for text in prompts:
            if text and hasattr(cls, "check_prompt"):
                cls.check_prompt(text)
        return cls(device=device)
    return DiffusersPrior(path, device=device)


__all__ = ["Prior", "DiffusersPrior", "PRIORS", "load_prior", "default_prior_path", "embedded_prior_path", "EMBEDDED"]
