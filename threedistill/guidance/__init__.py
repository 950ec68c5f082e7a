"""Guidance methods: each turns renders into a gradient through a frozen prior. Registered by name."""
from ..registry import Registry
from .base import Guidance, GuidanceConfig, PromptState, inject_gradient
from .sds import SDSGuidance

GUIDANCE: Registry[Guidance] = Registry("guidance")
GUIDANCE.register("sds")(SDSGuidance)

__all__ = ["GUIDANCE", "Guidance", "GuidanceConfig", "PromptState", "SDSGuidance", "inject_gradient"]
