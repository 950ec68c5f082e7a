"""The 3D edit region: a box or a sphere in scene coordinates that says which part of a scene an edit may
change (Vox-E's locality), and where the edit cameras look. Written `box:cx,cy,cz,hx,hy,hz` (centre and half
sizes) or `sphere:cx,cy,cz,r`, in the captured scene's original frame unless said otherwise."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError

FORMS = {"box": 6, "sphere": 4}


@dataclass
class EditRegion:
    kind: str  # box | sphere
    centre: torch.Tensor  # (3,)
    size: torch.Tensor  # box half sizes (3,), sphere radius (1,)

    @classmethod
    def parse(cls, text: str) -> "EditRegion":
        """`box:cx,cy,cz,hx,hy,hz` or `sphere:cx,cy,cz,r`; a one-line error for anything else."""
        kind, _, numbers = text.strip().partition(":")
        try:
            values = [float(v) for v in numbers.split(",")]
        except ValueError:
            values = []
        if kind not in FORMS or len(values) != FORMS[kind] or not all(map(_finite, values)):
            raise ConfigError(
                f"bad edit region {text!r}: expected box:cx,cy,cz,hx,hy,hz or sphere:cx,cy,cz,r "
                "(numbers, in the scene's coordinates)"
            )
        if min(values[3:]) <= 0:
            raise ConfigError(f"bad edit region {text!r}: sizes must be positive")
        return cls(kind, torch.tensor(values[:3]), torch.tensor(values[3:]))

    def __str__(self) -> str:
        return f"{self.kind}:" + ",".join(f"{v:.6g}" for v in torch.cat([self.centre, self.size]).tolist())

    def transformed(self, transform: torch.Tensor) -> "EditRegion":
        """The region under a similarity transform (4,4) (rotation x uniform scale + translation). A rotated box
        becomes the axis-aligned box around it."""
        m = transform.to(torch.float32)
        scale = m[:3, :3].det().abs() ** (1 / 3)
        centre = m[:3, :3] @ self.centre + m[:3, 3]
        if self.kind == "sphere":
            return EditRegion("sphere", centre, self.size * scale)
        half = m[:3, :3].abs() @ self.size  # half extents of the rotated box along the new axes
        return EditRegion("box", centre, half)

    def contains(self, points: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
        """(N,) bool: the points (N,3) inside the region grown by `margin`."""
        d = points - self.centre.to(points)
        if self.kind == "sphere":
            return d.norm(dim=-1) <= self.size.to(points)[0] + margin
        return (d.abs() <= self.size.to(points) + margin).all(-1)

    @property
    def radius(self) -> float:
        """Radius of the bounding sphere (sets how far the edit cameras stand)."""
        return float(self.size[0] if self.kind == "sphere" else self.size.norm())


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")
