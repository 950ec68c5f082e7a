"""Representations sampled on a grid, for surface extraction and texture baking: NeRF density and colour
network; for 3D Gaussians the summed opacity field sum_i o_i G_i(x), splatted into the grid Gaussian by
Gaussian (each over its own 3-sigma window), and opacity-weighted colours. Colouring a surface point then
costs a few trilinear lookups, so a 1024^2 texture bakes in seconds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry import quat_to_rotmat
from ..renderers.gaussian_raster import SH_C0

BOUND = 1.0
MAX_WINDOW = 12  # half-width in cells of a Gaussian's splat window (larger Gaussians are truncated)
CHUNK = 1 << 18


def grid_spacing(resolution: int) -> float:
    """Distance between neighbouring cell centres of a resolution^3 grid over [-BOUND, BOUND]^3."""
    return 2 * BOUND / (resolution - 1)


def grid_points(resolution: int) -> torch.Tensor:
    """Cell centres of a resolution^3 grid over [-BOUND, BOUND]^3, (R,R,R,3), ij indexing."""
    axis = torch.linspace(-BOUND, BOUND, resolution)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)


def is_gaussians(model) -> bool:
    return hasattr(model, "means") and hasattr(model, "opacities")


@dataclass
class FieldGrids:
    """A representation sampled on a grid over [-BOUND, BOUND]^3: the field whose level sets are surfaces
    (R,R,R), colour (3,R,R,R), the field's name, and whether it is a volume density to composite."""

    field: torch.Tensor
    colour: torch.Tensor
    name: str

    @property
    def spacing(self) -> float:
        return grid_spacing(self.field.shape[0])


@torch.no_grad()
def field_grids(model, resolution: int) -> FieldGrids:
    if is_gaussians(model):
        return _gaussian_grids(model, resolution)
    points = grid_points(resolution).reshape(-1, 3)
    sigmas, colours = [], []
    for chunk in points.split(CHUNK):
        sigma, feats = model.density(chunk)
        sigmas.append(sigma)
        colours.append(model.color(feats, torch.zeros_like(chunk)))
    shape = (resolution,) * 3
    return FieldGrids(torch.cat(sigmas).reshape(shape), torch.cat(colours).T.reshape(3, *shape), "density")


def sample_grid(grid: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of a scalar (R,R,R) or vector (C,R,R,R) grid over [-1,1]^3 (ij indexing) at points
    (N,3): (N,) or (C,N); zero outside."""
    vol = grid[None, None] if grid.ndim == 3 else grid[None]
    # grid_sample wants (x, y, z) = (W, H, D) coordinates, i.e. the reverse of our (i, j, k) indexing.
    coords = (points / BOUND).flip(-1).reshape(1, -1, 1, 1, 3).to(vol.dtype)
    out = F.grid_sample(vol, coords, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(vol.shape[1], -1).squeeze(0)


def _inverse_covariances(model) -> torch.Tensor:
    rot = quat_to_rotmat(model.quats)
    inv_s2 = model.scales.pow(-2)
    return rot @ torch.diag_embed(inv_s2) @ rot.transpose(1, 2)


@torch.no_grad()
def _gaussian_grids(model, resolution: int) -> FieldGrids:
    """Opacity field sum_i o_i exp(-d^T Sigma_i^-1 d / 2) and the same-weighted mean colour at the grid's
    cells, each Gaussian splatted over its own 3-sigma window."""
    spacing = grid_spacing(resolution)
    means, opac, inv_cov = model.means.detach(), model.opacities.detach(), _inverse_covariances(model)
    colours = (SH_C0 * model.sh[:, 0].detach() + 0.5).clamp(0, 1)
    half = (3 * model.scales.max(-1).values / spacing).ceil().clamp(1, MAX_WINDOW).long()
    centre = ((means + BOUND) / spacing).round().long()
    acc = torch.zeros(resolution**3, 4)  # weighted rgb, weight
    for h in half.unique().tolist():
        r = torch.arange(-h, h + 1)
        offsets = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
        members = (half == h).nonzero().squeeze(-1)
        for chunk in members.split(max(1, CHUNK * 8 // len(offsets))):
            cells = centre[chunk, None] + offsets  # (n, K, 3)
            inside = ((cells >= 0) & (cells < resolution)).all(-1)
            d = cells * spacing - BOUND - means[chunk, None]
            weight = opac[chunk, None] * torch.exp(-0.5 * torch.einsum("nki,nij,nkj->nk", d, inv_cov[chunk], d))
            flat = (cells[..., 0] * resolution + cells[..., 1]) * resolution + cells[..., 2]
            value = torch.cat([weight[..., None] * colours[chunk, None], weight[..., None]], -1)
            acc.index_add_(0, flat[inside], value[inside])
    shape = (resolution,) * 3
    colour = acc[:, :3] / acc[:, 3:].clamp_min(1e-8)
    return FieldGrids(acc[:, 3].reshape(shape), colour.T.reshape(3, *shape), "opacity")


def surface_colours(grids: FieldGrids, points: torch.Tensor, normals: torch.Tensor, depth: float = 0.2) -> torch.Tensor:
    """View-independent colour (N,3) in [0,1] at surface points with outward unit normals: what a camera
    looking straight at the point sees. A density field is composited along a short ray entering along
    -normal (its colour at the isosurface itself sits in the soft outer shell, barely trained); an opacity
    field's weighted colour is read one cell inside."""
    if grids.name != "density":
        return sample_grid(grids.colour, points - grids.spacing * normals).T.clamp(0, 1)
    h = grids.spacing
    t = torch.arange(-0.05, depth, h)
    out = []
    for p, n in zip(points.split(CHUNK // len(t)), normals.split(CHUNK // len(t))):
        x = (p[:, None] - t[None, :, None] * n[:, None]).reshape(-1, 3)
        sigma = sample_grid(grids.field, x).reshape(len(p), len(t))
        rgb = sample_grid(grids.colour, x).T.reshape(len(p), len(t), 3)
        alpha = 1 - torch.exp(-sigma * h)
        trans = torch.cumprod(torch.cat([torch.ones(len(p), 1), 1 - alpha[:, :-1] + 1e-10], 1), 1)
        w = alpha * trans
        out.append(((w[..., None] * rgb).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)).clamp(0, 1))
    return torch.cat(out)
