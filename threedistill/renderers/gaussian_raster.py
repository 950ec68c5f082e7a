"""Differentiable 3D Gaussian splatting on CPU: EWA projection, tile binning, depth-sorted alpha compositing.

Every (tile, Gaussian) overlap becomes one row of a packed table sorted by (tile, depth); per-pixel
transmittance is an exclusive cumulative product inside each tile's segment, computed as a segmented cumsum
of log(1 - alpha). All of it is plain PyTorch, so autograd gives the backward pass. For CPU float32 tensors every
per-camera step (features, projection, binning, compositing) runs in the native kernels instead, with hand-written
backward passes (kernels/gaussian_project.cpp, kernels/gaussian_raster.cpp; see threedistill/native.py). On CUDA tensors
`rasterize` dispatches to gsplat's CUDA rasterizer when gsplat is importable (else this path runs on CUDA too).
"""

from __future__ import annotations

import functools
import warnings
import weakref

import torch
import torch.nn.functional as F

from .. import native
from ..cameras import Cameras, pixel_intrinsics
from ..geometry import quat_to_rotmat
from .packing import box_cells

TILE = 4  # pixels per tile side: small tiles waste less work outside each footprint (~4x faster than 16 at 32 px)
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
EPS_2D = 0.3  # screen-space low-pass filter, in pixels^2 (3DGS)
NEAR = 0.05
NATIVE_TILE = 8  # the native kernel walks each pixel's list and skips misses cheaply: bigger tiles, fewer pairs
T_MIN = 1e-5  # native early termination below this transmittance (3DGS stops at 1e-4; 1e-5 keeps gradients
# within 0.1% of the PyTorch path, which has no early termination, at a few more layers per pixel)


