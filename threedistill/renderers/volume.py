"""Volume rendering of radiance fields (CPU or CUDA tensors alike): stratified samples inside the unit bounding
sphere, one round of importance resampling, compositing with nerfacc's batched (non-packed) functions, which run on
CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nerfacc import accumulate_along_rays, render_weight_from_density

from ..cameras import Cameras, camera_rays

BOUND = 1.0
EMPTY_RAY_ALPHA = (
    1e-3  # without gradients, rays whose coarse opacity is below this skip the fine pass (~2-3x faster renders)
)


def sphere_interval(origins: torch.Tensor, dirs: torch.Tensor, radius: float = BOUND):
    """Near / far distances where rays (N,3) cross a sphere at the origin, and which rays hit it."""
    b = (origins * dirs).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - radius**2)
    hit = disc > 0
    root = disc.clamp_min(0).sqrt()
    return (-b - root).clamp_min(0.0), -b + root, hit


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, generator=None, deterministic=False) -> torch.Tensor:
    """Inverse-transform samples (R,n) from piecewise-constant pdfs given by `weights` (R,K) over `bins` (R,K+1)."""
    pdf = (weights + 1e-5) / (weights + 1e-5).sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1)
    if deterministic:
        u = torch.linspace(0.0, 1.0, n + 2, device=cdf.device)[1:-1].expand(len(cdf), n).contiguous()
    else:  # drawn on the CPU generator, so a seed gives the same samples on any device
        u = torch.rand(len(cdf), n, generator=generator).to(cdf.device)
    idx = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    lo, hi = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    b_lo, b_hi = bins.gather(1, idx - 1), bins.gather(1, idx)
    frac = ((u - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    return b_lo + frac * (b_hi - b_lo)


def render_volume(
    field,
    cameras: Cameras,
    height: int,
    width: int,
    n_samples: int = 32,
    n_importance: int = 32,
    background=None,
    with_normals: bool = False,
    generator=None,
    perturb: bool = True,
    surface_light=None,
) -> dict:
    """Render a field with `density(points) -> (sigma, features)`, `color(features, dirs) -> rgb`,
    `background(dirs) -> rgb` and `normals(points)`. Returns rgb, alpha, depth (distance along the ray),
    normal (B,C,H,W), plus the per-sample weights and densities of the rays that hit the bounding sphere.
    `surface_light(normals (R,3)) -> (R,1)`, when given, makes the field's colour an albedo lit at each ray's
    expected surface point (deferred shading: one normal per ray, 6 extra density evaluations a ray), so the
    shading, and through it the shape, is what the guidance sees (DreamFusion's shaded renders)."""
    origins, dirs = camera_rays(cameras, height, width)
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    n_rays = o.shape[0]
    near, far, hit = sphere_interval(o, d)
    idx = hit.nonzero().squeeze(-1)
    o_h, d_h, near_h, far_h = o[idx], d[idx], near[idx], far[idx]
    r = len(idx)
    dev = o.device
    steps = torch.linspace(0.0, 1.0, n_samples + 1, device=dev)
    bins = near_h[:, None] + (far_h - near_h)[:, None] * steps
    if perturb:
        width_bin = (far_h - near_h)[:, None] / n_samples
        jitter = torch.rand(r, n_samples, generator=generator).to(dev) * width_bin
        t_coarse = bins[:, :-1] + jitter
    else:
        t_coarse = 0.5 * (bins[:, :-1] + bins[:, 1:])
    inference = not torch.is_grad_enabled()
    if n_importance > 0 and r > 0:
        with torch.no_grad():
            sigma, _ = field.density((o_h[:, None] + t_coarse[..., None] * d_h[:, None]).reshape(-1, 3))
            edges = torch.cat([bins[:, :1], 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1]), bins[:, -1:]], -1)
            w, _, _ = render_weight_from_density(edges[:, :-1], edges[:, 1:], sigma.reshape(r, n_samples))
            if inference:  # no gradients wanted: rays that the coarse pass finds empty show background
                busy = w.sum(-1) > EMPTY_RAY_ALPHA
                idx, o_h, d_h, near_h, far_h = idx[busy], o_h[busy], d_h[busy], near_h[busy], far_h[busy]
                t_coarse, edges, w, r = t_coarse[busy], edges[busy], w[busy], int(busy.sum())
            t_fine = sample_pdf(edges, w, n_importance, generator, deterministic=not perturb)
        t_all = torch.sort(torch.cat([t_coarse, t_fine], -1), -1).values
    else:
        t_all = t_coarse
    k = t_all.shape[1]
    mids = t_all
    edges = torch.cat([near_h[:, None], 0.5 * (mids[:, 1:] + mids[:, :-1]), far_h[:, None]], -1)
    points = (o_h[:, None] + mids[..., None] * d_h[:, None]).reshape(-1, 3)
    sigma, feats = field.density(points)
    rgb_s = field.color(feats, d_h[:, None].expand(r, k, 3).reshape(-1, 3))
    weights, _, _ = render_weight_from_density(edges[:, :-1], edges[:, 1:], sigma.reshape(r, k))
    rgb = accumulate_along_rays(weights, rgb_s.reshape(r, k, 3))
    acc = weights.sum(-1, keepdim=True)
    depth = accumulate_along_rays(weights, mids[..., None]) / acc.clamp_min(1e-6)
    if surface_light is not None and r:
        rgb = rgb * surface_light(field.normals(o_h + depth * d_h))
    normal = torch.zeros(r, 3, device=dev)
    extra = {}
    if with_normals:
        normals = field.normals(points).reshape(r, k, 3)
        normal = F.normalize(accumulate_along_rays(weights, normals), dim=-1)
        # DreamFusion's orientation loss: visible samples whose normal faces away from the camera.
        facing = (normals * d_h[:, None]).sum(-1).clamp_min(0) ** 2
        extra["orientation"] = (weights.detach() * facing).sum(-1).mean() if r else torch.zeros((), device=dev)
    bg_all = field.background(d) if background is None else background.to(dev, d.dtype).expand(n_rays, 3)
    rgb = rgb + (1 - acc) * bg_all[idx]

    def scatter(values: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        out = fill.expand(n_rays, values.shape[-1]).to(values.dtype).index_put((idx,), values)
        return out.reshape(len(cameras), height, width, -1).permute(0, 3, 1, 2)

    zero = torch.zeros(3, device=dev)
    return {
        "rgb": scatter(rgb, bg_all),
        "alpha": scatter(acc, zero[:1]),
        "depth": scatter(depth, zero[:1]),
        "normal": scatter(normal, zero),
        "weights": weights,
        "sigma": sigma,
        **extra,
    }
