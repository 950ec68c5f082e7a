import math

import pytest
import torch

from threedistill.cameras import orbit_cameras
from threedistill.renderers.gaussian_raster import (
    ALPHA_MAX,
    ALPHA_MIN,
    EPS_2D,
    covariances,
    intrinsics,
    opencv_viewmats,
    project,
    rasterize,
    sh_to_rgb,
)


def random_scene(n, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.3
    scales = scale * (0.5 + torch.rand(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opac = 0.2 + 0.7 * torch.rand(n, generator=g)
    sh = torch.randn(n, 1, 3, generator=g) * 0.5
    return means, scales, quats, opac, sh


def dense_reference(means, scales, quats, opac, sh, cams, h, w):
    """Every pixel against every Gaussian, sorted by depth, no tiles: the definition the tiled code must match."""
    covs = covariances(scales, quats)
    vm, K = opencv_viewmats(cams)[0], intrinsics(cams, h, w)[0]
    m2d, conics, depth, radii = project(means, covs, vm, K, h, w)
    order = torch.argsort(depth)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2)
    rgb = sh_to_rgb(sh, torch.nn.functional.normalize(means - cams.positions[0], dim=-1))
    out = torch.zeros(h * w, 3)
    trans = torch.ones(h * w)
    for i in order.tolist():
        if radii[i] == 0:
            continue
        d = pix - m2d[i]
        a, b, c = conics[i]
        power = -0.5 * (a * d[:, 0] ** 2 + c * d[:, 1] ** 2) - b * d[:, 0] * d[:, 1]
        alpha = (opac[i] * torch.exp(power.clamp_max(0))).clamp_max(ALPHA_MAX)
        alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
        out += (trans * alpha)[:, None] * rgb[i]
        trans = trans * (1 - alpha)
    out += trans[:, None]  # white background
    return out.reshape(h, w, 3).permute(2, 0, 1), (1 - trans).reshape(1, h, w)


def test_tiled_rasterizer_matches_dense_reference():
    scene = random_scene(300)
    cams = orbit_cameras(25.0, 20.0, 2.5, 40.0)
    out = rasterize(*scene, cams, 40, 56)  # sizes not multiples of the tile
    rgb_ref, alpha_ref = dense_reference(*scene, cams, 40, 56)
    assert torch.allclose(out["rgb"][0], rgb_ref, atol=2e-4)
    assert torch.allclose(out["alpha"][0], alpha_ref, atol=2e-4)


def test_single_gaussian_footprint_is_the_projected_gaussian():
    s, d, fov, res = 0.05, 3.0, 40.0, 64
    cams = orbit_cameras(0.0, 0.0, d, fov)
    out = rasterize(
        torch.zeros(1, 3),
        torch.full((1, 3), s),
        torch.tensor([[1.0, 0, 0, 0]]),
        torch.tensor([0.8]),
        torch.zeros(1, 1, 3),
        cams,
        res,
        res,
    )
    f = 0.5 * res / math.tan(math.radians(fov) / 2)
    var = (f * s / d) ** 2 + EPS_2D
    alpha = out["alpha"][0, 0]
    # The Gaussian's centre lies on the corner of the four central pixels: each is (0.5, 0.5) px away.
    assert alpha[31, 31].item() == pytest.approx(0.8 * math.exp(-0.25 / var), rel=1e-4)
    assert alpha[31, 34].item() == pytest.approx(0.8 * math.exp(-0.5 * (0.25 + 2.5**2) / var), rel=1e-3)
    assert alpha.sum().item() == pytest.approx(0.8 * 2 * math.pi * var, rel=0.02)
    assert out["depth"][0, 0, 31, 31].item() == pytest.approx(d, rel=1e-5)
    assert torch.allclose(
        out["rgb"][0, :, 31, 31], torch.tensor(0.5 * alpha[31, 31].item() + 1 - alpha[31, 31].item()).expand(3)
    )


def test_projection_matches_gsplat_reference():
    from gsplat.cuda._torch_impl import _fully_fused_projection

    means, scales, quats, _, _ = random_scene(50, seed=3)
    cams = orbit_cameras([10.0, 100.0], [5.0, 40.0], [2.8, 3.3])
    covs = covariances(scales, quats)
    vms, Ks = opencv_viewmats(cams), intrinsics(cams, 48, 64)
    radii_ref, m2d_ref, depth_ref, conics_ref, _ = _fully_fused_projection(means, covs, vms, Ks, 64, 48, eps2d=EPS_2D)
    for i in range(2):
        m2d, conics, depth, radii = project(means, covs, vms[i], Ks[i], 48, 64)
        assert torch.allclose(m2d, m2d_ref[i], atol=1e-3)
        assert torch.allclose(depth, depth_ref[i], atol=1e-5)
        assert torch.allclose(conics, conics_ref[i], rtol=1e-3, atol=1e-5)


def test_gradients_match_finite_differences():
    """Central differences in float64 on one camera, with the 1/255 alpha cut-off off (it is a step)."""
    from threedistill.renderers.gaussian_raster import rasterize_camera

    means, scales, quats, opac, sh = [t.double() for t in random_scene(20, seed=1, scale=0.08)]
    feats = torch.sigmoid(sh[:, 0]).requires_grad_()
    params = [means.requires_grad_(), scales.requires_grad_(), quats.requires_grad_(), opac.requires_grad_(), feats]
    cams = orbit_cameras(15.0, 10.0, 2.5, 40.0)
    vm, K = opencv_viewmats(cams)[0].double(), intrinsics(cams, 16, 16)[0].double()
    weights = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def loss(m, s, q, o, f):
        img, alpha = rasterize_camera(m, covariances(s, q), o, f, vm, K, 16, 16, alpha_min=0.0)
        return (img * weights).sum() + alpha.sum()

    grads = torch.autograd.grad(loss(*params), params)
    g = torch.Generator().manual_seed(4)
    for k, (param, grad) in enumerate(zip(params, grads)):
        direction = torch.randn(param.shape, generator=g, dtype=torch.float64)
        eps = 1e-6
        with torch.no_grad():
            plus = loss(*[p + eps * direction if i == k else p for i, p in enumerate(params)])
            minus = loss(*[p - eps * direction if i == k else p for i, p in enumerate(params)])
        numeric = (plus - minus) / (2 * eps)
        assert (grad * direction).sum().item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-6), k


def test_sh_matches_gsplat_reference():
    from gsplat.cuda._torch_impl import _spherical_harmonics

    g = torch.Generator().manual_seed(0)
    for degree in range(4):
        sh = torch.randn(30, (degree + 1) ** 2, 3, generator=g)
        dirs = torch.nn.functional.normalize(torch.randn(30, 3, generator=g), dim=-1)
        ref = (_spherical_harmonics(degree, dirs, sh) + 0.5).clamp_min(0)
        assert torch.allclose(sh_to_rgb(sh, dirs), ref, atol=1e-5), degree


def test_empty_and_behind_camera_scenes_render_background():
    cams = orbit_cameras(0.0, 0.0, 3.0)
    behind = torch.tensor([[0.0, 0.0, 5.0]])
    out = rasterize(
        behind,
        torch.full((1, 3), 0.1),
        torch.tensor([[1.0, 0, 0, 0]]),
        torch.tensor([0.9]),
        torch.zeros(1, 1, 3),
        cams,
        16,
        16,
    )
    assert torch.equal(out["rgb"], torch.ones(1, 3, 16, 16)) and out["alpha"].max() == 0


def test_pytorch_path_gradients_are_bit_reproducible(monkeypatch):
    """The same scene twice gives bit-identical gradients on the PyTorch path too (resume equality relies on it):
    gathers with repeated indices must not back-propagate through CPU atomics."""
    from threedistill import native
    from threedistill.renderers.gaussian_raster import rasterize

    monkeypatch.setattr(native, "usable", lambda *tensors: False)  # the PyTorch path even where kernels are built

    g = torch.Generator().manual_seed(3)
    n = 3000
    params = [
        torch.randn(n, 3, generator=g) * 0.4,
        torch.rand(n, 3, generator=g) * 0.05 + 0.02,
        torch.randn(n, 4, generator=g),
        torch.rand(n, generator=g),
        torch.rand(n, 1, 3, generator=g),
    ]
    cams = orbit_cameras([0.0, 120.0], 20.0, 3.0)
    target = torch.rand(2, 3, 24, 32, generator=g)
    grads = []
    for _ in range(4):
        leaves = [p.clone().requires_grad_(True) for p in params]
        out = rasterize(*leaves, cams, 24, 32, geometry=False, backend="torch")["rgb"]
        (out * target).sum().backward()
        grads.append([p.grad for p in leaves])
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], other))
