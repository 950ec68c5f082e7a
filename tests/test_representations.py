"""Volume rendering of known densities, the hash-grid encoding, the NeRF's blob and 3DGS densification."""

import math

import pytest
import torch

from threedistill.cameras import orbit_cameras
from threedistill.errors import ConfigError
from threedistill.lighting import light_intensity
from threedistill.renderers.volume import render_volume
from threedistill.representations.gaussians import Gaussians, GaussiansConfig
from threedistill.representations.hash_grid import HashGridEncoding
from threedistill.representations.nerf import NeRF, NeRFConfig


class ConstantBall:
    """Density `sigma` everywhere inside the unit bounding sphere, colour `rgb`, black background."""

    def __init__(self, sigma: float, rgb=(1.0, 0.0, 0.0)):
        self.sigma, self.rgb = sigma, torch.tensor(rgb)

    def density(self, points):
        return torch.full((len(points),), self.sigma), torch.zeros(len(points), 1)

    def color(self, features, dirs):
        return self.rgb.expand(len(features), 3)

    def background(self, dirs):
        return torch.zeros_like(dirs)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 4.0])
def test_transmittance_and_depth_of_a_constant_density_ball(sigma):
    # The central ray crosses the unit sphere over length 2 from distance r-1: alpha = 1 - exp(-2 sigma), and
    # the expected hit distance is the mean of an exponential truncated to the segment.
    radius, length = 3.0, 2.0
    out = render_volume(
        ConstantBall(sigma), orbit_cameras(0.0, 0.0, radius), 1, 1, n_samples=256, n_importance=0, perturb=False
    )
    alpha = 1 - math.exp(-sigma * length)
    assert out["alpha"].item() == pytest.approx(alpha, abs=1e-4)
    assert out["rgb"][0, :, 0, 0].tolist() == pytest.approx([alpha, 0.0, 0.0], abs=1e-4)
    mean_offset = 1 / sigma - length * math.exp(-sigma * length) / (1 - math.exp(-sigma * length))
    assert out["depth"].item() == pytest.approx(radius - 1 + mean_offset, abs=2e-3)


def test_rays_missing_the_bound_show_the_background():
    out = render_volume(ConstantBall(5.0), orbit_cameras(0.0, 0.0, 3.0, fovy=120.0), 9, 9, n_samples=8, n_importance=8)
    assert out["alpha"][0, 0, 0, 0] == 0 and out["alpha"][0, 0, 4, 4] > 0.99
    assert out["rgb"][0, :, 0, 0].abs().sum() == 0


def test_dense_hash_level_interpolates_linear_functions_exactly():
    enc = HashGridEncoding(levels=1, features_per_level=2, log2_table_size=12, base_resolution=8, max_resolution=8)
    assert enc.dense == [True]
    res = enc.resolutions[0]
    grid = torch.stack(torch.meshgrid(*[torch.arange(res + 1.0)] * 3, indexing="ij"), -1).reshape(-1, 3) / res
    with torch.no_grad():  # table rows in the dense x-major order hold a linear function of the vertex position
        enc.table[:] = torch.stack([grid @ torch.tensor([1.0, 2.0, 3.0]), grid[:, 0] - grid[:, 2]], -1)
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([x @ torch.tensor([1.0, 2.0, 3.0]), x[:, 0] - x[:, 2]], -1)
    assert torch.allclose(enc(x), expected, atol=1e-5)


def test_hashed_levels_stay_in_their_table_and_pass_gradients():
    enc = HashGridEncoding(levels=4, features_per_level=2, log2_table_size=10, base_resolution=4, max_resolution=64)
    assert enc.dense[0] and not enc.dense[-1]
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(1))
    for level in range(enc.levels):
        cell = (x * enc.resolutions[level]).floor().clamp(max=enc.resolutions[level] - 1).to(torch.int32)
        idx = enc._index(cell, level)
        assert idx.min() >= enc.offsets[level] and idx.max() < enc.offsets[level + 1]
    enc.table.data.normal_(generator=torch.Generator().manual_seed(2))
    enc(x).square().sum().backward()
    assert enc.table.grad.abs().sum() > 0
    # the encoding is continuous: a tiny step moves the features a tiny amount
    assert (enc(x + 1e-4) - enc(x)).abs().max() < 5e-2  # a wrong corner index would jump by ~1


