"""3DGS .ply and .splat export: exact property layout, bit-exact round trip, and one-line errors."""

import numpy as np
import pytest
import torch

from threedistill.errors import ThreeDistillError
from threedistill.export.splats import SH_C0, SplatParams, read_ply, read_splat, write_ply, write_splat
from threedistill.representations.gaussians import Gaussians, GaussiansConfig


def random_params(n=50, degree=3, seed=0) -> SplatParams:
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return SplatParams(f(n, 3), f(n, 3) - 3, f(n, 4), f(n), f(n, (degree + 1) ** 2, 3))


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_round_trip_is_exact_and_uses_the_inria_layout(tmp_path, degree):
    from plyfile import PlyData

    params = random_params(degree=degree)
    path = write_ply(params, tmp_path / "point_cloud.ply")
    names = PlyData.read(str(path))["vertex"].data.dtype.names
    k = (degree + 1) ** 2 - 1
    assert len(names) == 17 + 3 * k  # 62 properties for degree 3
    assert names[:9] == ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
    assert names[-8:] == ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
    assert path.stat().st_size > len(params.means) * 4 * len(names)  # binary float32 body after the header
    back = read_ply(path)
    for key in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        assert np.array_equal(getattr(back, key), getattr(params, key)), key
    if degree:  # channel-major f_rest: f_rest_{c*K + k} is coefficient k+1 of channel c
        vertex = PlyData.read(str(path))["vertex"].data
        assert vertex[f"f_rest_{1 * k + 0}"][0] == params.sh[0, 1, 1]
        assert vertex[f"f_rest_{2 * k + k - 1}"][0] == params.sh[0, k, 2]


def test_trained_gaussians_survive_a_ply_round_trip(tmp_path):
    model = Gaussians(GaussiansConfig(num_points=30, sh_degree=1), torch.Generator().manual_seed(0))
    write_ply(SplatParams.from_gaussians(model), tmp_path / "g.ply")
    copy = Gaussians(GaussiansConfig(num_points=1, sh_degree=1))
    copy.load_tensors(read_ply(tmp_path / "g.ply").tensors())
    for a, b in zip(model.parameters(), copy.parameters()):
        assert torch.equal(a, b)


def test_splat_is_32_bytes_each_sorted_and_quantised(tmp_path):
    params = random_params(n=40, degree=0)
    path = write_splat(params, tmp_path / "x.splat")
    assert path.stat().st_size == 40 * 32
    back = read_splat(path)
    importance = np.exp(params.log_scales.sum(1)) / (1 + np.exp(-params.opacity_logits))
    order = np.argsort(-importance, kind="stable")
    assert np.array_equal(back.means, params.means[order])  # positions are exact: the file is in this order
    assert np.all(np.diff(importance[order]) <= 0)  # descending size x opacity
    assert np.allclose(back.log_scales, params.log_scales[order], atol=1e-6)
    rgb = np.clip(0.5 + SH_C0 * params.sh[order, 0], 0, 1)
    assert np.abs((0.5 + SH_C0 * back.sh[:, 0]) - rgb).max() <= 0.5 / 255 + 1e-6
    unit = params.quats[order] / np.linalg.norm(params.quats[order], axis=1, keepdims=True)
    assert np.abs(back.quats - unit).max() <= 1 / 128 + 1e-6


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(ThreeDistillError, match="no such file"):
        read_ply(tmp_path / "missing.ply")
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"not a ply at all")
    with pytest.raises(ThreeDistillError, match="not a readable PLY"):
        read_ply(junk)
    import trimesh

    mesh_ply = tmp_path / "mesh.ply"
    trimesh.creation.box().export(mesh_ply)
    with pytest.raises(ThreeDistillError, match="not a 3DGS point cloud: missing properties f_dc_0"):
        read_ply(mesh_ply)
    params = random_params(degree=1)
    from plyfile import PlyData, PlyElement

    path = write_ply(params, tmp_path / "odd.ply")
    data = PlyData.read(str(path))["vertex"].data
    keep = [n for n in data.dtype.names if n != "f_rest_8"]  # 8 rest coefficients: no integer degree
    PlyData([PlyElement.describe(np.array(data[keep].tolist(), dtype=[(n, "<f4") for n in keep]), "vertex")]).write(
        str(path)
    )
    with pytest.raises(ThreeDistillError, match="8 f_rest properties give no SH degree"):
        read_ply(path)
    with pytest.raises(ThreeDistillError, match="no such file"):
        read_splat(tmp_path / "missing.splat")
    (tmp_path / "bad.splat").write_bytes(b"x" * 33)
    with pytest.raises(ThreeDistillError, match="not a multiple of 32"):
        read_splat(tmp_path / "bad.splat")


