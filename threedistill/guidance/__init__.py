"""Guidance methods: each turns renders into a gradient through a frozen prior. Registered by name; each has
its own typed config (a GuidanceConfig subclass) holding the shared settings and the method's own."""

from ..registry import Registry
from .asd import ASDGuidance
from .base import Guidance, GuidanceConfig, PromptState, inject_gradient
from .bsd import BSDGuidance
from .cds import CDSGuidance
from .csd import CSDGuidance
from .csm import CSMGuidance
from .esd import ESDGuidance
from .ism import ISMGuidance
from .nfsd import NFSDGuidance
from .sdedit import SDEditGuidance
from .sds import SDSGuidance
from .tsm import TSMGuidance
from .vsd import VSDGuidance

GUIDANCE: Registry[Guidance] = Registry("guidance")
for _cls in (
    SDSGuidance,
    VSDGuidance,
    ESDGuidance,
    ASDGuidance,
    CSDGuidance,
    CSMGuidance,
    ISMGuidance,
    TSMGuidance,
    BSDGuidance,
    CDSGuidance,
    NFSDGuidance,
    SDEditGuidance,
):
    GUIDANCE.register(_cls.name)(_cls)

__all__ = ["GUIDANCE", "Guidance", "GuidanceConfig", "PromptState", "SDSGuidance", "inject_gradient"]