def test_nerf_starts_as_a_centred_blob_with_outward_normals():
    nerf = NeRF(generator=torch.Generator().manual_seed(0))
    centre, edge = nerf.density(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.9]]))[0]
    assert centre > 5.0 and edge < 0.5
    points = torch.tensor([[0.3, 0.0, 0.0], [0.0, -0.3, 0.0], [0.0, 0.0, 0.3]])
    cosine = (nerf.normals(points) * torch.nn.functional.normalize(points, dim=-1)).sum(-1)
    assert (cosine > 0.9).all()


class SolidSphere(ConstantBall):
    """A dense ball of radius 0.5 whose normals point out from its centre."""

    def density(self, points):
        return torch.where(points.norm(dim=-1) < 0.5, 200.0, 0.0), torch.zeros(len(points), 1)

    def normals(self, points):
        return torch.nn.functional.normalize(points, dim=-1)


@pytest.mark.parametrize("azimuth", [0.0, 90.0, 200.0])
def test_lambert_shading_lights_the_albedo_at_the_ray_surface(azimuth):
    # The central ray meets the sphere where its normal faces the camera: the pixel is the albedo times the
    # rig's light there; without surface_light it is the albedo.
    cams = orbit_cameras(azimuth, 20.0, 3.0)
    kwargs = dict(n_samples=128, n_importance=64, perturb=False)
    lit = render_volume(SolidSphere(0, (0.8, 0.4, 0.2)), cams, 1, 1, surface_light=light_intensity, **kwargs)
    flat = render_volume(SolidSphere(0, (0.8, 0.4, 0.2)), cams, 1, 1, **kwargs)
    light = light_intensity(torch.nn.functional.normalize(cams.positions, dim=-1))[0, 0]
    assert flat["rgb"][0, :, 0, 0].tolist() == pytest.approx([0.8, 0.4, 0.2], abs=1e-3)
    assert lit["rgb"][0, :, 0, 0].tolist() == pytest.approx((torch.tensor([0.8, 0.4, 0.2]) * light).tolist(), abs=2e-3)
    assert light < 0.999  # the test means something: this side is not fully lit


def test_lambert_nerf_moves_its_density_through_the_shading():
    # A grey NeRF (colour network frozen at 0.5): without shading a loss on brightness reaches the density only
    # through the opacity; with lambert shading also through the surface normals, so its gradient is larger.
    def density_grad(shading):
        torch.manual_seed(0)
        nerf = NeRF(NeRFConfig(levels=4, log2_table_size=10, shading=shading), torch.Generator().manual_seed(0))
        nerf.color_net.requires_grad_(False)
        with torch.no_grad():
            nerf.color_net[-1].weight.zero_()  # colour 0.5 everywhere: features do not change it
        out = nerf.render(orbit_cameras([0.0, 90.0], [20.0, 20.0], 3.0), 12, 12, perturb=False)
        (out["rgb"] * out["alpha"]).mean().backward()  # brightness inside the silhouette
        return nerf.density_net[0].weight.grad.abs().sum().item()

    flat, lit = density_grad("albedo"), density_grad("lambert")
    assert lit > 2 * flat > 0


def test_nerf_shading_must_be_albedo_or_lambert():
    with pytest.raises(ConfigError, match="nerf.shading must be 'albedo' or 'lambert', got 'phong'"):
        NeRFConfig(shading="phong")


