"""Native CPU kernels (kernels/*.cpp) against the PyTorch path they replace: outputs and gradients on random
scenes (property-based: random sizes, degenerate and off-screen Gaussians, empty tiles, points outside the grid),
the mode switch and the fallback when the build fails, and a whole short run with either path."""
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threedistill import native
from threedistill.cameras import orbit_cameras
from threedistill.errors import ThreeDistillError
from threedistill.renderers.gaussian_raster import rasterize
from threedistill.representations.hash_grid import HashGridEncoding

pytestmark = pytest.mark.skipif(native.kernels() is None, reason="no C++ compiler for the native kernels")


@pytest.fixture(autouse=True)
def restore_mode():
    yield
    native.set_mode(None)


def render_both(scene, cams, height, width, geometry):
    """Outputs and parameter gradients of a fixed random loss, with the PyTorch path and with the native one."""
    results = {}
    weights = None
    for mode in ("torch", "native"):
        native.set_mode(mode)
        params = [t.clone().requires_grad_() for t in scene]
        out = rasterize(*params, cams, height, width, geometry=geometry)
        if weights is None:
            g = torch.Generator().manual_seed(0)
            weights = {k: torch.rand(v.shape, generator=g) for k, v in out.items()}
        loss = sum((out[k] * weights[k]).sum() for k in ("rgb", "alpha"))
        if loss.requires_grad:  # (not when nothing is visible on the PyTorch path)
            loss.backward()
        results[mode] = ({k: v.detach() for k, v in out.items()},
                         [torch.zeros_like(p) if p.grad is None else p.grad for p in params])
    return results["torch"], results["native"]


def largest(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


scenes = st.fixed_dictionaries({
    "n": st.integers(0, 250), "seed": st.integers(0, 10_000), "scale": st.sampled_from([1e-4, 0.02, 0.1, 0.6]),
    "spread": st.sampled_from([0.2, 0.6, 3.0]), "height": st.integers(1, 40), "width": st.integers(1, 40),
    "geometry": st.booleans()})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes)
def test_native_rasterizer_matches_pytorch(case):
    g = torch.Generator().manual_seed(case["seed"])
    n = case["n"]
    scene = [torch.randn(n, 3, generator=g) * case["spread"],  # some far off-screen or behind the camera
             case["scale"] * (0.3 + torch.rand(n, 3, generator=g)) * torch.where(torch.rand(n, 3, generator=g) < 0.1, 0.01, 1.0),
             torch.randn(n, 4, generator=g), torch.rand(n, generator=g), torch.randn(n, 1, 3, generator=g)]
    cams = orbit_cameras([float(case["seed"] % 360), 90.0], [10.0, -20.0], 2.5)
    (out_t, grad_t), (out_n, grad_n) = render_both(scene, cams, case["height"], case["width"], case["geometry"])
    for key in out_t:
        assert torch.allclose(out_t[key], out_n[key], atol=3e-4), (key, largest(out_t[key] - out_n[key]))
    for a, b in zip(grad_t, grad_n):
        scale = max(1.0, largest(a))
        assert torch.allclose(a, b, atol=2e-3 * scale), largest(a - b) / scale


def test_native_rasterizer_matches_on_a_dense_scene():
    """Many overlapping Gaussians: opacity saturates and early termination kicks in."""
    g = torch.Generator().manual_seed(1)
    n = 3000
    scene = [torch.randn(n, 3, generator=g) * 0.25, 0.03 + 0.05 * torch.rand(n, 3, generator=g),
             torch.randn(n, 4, generator=g), 0.5 + 0.5 * torch.rand(n, generator=g), torch.randn(n, 4, 3, generator=g)]
    cams = orbit_cameras([30.0], [15.0], 2.6)
    (out_t, grad_t), (out_n, grad_n) = render_both(scene, cams, 64, 48, geometry=True)
    assert out_t["alpha"].max() > 0.99
    for key in ("rgb", "alpha"):
        assert (out_t[key] - out_n[key]).abs().max() < 5e-4, key
    for a, b in zip(grad_t, grad_n):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 8), st.integers(9, 15), st.integers(0, 1000))