def test_splat_formats_need_a_gaussians_run(tmp_path):
    from threedistill.export.run_export import export_model

    with pytest.raises(ThreeDistillError, match="stores 3D Gaussians, this run is 'nerf'"):
        export_model(None, "nerf", "ply", tmp_path / "x.ply")


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_spz_round_trip_within_its_quantisation(tmp_path, degree):
    from threedistill.export.splats import read_spz, write_spz

    params = random_params(n=200, degree=degree, seed=3)
    params.sh[:, 1:] = np.clip(params.sh[:, 1:] * 0.3, -0.95, 0.95)  # .spz stores SH rest in [-1, 1)
    params.sh[:, 0] *= 0.5
    path = write_spz(params, tmp_path / "m.spz")
    ply = write_ply(params, tmp_path / "m.ply")
    assert path.stat().st_size < ply.stat().st_size / 3  # 8-bit quantised and gzipped (random data barely compresses)
    back = read_spz(path)
    assert np.abs(back.means - params.means).max() <= 0.5 / 4096 + 1e-6  # 12 fractional bits
    assert np.abs(back.log_scales - params.log_scales).max() <= 0.5 / 16 + 1e-6
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert np.abs(sig(back.opacity_logits) - sig(params.opacity_logits)).max() <= 0.5 / 255 + 1e-5
    assert np.abs(back.sh[:, 0] - params.sh[:, 0]).max() <= 0.5 / (255 * 0.15) + 1e-5
    if degree:
        assert np.abs(back.sh[:, 1:4] - params.sh[:, 1:4]).max() <= 4.5 / 128  # 5-bit buckets for degree 1
    if degree > 1:
        assert np.abs(back.sh[:, 4:] - params.sh[:, 4:]).max() <= 8.5 / 128 + 1e-6  # 4-bit buckets beyond
    unit = params.quats / np.linalg.norm(params.quats, axis=1, keepdims=True)
    same_rotation = np.abs((back.quats * unit).sum(1))  # q and -q are the same rotation
    assert same_rotation.min() > 0.999


def test_bad_spz_files(tmp_path):
    import gzip

    from threedistill.export.splats import read_spz

    (tmp_path / "a.spz").write_bytes(b"plain bytes")
    with pytest.raises(ThreeDistillError, match="not a gzip-compressed .spz"):
        read_spz(tmp_path / "a.spz")
    (tmp_path / "b.spz").write_bytes(gzip.compress(b"\x00" * 20))
    with pytest.raises(ThreeDistillError, match="no .spz header"):
        read_spz(tmp_path / "b.spz")


def test_compressed_ply_round_trip_and_output_names(tmp_path):
    from threedistill.export.compressed_ply import _morton_order, read_compressed_ply, write_compressed_ply
    from threedistill.export.run_export import check_output_file, default_export_path

    params = random_params(n=300, degree=2)
    back = read_compressed_ply(write_compressed_ply(params, tmp_path / "x.compressed.ply"))
    assert len(back.means) == 300 and back.sh.shape == (300, 9, 3)
    means = params.means[_morton_order(params.means.astype(np.float64))]  # the file's order
    span = means.max(0) - means.min(0)  # no chunk is wider than all of them
    assert np.all(np.abs(back.means - means).max(0) <= span / np.array([2047, 1023, 2047]) / 2 + 1e-6)
    one = random_params(n=10, degree=0)
    one.means[:] = one.means[0]  # a chunk whose bounds are one point: exact, no division by zero
    one_back = read_compressed_ply(write_compressed_ply(one, tmp_path / "1.compressed.ply"))
    assert np.array_equal(one_back.means, one.means)
    assert np.isfinite(back.opacity_logits).all()
    assert default_export_path(tmp_path, "compressed.ply").name == "model.compressed.ply"
    assert check_output_file(tmp_path / "a.compressed.ply", "compressed.ply").name == "a.compressed.ply"
    with pytest.raises(ThreeDistillError, match="does not end in .ply"):
        check_output_file(tmp_path / "a.compressed.ply", "ply")  # the plain .ply under the compressed one's name
    with pytest.raises(ThreeDistillError, match="does not end in .compressed.ply"):
        check_output_file(tmp_path / "a.ply", "compressed.ply")


def test_splat_colour_is_the_rendered_colour_so_dark_gaussians_lose_nothing(tmp_path):
    """DC colours below 0 (the optimiser leaves some) are stored as 0: what our renderer shows them as. The
    read-back renders like the original up to 8-bit steps, though the stored DC moved by up to 0.1."""
    from threedistill.cameras import orbit_cameras

    model = Gaussians(
        GaussiansConfig(num_points=300, init_opacity=0.5, init_radius=0.6), torch.Generator().manual_seed(1)
    )
    params = SplatParams.from_gaussians(model)
    params.sh[:, 0] = np.random.default_rng(0).uniform(-0.6 / SH_C0, 0.4 / SH_C0, (300, 3))  # rgb -0.1 .. 0.9
    back = read_splat(write_splat(params, tmp_path / "dark.splat"))

    def render(p):
        g = Gaussians(GaussiansConfig(num_points=1))
        g.load_tensors(p.tensors())
        with torch.no_grad():
            return g.render(orbit_cameras([0, 90, 200], 15.0, 2.9), 64, 64)["rgb"]

    order = np.argsort(-(np.exp(params.log_scales.sum(1)) / (1 + np.exp(-params.opacity_logits))), kind="stable")
    assert np.abs(0.5 + SH_C0 * back.sh[:, 0] - (0.5 + SH_C0 * params.sh[order, 0])).max() > 0.09
    assert (render(back) - render(params)).abs().max() < 0.02
