"""Signed distance functions of the toy world's primitives, in PyTorch, evaluated on points (N,3).

Formulas are the standard exact (or, for the ellipsoid, bounded) distance functions; each primitive is
centred at its local origin with its axis along +Y. Parts place them with a rotation and a translation.
"""

from __future__ import annotations

import torch


def _length2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y)


def sphere(p: torch.Tensor, radius: float) -> torch.Tensor:
    return p.norm(dim=-1) - radius


def ellipsoid(p: torch.Tensor, radii) -> torch.Tensor:
    """Bounded (not exact) distance: exact on the surface, safe for sphere tracing with a relaxation factor."""
    r = torch.as_tensor(radii, dtype=p.dtype)
    k0 = (p / r).norm(dim=-1)
    k1 = (p / (r * r)).norm(dim=-1).clamp_min(1e-9)
    return k0 * (k0 - 1.0) / k1


def box(p: torch.Tensor, half_size, rounding: float = 0.0) -> torch.Tensor:
    q = p.abs() - (torch.as_tensor(half_size, dtype=p.dtype) - rounding)
    outside = q.clamp_min(0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp_max(0)
    return outside + inside - rounding


def cylinder(p: torch.Tensor, radius: float, half_height: float) -> torch.Tensor:
    dx = _length2(p[..., 0], p[..., 2]) - radius
    dy = p[..., 1].abs() - half_height
    return torch.maximum(dx, dy).clamp_max(0) + _length2(dx.clamp_min(0), dy.clamp_min(0))


def cone(p: torch.Tensor, radius: float, half_height: float, top_radius: float = 0.0) -> torch.Tensor:
    """Capped cone along +Y: base of `radius` at y=-h, top of `top_radius` (0 = a tip) at y=+h."""
    qx, qy = _length2(p[..., 0], p[..., 2]), p[..., 1]
    h, r1, r2 = half_height, radius, top_radius
    k2x, k2y = r2 - r1, 2.0 * h
    cax = qx - torch.minimum(qx, torch.where(qy < 0, torch.full_like(qx, r1), torch.full_like(qx, r2)))
    cay = qy.abs() - h
    s = ((r2 - qx) * k2x + (h - qy) * k2y) / (k2x * k2x + k2y * k2y)
    s = s.clamp(0.0, 1.0)
    cbx, cby = qx - r2 + k2x * s, qy - h + k2y * s
    sign = torch.where((cbx < 0) & (cay < 0), -1.0, 1.0)
    return sign * torch.sqrt(torch.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby))


def torus(p: torch.Tensor, major_radius: float, minor_radius: float) -> torch.Tensor:
    """Torus lying in the XZ plane around the Y axis."""
    qx = _length2(p[..., 0], p[..., 2]) - major_radius
    return _length2(qx, p[..., 1]) - minor_radius


PRIMITIVE_SDFS = {
    "sphere": sphere,
    "ellipsoid": ellipsoid,
    "box": box,
    "cylinder": cylinder,
    "cone": cone,
    "torus": torus,
}
