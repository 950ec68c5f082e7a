"""Frozen 2D diffusion teachers behind one interface (`Prior`), loaded from local diffusers directories or by a
name registered in `PRIORS` (this package's own, or a plugin's through the `threedistill.prior` entry point
group: the toy world's exact prior `toyworld-oracle` registers that way)."""

from pathlib import Path

from ..registry import Registry
from .base import PRECISIONS, Prior, check_precision, resolve_precision
from .diffusers_prior import EMBEDDED, DiffusersPrior, default_prior_path, embedded_prior_path

PRIORS: Registry[Prior] = Registry("prior")
PRIORS.register("diffusers")(DiffusersPrior)


def load_prior(path=None, device="cpu", prompts=(), precision: str = "float32") -> Prior:
    """The prior at `path`: a name registered in `PRIORS` (e.g. "toyworld-oracle", the exact denoiser of the toy
    training set), a local diffusers directory or the name of an embedded one ("toyworld", "toyworld-latent");
    the embedded pixel prior when `path` is None. A registered prior with a `check_prompt(text)` class method sees
    `prompts` before it is built (a one-line error then costs no set-up). `precision`: the network's compute type
    (`Prior.set_precision`: auto, float32 or bfloat16)."""
    check_precision(precision)
    name = None if path is None else str(path)
    if name is not None and name != "diffusers" and not Path(name).exists() and name in PRIORS:
        cls = PRIORS.get(name)
        for text in prompts:
            if text and hasattr(cls, "check_prompt"):
                cls.check_prompt(text)
        return cls(device=device).set_precision(precision)
    return DiffusersPrior(path, device=device).set_precision(precision)


__all__ = [
    "Prior",
    "PRECISIONS",
    "check_precision",
    "resolve_precision",
    "DiffusersPrior",
    "PRIORS",
    "load_prior",
    "default_prior_path",
    "embedded_prior_path",
    "EMBEDDED",
]
