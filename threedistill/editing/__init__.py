"""Edits of captured scenes: text edits (DDS, SDS with preservation) inside a 3D edit region."""
from .region import EditRegion

__all__ = ["EditRegion"]