def covariances(scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """World-space covariances R S S^T R^T, (N,3,3)."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(1, 2)


def opencv_viewmats(cameras: Cameras) -> torch.Tensor:
    """World-to-camera matrices in the OpenCV convention (x right, y down, looking down +z), (B,4,4)."""
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=cameras.c2w.dtype, device=cameras.c2w.device))
    return flip @ torch.linalg.inv(cameras.c2w)


def intrinsics(cameras: Cameras, height: int, width: int) -> torch.Tensor:
    """Pinhole K matrices (B,3,3) at this resolution (see cameras.pixel_intrinsics)."""
    fx, fy, cx, cy = pixel_intrinsics(cameras, height, width)
    k = torch.zeros(len(cameras), 3, 3, device=fx.device)
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = fx, fy, cx, cy, 1.0
    return k


def project(means: torch.Tensor, covs: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, height: int, width: int):
    """EWA projection for one camera: 2D means (N,2), conics (N,3) = upper triangle of the inverse 2D
    covariance, depths (N,), pixel radii (N,) (0 = culled)."""
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    p = means @ rot.T + trans
    cov_c = rot @ covs @ rot.T
    tx, ty, tz = p.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tz_safe = tz.clamp_min(NEAR)
    # Clamp the Jacobian's evaluation point to a little beyond the frustum, as 3DGS does, for stability.
    lim_x, lim_y = 1.3 * 0.5 * width / fx, 1.3 * 0.5 * height / fy
    tx_c = tz_safe * (tx / tz_safe).clamp(-lim_x, lim_x)
    ty_c = tz_safe * (ty / tz_safe).clamp(-lim_y, lim_y)
    zero = torch.zeros_like(tz)
    J = torch.stack(
        [fx / tz_safe, zero, -fx * tx_c / tz_safe**2, zero, fy / tz_safe, -fy * ty_c / tz_safe**2], -1
    ).reshape(-1, 2, 3)
    cov2d = J @ cov_c @ J.transpose(1, 2) + EPS_2D * torch.eye(2, dtype=means.dtype, device=means.device)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * tx / tz_safe + cx, fy * ty / tz_safe + cy], -1)
    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt((mid * mid - det).clamp_min(0.01))
    radii = torch.ceil(3.33 * torch.sqrt(lam)).detach()  # exp(-3.33^2/2) ~ 1/255: nothing visible is cut
    visible = (
        (tz > NEAR)
        & (means2d[:, 0] + radii > 0)
        & (means2d[:, 0] - radii < width)
        & (means2d[:, 1] + radii > 0)
        & (means2d[:, 1] - radii < height)
    )
    return means2d, conics, tz, torch.where(visible, radii, torch.zeros_like(radii))


def footprint(radii: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor, alpha_min: float = ALPHA_MIN):
    """Per-axis half-widths (N,2) of the box that holds every pixel where a Gaussian's alpha can reach `alpha_min`:
    the bounding box of the ellipse o exp(-d^T conic d / 2) = alpha_min, capped by the 3.33-sigma `radii` (gsplat's
    opacity-aware radius). Zero where `radii` is zero or the opacity is below alpha_min. 2% and 0.01 px generous,
    so float rounding never cuts a pixel the compositor accepts: binning with it gives the image and gradients
    of binning with `radii` exactly, from about half the (tile, Gaussian) pairs on a fitted capture."""
    with torch.no_grad():
        c, o = conics.detach().double(), opacities.detach().double()
        det = (c[:, 0] * c[:, 2] - c[:, 1] ** 2).clamp_min(1e-300)
        q = 2.0 * torch.log(o.clamp_min(1e-30) / alpha_min).clamp_min(0.0) * 1.02 + 1e-3
        half = torch.sqrt(q[:, None] * torch.stack([c[:, 2], c[:, 0]], -1) / det[:, None]) + 0.01
        r = radii.detach()
        half = torch.minimum(half.to(r.dtype), r[:, None])
        keep = (r > 0) & (o >= alpha_min * (1 - 1e-6))
        return torch.where(keep[:, None], half, torch.zeros_like(half)).contiguous()


def _tile_pairs(
    means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, tiles_x: int, tiles_y: int, tile_size: int = TILE
):
    """Packed (tile, gaussian) overlaps sorted by tile, then depth: returns (tile ids, gaussian ids). `radii` (N,)
    bins a square of that half-width, (N,2) a box (`footprint`). The native path bins the same way in C++
    (`bin_gaussians`; tests/test_native.py compares the two)."""
    with torch.no_grad():
        r = radii if radii.dim() == 2 else radii[:, None].expand(-1, 2)
        idx = ((r[:, 0] > 0) & (r[:, 1] > 0)).nonzero().squeeze(-1)
        m, rx, ry = means2d[idx].detach(), r[idx, 0], r[idx, 1]
        x0 = ((m[:, 0] - rx) / tile_size).floor().clamp(0, tiles_x - 1).long()
        x1 = ((m[:, 0] + rx) / tile_size).floor().clamp(0, tiles_x - 1).long()
        y0 = ((m[:, 1] - ry) / tile_size).floor().clamp(0, tiles_y - 1).long()
        y1 = ((m[:, 1] + ry) / tile_size).floor().clamp(0, tiles_y - 1).long()
        owner, tx, ty = box_cells(x0, y0, x1 - x0 + 1, y1 - y0 + 1)
        tile = ty * tiles_x + tx
        gauss = idx[owner]
        # Sort by depth, then stably by tile: pairs end up grouped by tile and depth-ordered inside each tile.
        order_depth = torch.argsort(depths.detach()[gauss], stable=True)
        tile, gauss = tile[order_depth], gauss[order_depth]
        order_tile = torch.argsort(tile, stable=True)
        return tile[order_tile], gauss[order_tile]


def _record_meta(meta: list | None, means2d: torch.Tensor, radii: torch.Tensor) -> None:
    """Keep a camera's (means2d, radii) for densification, means2d retaining its screen-space gradient."""
    if meta is None:
        return
    if means2d.requires_grad:
        means2d.retain_grad()
    meta.append((means2d, radii))


def rasterize_camera(
    means,
    covs,
    opacities,
    features,
    viewmat,
    K,
    height,
    width,
    background=None,
    meta=None,
    alpha_min: float = ALPHA_MIN,
):
    """Composite Gaussians for one camera. features (N,F) are blended like colours (rgb, depth, normals ...).
    Returns blended features (F,H,W) and alpha (1,H,W); background (F,) fills what is left. If `meta` is a
    list, (means2d, radii) are appended to it, means2d retaining its gradient (for densification).
    Works in the inputs' dtype (float64 for gradient checks)."""
    dtype = means.dtype
    viewmat, K = viewmat.to(dtype), K.to(dtype)
    means2d, conics, depths, radii = project(means, covs, viewmat, K, height, width)
    _record_meta(meta, means2d, radii)
    if background is None and native.usable(means2d, conics, opacities, features):
        return _composite_native(means2d, conics, depths, radii, opacities, features, height, width)
    return _composite_torch(means2d, conics, depths, radii, opacities, features, height, width, background, alpha_min)


def _composite_torch(means2d, conics, depths, radii, opacities, features, height, width, background, alpha_min):
    """The compositing of `rasterize_camera` in plain PyTorch (autograd gives the backward pass)."""
    dtype, dev = means2d.dtype, means2d.device
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    n_tiles = tiles_x * tiles_y
    tile, gauss = _tile_pairs(means2d, footprint(radii, conics, opacities, alpha_min), depths, tiles_x, tiles_y)
    f = features.shape[1]
    # Pixel centres of every tile, (n_tiles, TILE*TILE, 2).
    py, px = torch.meshgrid(
        torch.arange(TILE, dtype=dtype, device=dev), torch.arange(TILE, dtype=dtype, device=dev), indexing="ij"
    )
    offs = torch.stack([px.reshape(-1), py.reshape(-1)], -1) + 0.5
    ty_all, tx_all = torch.meshgrid(torch.arange(tiles_y, device=dev), torch.arange(tiles_x, device=dev), indexing="ij")
    origin = torch.stack([tx_all.reshape(-1), ty_all.reshape(-1)], -1).to(dtype) * TILE
    accum = torch.zeros(n_tiles, TILE * TILE, f + 1, dtype=dtype, device=dev)
    if len(gauss):  # gathers by index_select: its backward (index_add) is deterministic on CPU, x[idx]'s is not
        d = origin[tile][:, None, :] + offs[None] - means2d.index_select(0, gauss)[:, None, :]  # (P, 256, 2)
        con = conics.index_select(0, gauss)
        power = (
            -0.5 * (con[:, None, 0] * d[..., 0] ** 2 + con[:, None, 2] * d[..., 1] ** 2)
            - con[:, None, 1] * d[..., 0] * d[..., 1]
        )
        alpha = (opacities.index_select(0, gauss)[:, None] * torch.exp(power.clamp_max(0))).clamp_max(ALPHA_MAX)
        alpha = torch.where(alpha >= alpha_min, alpha, torch.zeros_like(alpha))
        log_t = torch.log1p(-alpha)
        # Exclusive cumulative sum within each tile segment: global cumsum minus the segment's starting value.
        log_t = log_t.double()  # long running sums: float64 keeps the differences exact enough
        csum = log_t.cumsum(0)
        first = torch.ones_like(tile, dtype=torch.bool)
        first[1:] = tile[1:] != tile[:-1]
        seg_start = torch.cummax(
            torch.where(first, torch.arange(len(tile), device=dev), torch.zeros_like(tile)), 0
        ).values
        before = csum.index_select(0, seg_start) - log_t.index_select(0, seg_start)
        transmittance = torch.exp(csum - log_t - before).to(dtype)
        weight = transmittance * alpha  # (P, 256)
        contrib = torch.cat([weight[..., None] * features.index_select(0, gauss)[:, None, :], weight[..., None]], -1)
        accum = accum.index_add(0, tile, contrib)
    image = accum[..., :f]
    alpha_img = accum[..., f:]
    if background is not None:
        image = image + (1 - alpha_img) * background
    image = (
        image.reshape(tiles_y, tiles_x, TILE, TILE, f + 0)
        .permute(4, 0, 2, 1, 3)
        .reshape(f, tiles_y * TILE, tiles_x * TILE)
    )
    alpha_img = (
        alpha_img.reshape(tiles_y, tiles_x, TILE, TILE, 1)
        .permute(4, 0, 2, 1, 3)
        .reshape(1, tiles_y * TILE, tiles_x * TILE)
    )
    return image[:, :height, :width], alpha_img[:, :height, :width]


def _composite_native(means2d, conics, depths, radii, opacities, features, height, width):
    """The compositing of `rasterize_camera` through the native kernel (kernels/gaussian_raster.cpp)."""
    tiles_x, tiles_y = -(-width // NATIVE_TILE), -(-height // NATIVE_TILE)
    offsets, gauss = native.kernels().bin_gaussians(
        means2d.detach().contiguous(),
        footprint(radii, conics, opacities).float(),
        depths.detach().contiguous(),
        tiles_x,
        tiles_y,
        NATIVE_TILE,
    )
    image, alpha = _NativeComposite.apply(means2d, conics, opacities, features, offsets, gauss, height, width)
    return image.permute(2, 0, 1), alpha[None]


class _NativeComposite(torch.autograd.Function):
    """Front-to-back compositing of binned 2D Gaussians; gradients for means2d, conics, opacities, features.
    The backward pass also leaves `means2d.absgrad` (N,2): per Gaussian, the sum over pixels of the magnitude of
    each pixel's contribution to its means2d gradient (AbsGS; gsplat's `absgrad`), for densification."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, offsets, gauss, height, width):
        args = [t.detach().contiguous() for t in (means2d, conics, opacities, features)] + [offsets, gauss]
        image, alpha, final_t, last = native.kernels().raster_forward(
            *args, height, width, NATIVE_TILE, ALPHA_MIN, ALPHA_MAX, T_MIN, torch.get_num_threads()
        )
        ctx.save_for_backward(*args, final_t, last)
        ctx.means2d = weakref.ref(means2d)  # where the backward pass leaves absgrad (no reference cycle)
        return image, alpha

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        *grads, absgrad = native.kernels().raster_backward(
            *ctx.saved_tensors,
            grad_image.contiguous(),
            grad_alpha.contiguous(),
            NATIVE_TILE,
            ALPHA_MIN,
            ALPHA_MAX,
            torch.get_num_threads(),
        )
        means2d = ctx.means2d()
        if means2d is not None:
            means2d.absgrad = absgrad if getattr(means2d, "absgrad", None) is None else means2d.absgrad + absgrad
        return (*grads, None, None, None, None)


SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_to_rgb(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Evaluate real spherical harmonics (N,K,3), K = (degree+1)^2 in {1,4,9,16}, along unit view directions
    (N,3); returns colours (N,3) with the 3DGS convention rgb = SH + 0.5, clamped at 0."""
    k = sh.shape[1]
    out = SH_C0 * sh[:, 0]
    if k > 1:
        x, y, z = dirs[:, 0:1], dirs[:, 1:2], dirs[:, 2:3]
        out = out - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
        if k > 4:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            out = (
                out
                + SH_C2[0] * xy * sh[:, 4]
                + SH_C2[1] * yz * sh[:, 5]
                + SH_C2[2] * (2 * zz - xx - yy) * sh[:, 6]
                + SH_C2[3] * xz * sh[:, 7]
                + SH_C2[4] * (xx - yy) * sh[:, 8]
            )
            if k > 9:
                out = (
                    out
                    + SH_C3[0] * y * (3 * xx - yy) * sh[:, 9]
                    + SH_C3[1] * xy * z * sh[:, 10]
                    + SH_C3[2] * y * (4 * zz - xx - yy) * sh[:, 11]
                    + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12]
                    + SH_C3[4] * x * (4 * zz - xx - yy) * sh[:, 13]
                    + SH_C3[5] * z * (xx - yy) * sh[:, 14]
                    + SH_C3[6] * x * (xx - 3 * yy) * sh[:, 15]
                )
    return (out + 0.5).clamp_min(0.0)


def shortest_axis_normals(scales: torch.Tensor, quats: torch.Tensor, view_dirs: torch.Tensor) -> torch.Tensor:
    """Per-Gaussian normal: the rotation column of the smallest scale, flipped to face the camera (N,3)."""
    rot = quat_to_rotmat(quats)
    axis = scales.argmin(-1)
    n = rot.gather(2, axis[:, None, None].expand(-1, 3, 1)).squeeze(-1)
    return torch.where(((n * view_dirs).sum(-1, keepdim=True) > 0), -n, n)


def _camera_features(means, scales, quats, sh, position) -> torch.Tensor:
    """Per-Gaussian features seen from one camera centre: rgb (3), distance (1), normal (3)."""
    offset = means - position
    dist = offset.norm(dim=-1, keepdim=True)
    dirs = offset / dist.clamp_min(1e-8)
    return torch.cat([sh_to_rgb(sh, dirs), dist, shortest_axis_normals(scales, quats, dirs)], -1)


def _finish(features: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor) -> dict[str, torch.Tensor]:
    """Blended features (B,3 or 7,H,W) and alpha (B,1,H,W) to the renderer's output dictionary."""
    out = {"rgb": features[:, :3] + (1 - alpha) * bg[None, :, None, None], "alpha": alpha}
    if features.shape[1] > 3:
        out["depth"] = features[:, 3:4] / alpha.clamp_min(1e-6)
        out["normal"] = F.normalize(features[:, 4:7], dim=1)
    return out


def rasterize(
    means,
    scales,
    quats,
    opacities,
    sh,
    cameras: Cameras,
    height: int,
    width: int,
    background: torch.Tensor | None = None,
    meta: list | None = None,
    geometry: bool = True,
    backend: str = "auto",
) -> dict[str, torch.Tensor]:
    """Render Gaussians from every camera: rgb (B,3,H,W), alpha (B,1,H,W), depth (B,1,H,W; distance to the
    camera, normalised by alpha), normal (B,3,H,W; world space). Differentiable w.r.t. every input.
    `meta`, if a list, receives (means2d, radii) for densification statistics: per camera on the PyTorch path,
    (cameras, N, 2) and (cameras, N) at once from gsplat. geometry=False skips depth and normals (about half the
    compositing work; training needs only rgb). `backend`: auto (gsplat for CUDA tensors when importable) or torch."""
    bg = (torch.ones(3) if background is None else background).to(means.device)
    if (
        not (backend == "auto" and means.is_cuda and gsplat_available())
        and native.usable(means, scales, quats, opacities, sh)
        and sh.shape[1] in (1, 4, 9, 16)
    ):
        return _rasterize_native(means, scales, quats, opacities, sh, cameras, height, width, bg, meta, geometry)
    feats = torch.stack(
        [_camera_features(means, scales, quats, sh, cameras.positions[i].to(means.device)) for i in range(len(cameras))]
    )
    if not geometry:
        feats = feats[..., :3]
    if backend == "auto" and means.is_cuda and gsplat_available():
        return _rasterize_gsplat(means, scales, quats, opacities, feats, cameras, height, width, bg, meta)
    covs = covariances(scales, quats)
    viewmats, Ks = opencv_viewmats(cameras), intrinsics(cameras, height, width)
    images, alphas = zip(
        *(
            rasterize_camera(means, covs, opacities, feats[i], viewmats[i], Ks[i], height, width, meta=meta)
            for i in range(len(cameras))
        )
    )
    return _finish(torch.stack(images), torch.stack(alphas), bg)


def _rasterize_native(means, scales, quats, opacities, sh, cameras, height, width, bg, meta, geometry):
    """`rasterize` for CPU float32 tensors with every per-camera step native: features, projection, binning and
    compositing (kernels/gaussian_project.cpp, kernels/gaussian_raster.cpp), each with its hand-written backward."""
    viewmats, Ks = opencv_viewmats(cameras), intrinsics(cameras, height, width)
    images, alphas = [], []
    for i in range(len(cameras)):
        feats = _NativeFeatures.apply(means, scales, quats, sh, cameras.positions[i], geometry)
        means2d, conics, depths, radii = _NativeProject.apply(means, scales, quats, viewmats[i], Ks[i], height, width)
        _record_meta(meta, means2d, radii)
        image, alpha = _composite_native(means2d, conics, depths, radii, opacities, feats, height, width)
        images.append(image)
        alphas.append(alpha)
    return _finish(torch.stack(images), torch.stack(alphas), bg)


class _NativeProject(torch.autograd.Function):
    """`project(means, covariances(scales, quats), ...)` in one native kernel: means2d, conics, depths, radii
    (the last two without gradient: they only sort and cull); gradients to means, scales and quats."""

    @staticmethod
    def forward(ctx, means, scales, quats, viewmat, K, height, width):
        args = [t.detach().contiguous() for t in (means, scales, quats)]
        camera = [viewmat.detach().to(means.dtype), K.detach().to(means.dtype), height, width]
        means2d, conics, depths, radii = native.kernels().project_forward(
            *args, *camera, NEAR, EPS_2D, torch.get_num_threads()
        )
        ctx.mark_non_differentiable(depths, radii)
        ctx.save_for_backward(*args)
        ctx.camera = camera
        return means2d, conics, depths, radii

    @staticmethod
    def backward(ctx, grad_means2d, grad_conics, _grad_depths, _grad_radii):
        grads = native.kernels().project_backward(
            *ctx.saved_tensors,
            *ctx.camera,
            grad_means2d.contiguous(),
            grad_conics.contiguous(),
            NEAR,
            EPS_2D,
            torch.get_num_threads(),
        )
        return (*grads, None, None, None, None)


class _NativeFeatures(torch.autograd.Function):
    """`_camera_features` in one native kernel: rgb from the SH (N,3), plus distance and normal (N,7) with
    `geometry`; gradients to means, quats and sh (none to scales, which only pick the normal's axis)."""

    @staticmethod
    def forward(ctx, means, scales, quats, sh, position, geometry):
        args = [t.detach().contiguous() for t in (means, scales, quats, sh)]
        position = position.detach().to(means.dtype)
        ctx.save_for_backward(*args, position)
        return native.kernels().features_forward(*args, position, geometry, torch.get_num_threads())

    @staticmethod
    def backward(ctx, grad):
        d_means, d_quats, d_sh = native.kernels().features_backward(
            *ctx.saved_tensors, grad.contiguous(), torch.get_num_threads()
        )
        return d_means, None, d_quats, d_sh, None, None


@functools.cache
def gsplat_available() -> bool:
    """Whether gsplat's CUDA rasterizer can be used (checked once; a missing or unbuildable gsplat falls back to
    the PyTorch path with a one-line warning)."""
    try:
        from gsplat.cuda._backend import _C  # builds gsplat's kernels on first use (minutes, cached after)
    except Exception as err:  # noqa: BLE001 - any import or build failure means: use our rasterizer
        _C, reason = None, f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    else:
        reason = "its CUDA kernels did not build (is nvcc installed?)"
    if _C is None:
        warnings.warn(
            f"gsplat is unavailable ({reason}); CUDA Gaussians use the slower PyTorch rasterizer", stacklevel=2
        )
        return False
    return True


def _rasterize_gsplat(means, scales, quats, opacities, feats, cameras, height, width, bg, meta=None):
    """CUDA path: gsplat's fused rasterizer, blending the same per-camera features as the PyTorch path with the
    same conventions (EWA with a 0.3 px^2 filter, alpha in [1/255, 0.99], pixel centres at +0.5)."""
    import gsplat

    dev = means.device
    viewmats = opencv_viewmats(cameras).to(dev)
    Ks = intrinsics(cameras, height, width).to(dev)
    images, alphas, info = gsplat.rasterization(
        means,
        F.normalize(quats, dim=-1),
        scales,
        opacities,
        feats,
        viewmats,
        Ks,
        width,
        height,
        near_plane=NEAR,
        eps2d=EPS_2D,
        sh_degree=None,
        packed=False,
        render_mode="RGB",
        absgrad=meta is not None,  # info["means2d"].absgrad, for `gaussians.capture.absgrad`
    )
    if meta is not None and info["means2d"].requires_grad:
        info["means2d"].retain_grad()
        radii = info["radii"]
        meta.append((info["means2d"], radii.amax(-1) if radii.ndim == 3 else radii))
    return _finish(images.permute(0, 3, 1, 2), alphas.permute(0, 3, 1, 2), bg)
