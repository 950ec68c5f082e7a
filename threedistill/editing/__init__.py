"""Building blocks of edits of captured scenes: regions and lifted 2D masks, the region model and views, and the
edit methods registered in `EDIT_METHODS` (dds, sds, in2n); `t3d edit` (workflows/edit.py) composes them."""

from ..guidance import GUIDANCE
from ..registry import Registry
from .dds import DDSGuidance
from .drag_sds import DragSDSGuidance
from .in2n import In2NObjective
from .region import EditRegion

EDIT_METHODS: Registry = Registry("edit_method")
EDIT_METHODS.register("dds")(DDSGuidance)
EDIT_METHODS.register("sds")(GUIDANCE.get("sds"))
EDIT_METHODS.register("in2n")(In2NObjective)
EDIT_METHODS.register("drag")(DragSDSGuidance)

__all__ = ["EDIT_METHODS", "EditRegion"]