def test_native_hash_grid_equals_pytorch(n, levels, log2_table, seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = HashGridEncoding(levels=levels, log2_table_size=log2_table, base_resolution=4, max_resolution=300,
                           init_scale=1.0)
    x = torch.rand(n, 3, generator=g) * 1.4 - 0.2  # some points outside the unit cube (clamped)
    grad_out = torch.randn(n, enc.output_dim, generator=g)
    results = []
    for mode in ("torch", "native"):
        native.set_mode(mode)
        enc.table.grad = None
        y = enc(x)
        (y * grad_out).sum().backward()
        results.append((y.detach(), enc.table.grad.clone()))
    (y_t, g_t), (y_n, g_n) = results
    assert torch.allclose(y_t, y_n, atol=1e-6)
    assert torch.allclose(g_t, g_n, atol=1e-5)


def test_hash_grid_keeps_input_gradients_on_the_pytorch_path():
    enc = HashGridEncoding(levels=2, log2_table_size=10, init_scale=1.0)
    x = torch.rand(10, 3, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_mode_switch_and_errors(monkeypatch):
    native.set_mode("torch")
    assert native.kernels() is None and not native.usable(torch.zeros(1))
    native.set_mode("auto")
    assert native.usable(torch.zeros(1)) and not native.usable(torch.zeros(1, dtype=torch.float64))
    with pytest.raises(ThreeDistillError, match="native must be one of auto, native, torch, got 'fast'"):
        native.set_mode("fast")
    native.set_mode(None)
    monkeypatch.setenv("THREEDISTILL_NATIVE", "sometimes")
    with pytest.raises(ThreeDistillError, match="THREEDISTILL_NATIVE must be one of"):
        native.mode()


def test_a_failed_build_falls_back_with_a_warning_or_fails_when_required(tmp_path, monkeypatch):
    """A real compile of a broken source: auto warns once and uses PyTorch; native=native is an error."""
    for name in native.SOURCES:
        (tmp_path / name).write_text("this is not C++\n")
    monkeypatch.setattr(native, "kernels_dir", lambda: tmp_path)
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_failed", None)
    monkeypatch.setenv("THREEDISTILL_CACHE", str(tmp_path / "cache"))
    native.set_mode("auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert native.kernels() is None
    assert any("native CPU kernels unavailable" in str(w.message) for w in caught)
    native.set_mode("native")
    with pytest.raises(ThreeDistillError, match="could not be built"):
        native.kernels()


def test_short_generate_gives_the_same_result_with_either_path(tmp_path):
    from threedistill.evaluation.ground_truth import compare, eval_cameras
    from threedistill.runs import generate

    ious = {}
    for mode in ("torch", "native"):
        run = generate(prompt="a red cone", steps=60, seed=0, out=str(tmp_path / mode), progress=False,
                       log=lambda s: None, overrides=[f"native={mode}", "export=[]", "trainer.resolution=32",
                                                      "trainer.checkpoint_every=0", "trainer.preview_every=0"])
        ious[mode] = compare(run.render(eval_cameras(), 32), "red", "cone", 32)["silhouette_iou"]
    assert abs(ious["torch"] - ious["native"]) < 0.05, ious
    assert min(ious.values()) > 0.3
    assert not math.isnan(sum(ious.values()))


def test_perf_bench_pieces(tmp_path):
    """The benchmark's dense reference renders what the rasterizer renders, and the step split adds up."""
    from threedistill.evaluation.perf_bench import dense_composite, generate_row, markdown_report, random_scene

    scene = random_scene(200, seed=4)
    cams = orbit_cameras([30.0], [15.0], 2.8)
    native.set_mode("torch")
    out = rasterize(*scene, cams, 24, 24, geometry=False)
    ours = (out["rgb"] - (1 - out["alpha"]))[0].permute(1, 2, 0).reshape(-1, 3)  # without the white background
    assert torch.allclose(dense_composite(*scene, cams, 24), ours, atol=1e-4)

    row = generate_row("native", "a red cone", 0.0, 2, lambda s: None,
                       ["trainer.steps=4", "gaussians.num_points=200", "trainer.resolution=16", "export=[]"])
    assert [c[0] for c in row["curve"]] == [2, 4] and row["reached_seconds"] is not None
    split = row["split"]
    assert split["prior UNet"] > 0 and split["render (forward)"] > 0 and split["guidance (rest)"] >= 0
    assert abs(sum(split.values()) - row["train_seconds"] / 4) < 1e-6
    report = markdown_report("# perf", [], [], [row], {"wall_seconds": 1.0, "peak_mb": 10.0}, 0.0)
    assert "| prior UNet |" in report and "peak resident memory **10 MB**" in report


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 300), st.integers(1, 70), st.integers(1, 70), st.integers(0, 1000))
def test_native_binning_equals_pytorch(n, height, width, seed):
    """Same tiles, same front-to-back order (ties by index) as the PyTorch path's stable sorts."""
    from threedistill.renderers.gaussian_raster import NATIVE_TILE, _tile_pairs

    g = torch.Generator().manual_seed(seed)
    means2d = torch.rand(n, 2, generator=g) * torch.tensor([width * 1.6, height * 1.6]) - 0.3 * torch.tensor([width, height])
    radii = torch.ceil(torch.rand(n, generator=g) * 12) * (torch.rand(n, generator=g) > 0.2)
    depths = torch.randint(0, 5, (n,), generator=g).float()  # many ties
    tiles_x, tiles_y = -(-width // NATIVE_TILE), -(-height // NATIVE_TILE)
    tile, gauss = _tile_pairs(means2d, radii, depths, tiles_x, tiles_y, NATIVE_TILE)
    offsets, ids = native.kernels().bin_gaussians(means2d, radii, depths, tiles_x, tiles_y, NATIVE_TILE)
    assert torch.equal(ids, gauss)
    assert torch.equal(offsets, torch.cat([torch.zeros(1, dtype=torch.long),
                                           torch.bincount(tile, minlength=tiles_x * tiles_y).cumsum(0)]))