def test_the_colour_mlp_gets_its_own_rate_only_when_asked():
    def groups(**kw):
        nerf = NeRF(NeRFConfig(levels=2, log2_table_size=8, **kw), torch.Generator().manual_seed(0))
        return nerf, {g["name"]: g for g in nerf.param_groups()}

    nerf, default = groups(lr_mlp=0.01)
    assert "color" not in default and len(default["mlp"]["params"]) == 4 + 4  # both MLPs share lr_mlp
    nerf, split = groups(lr_mlp=0.01, lr_color=0.002)
    assert split["color"]["lr"] == 0.002 and split["mlp"]["lr"] == 0.01
    assert {id(p) for p in split["color"]["params"]} == {id(p) for p in nerf.color_net.parameters()}
    assert not {id(p) for p in split["mlp"]["params"]} & {id(p) for p in nerf.color_net.parameters()}
    with pytest.raises(ConfigError, match="nerf.lr_color: expected a number or a schedule"):
        NeRFConfig(lr_color="fast")


def test_batched_normals_match_one_difference_per_axis():
    nerf = NeRF(NeRFConfig(levels=4, log2_table_size=10), generator=torch.Generator().manual_seed(3))
    points = torch.rand(64, 3, generator=torch.Generator().manual_seed(4)) - 0.5
    eps = nerf.cfg.normal_eps
    grads = [nerf.density(points + o)[0] - nerf.density(points - o)[0] for o in torch.eye(3) * eps]
    expected = -torch.nn.functional.normalize(torch.stack(grads, -1), dim=-1)
    assert torch.allclose(nerf.normals(points), expected, atol=1e-5)


def _with_adam(model: Gaussians) -> torch.optim.Adam:
    opt = torch.optim.Adam(model.param_groups())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return opt


def test_densify_clones_small_splits_large_and_prunes_transparent_gaussians():
    cfg = GaussiansConfig(num_points=4, split_scale=0.1, densify_grad_threshold=0.5, prune_opacity=0.05)
    model = Gaussians(cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.log_scales[:] = math.log(0.05)
        model.log_scales[1] = math.log(0.2)  # large -> split
        model.opacity_logits[:] = 0.0
        model.opacity_logits[3] = -5.0  # transparent -> pruned
    opt = _with_adam(model)
    parent_scale = model.scales[1].detach().clone()
    strategy = model.strategy  # the Gaussians' densification strategy holds the gradient statistics
    strategy.grad_accum[:] = torch.tensor([1.0, 1.0, 0.1, 0.1])  # 0 and 1 are hot
    strategy.grad_count[:] = 1
    stats = strategy.densify_and_prune(model, opt, torch.Generator().manual_seed(0))
    assert stats == {"cloned": 1, "split": 1, "pruned": 2, "count": 5}  # 4 + 1 clone + 2 children - parent - pruned
    assert torch.allclose(model.scales[-2:], (parent_scale / 1.6).expand(2, 3))  # children: 1/1.6 of the parent
    for group in opt.param_groups:  # optimizer follows the new tensors, with moments for every row
        param = group["params"][0]
        assert any(param is p for p in model.parameters())
        assert opt.state[param]["exp_avg"].shape == param.shape
    assert len(model) == 5 and strategy.grad_accum.shape == (5,)


def test_inference_renders_skip_empty_rays_without_changing_the_image():
    nerf = NeRF(NeRFConfig(blob_radius=0.3), generator=torch.Generator().manual_seed(0))
    cams = orbit_cameras([0.0, 120.0], 20.0, 2.9)
    full = nerf.render(cams, 24, 24, perturb=False)  # with gradients: every ray takes the fine pass
    with torch.no_grad():
        fast = nerf.render(cams, 24, 24, perturb=False)
    assert len(fast["weights"]) < len(full["weights"])  # some rays were skipped
    assert (fast["rgb"] - full["rgb"].detach()).abs().max() < 2e-3
    assert (fast["alpha"] - full["alpha"].detach()).abs().max() < 2e-3
