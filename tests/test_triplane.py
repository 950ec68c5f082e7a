"""The triplane field: sampling against known plane values, gradient flow, configs, and a short run."""

import pytest
import torch

from threedistill.cameras import orbit_cameras
from threedistill.errors import ConfigError
from threedistill.representations.triplane import PLANE_AXES, Triplane, TriplaneConfig, TriplaneEncoding


def _linear_planes(enc: TriplaneEncoding, coefficients) -> None:
    """Set each plane's channel 0 to a linear function a*u + b*v of its two coordinates (u, v in [0, 1])."""
    res = enc.planes[0].shape[-1]
    axis = torch.linspace(0, 1, res)
    v, u = torch.meshgrid(axis, axis, indexing="ij")  # rows index v (grid_sample's y), columns u
    with torch.no_grad():
        enc.planes[0].zero_()
        for p, (a, b) in enumerate(coefficients):
            enc.planes[0][p, 0] = a * u + b * v


def test_bilinear_sampling_reproduces_linear_plane_values_exactly():
    enc = TriplaneEncoding(resolution=9, levels=1, features=2, reduce="concat")
    coefficients = [(1.0, 2.0), (-3.0, 0.5), (0.25, 4.0)]
    _linear_planes(enc, coefficients)
    x = torch.rand(400, 3, generator=torch.Generator().manual_seed(0))
    out = enc(x)  # concat: plane p's channels at columns [2p, 2p+1]
    for p, ((i, j), (a, b)) in enumerate(zip(PLANE_AXES, coefficients)):
        assert torch.allclose(out[:, 2 * p], a * x[:, i] + b * x[:, j], atol=1e-5), f"plane {p}"
        assert out[:, 2 * p + 1].abs().max() == 0


def test_sum_reduction_adds_the_three_planes_and_levels_concatenate():
    enc = TriplaneEncoding(resolution=8, levels=2, features=3, reduce="sum")
    assert [p.shape[-1] for p in enc.planes] == [8, 4] and enc.output_dim == 6
    concat = TriplaneEncoding(resolution=8, levels=2, features=3, reduce="concat")
    concat.load_state_dict(enc.state_dict())
    x = torch.rand(50, 3, generator=torch.Generator().manual_seed(1))
    a, b = enc(x), concat(x)
    assert concat.output_dim == 18 and b.shape == (50, 18)
    for level in range(2):
        summed = b[:, level * 9 : (level + 1) * 9].reshape(50, 3, 3).sum(1)
        assert torch.allclose(a[:, level * 3 : (level + 1) * 3], summed, atol=1e-6)


def test_gradients_reach_only_the_plane_texels_around_the_point():
    enc = TriplaneEncoding(resolution=16, levels=1, features=1, reduce="sum")
    x = torch.tensor([[0.5, 0.25, 0.75]])
    enc(x).sum().backward()
    grad = enc.planes[0].grad
    assert torch.count_nonzero(grad).item() <= 3 * 4  # 4 bilinear texels per plane
    for p, (i, j) in enumerate(PLANE_AXES):
        assert grad[p].sum().item() == pytest.approx(1.0, abs=1e-5)  # bilinear weights sum to one
        v, u = divmod(int(grad[p, 0].flatten().argmax()), 16)
        assert abs(u / 15 - x[0, i]) < 1 / 15 + 1e-6 and abs(v / 15 - x[0, j]) < 1 / 15 + 1e-6


def test_triplane_renders_and_every_parameter_group_gets_gradients():
    model = Triplane(TriplaneConfig(n_samples=8, n_importance=8), generator=torch.Generator().manual_seed(0))
    out = model.render(orbit_cameras([0.0, 90.0], 15.0, 2.8), 12, 12, generator=torch.Generator().manual_seed(0))
    assert out["rgb"].shape == (2, 3, 12, 12) and torch.isfinite(out["rgb"]).all()
    assert out["alpha"].max() > 0.5  # the density blob is visible at initialisation
    out["rgb"].mean().backward()
    names = {g["name"]: g for g in model.param_groups()}
    assert set(names) == {"grid", "mlp"} and names["grid"]["lr"] == TriplaneConfig().lr_grid
    for group in names.values():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in group["params"]), group["name"]


def test_same_seed_same_triplane():
    a = Triplane(generator=torch.Generator().manual_seed(3))
    b = Triplane(generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"reduce": "mean"}, "triplane.reduce must be 'sum' or 'concat'"),
        ({"plane_levels": 0}, "triplane.plane_levels must be >= 1"),
        ({"plane_resolution": 8, "plane_levels": 4}, "triplane.plane_resolution=8 is too small"),
        ({"lr_grid": [0, 1]}, "triplane.lr_grid: expected a number or a schedule"),
    ],
)
def test_bad_triplane_config_is_one_line(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        TriplaneConfig(**kwargs)
