"""SSIM (Wang et al. 2004) with 3DGS's conventions: an 11x11 Gaussian window (sigma 1.5) applied separably, zero
padding, constants (0.01)^2 and (0.03)^2 for images in [0, 1]. The five local statistics are blurred in one depthwise
convolution per axis, several times faster on a CPU than filtering each of them in 2D, with a hand-written
backward pass."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

C1, C2 = 0.01**2, 0.03**2


@functools.lru_cache(maxsize=8)
def _window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def _blur(maps: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel, zero padding, same size (self-adjoint: its own backward). On the
    CPU the depthwise convolutions run channels-last, where oneDNN's kernels are faster than on NCHW and give the
    same values bit for bit (tests/test_fit_capture.py)."""
    k, pad = maps.shape[1], window // 2
    g = _window(window, sigma).to(device=maps.device, dtype=maps.dtype)
    layout = torch.channels_last if maps.device.type == "cpu" else torch.contiguous_format
    out = F.conv2d(
        maps.contiguous(memory_format=layout),
        g.view(1, 1, 1, window).expand(k, 1, 1, window),
        padding=(0, pad),
        groups=k,
    )
    out = F.conv2d(out, g.view(1, 1, window, 1).expand(k, 1, window, 1), padding=(pad, 0), groups=k)
    return out.contiguous()


def _terms(x, y, window, sigma):
    c = x.shape[1]
    mx, my, exx, eyy, exy = _blur(torch.cat([x, y, x * x, y * y, x * y], 1), window, sigma).split(c, 1)
    mxy = mx * my
    a1, a2 = 2 * mxy + C1, 2 * (exy - mxy) + C2
    b1, b2 = mx * mx + my * my + C1, exx - mx * mx + eyy - my * my + C2
    return mx, my, a1, a2, b1, b2


class _SSIM(torch.autograd.Function):
    """SSIM map with a hand-written backward to x (the render): the forward pass keeps the pointwise derivatives of
    SSIM with respect to x's blurred mean, E[x^2] and E[xy]; the backward blurs them back (the blur is
    self-adjoint), instead of autograd walking every intermediate map."""

    @staticmethod
    def forward(ctx, x, y, window, sigma):
        mx, my, a1, a2, b1, b2 = _terms(x, y, window, sigma)
        den = b1 * b2
        s = a1 * a2 / den
        # the pointwise derivatives with respect to the blurred mean, E[x^2] and E[xy] of x
        d_mx = 2 * my * (a2 - a1) / den - 2 * mx * s * (1 / b1 - 1 / b2)
        ctx.save_for_backward(x, y, torch.cat([d_mx, -s / b2, 2 * a1 / den], 1))
        ctx.window, ctx.sigma = window, sigma
        return s

    @staticmethod
    def backward(ctx, grad):
        x, y, derivatives = ctx.saved_tensors
        c = x.shape[1]
        back = _blur(grad.repeat(1, 3, 1, 1) * derivatives, ctx.window, ctx.sigma).split(c, 1)
        return back[0] + 2 * x * back[1] + y * back[2], None, None, None


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (B,C,H,W) of images x and y (B,C,H,W) in [0, 1]; differentiable in x (the render), not in y
    (the target)."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim_map needs two (B,C,H,W) images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    y = y.detach()
    if x.requires_grad and torch.is_grad_enabled():
        return _SSIM.apply(x, y, window, sigma)
    mx, my, a1, a2, b1, b2 = _terms(x, y, window, sigma)
    return a1 * a2 / (b1 * b2)


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Mean SSIM over pixels and channels, per image (B,)."""
    return ssim_map(x, y, window).flatten(1).mean(1)
