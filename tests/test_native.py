"""Native CPU kernels (kernels/*.cpp) against the PyTorch path they replace: outputs and gradients on random
scenes (property-based: random sizes, degenerate and off-screen Gaussians, empty tiles, points outside the grid),
the mode switch and the fallback when the build fails, and a whole short run with either path."""

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from threedistill import native
from threedistill.cameras import orbit_cameras
from threedistill.errors import ThreeDistillError
from threedistill.renderers import gaussian_raster as gr
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
        results[mode] = (
            {k: v.detach() for k, v in out.items()},
            [torch.zeros_like(p) if p.grad is None else p.grad for p in params],
        )
    return results["torch"], results["native"]


def largest(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


scenes = st.fixed_dictionaries(
    {
        "n": st.integers(0, 250),
        "seed": st.integers(0, 10_000),
        "scale": st.sampled_from([1e-4, 0.02, 0.1, 0.6]),
        "spread": st.sampled_from([0.2, 0.6, 3.0]),
        "height": st.integers(1, 40),
        "width": st.integers(1, 40),
        "geometry": st.booleans(),
        "sh_degree": st.integers(0, 3),
    }
)


# derandomize: CI draws the same 40 examples every run (a random draw found the sub-pixel case below on 2026-12-05)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(scenes)
def test_native_rasterizer_matches_pytorch(case):
    check_rasterizers_agree(case)


@pytest.mark.xfail(
    strict=True,
    reason="known: one Gaussian (index 120 alone reproduces it) whose alpha at a pixel centre is within float error "
    "of the 1/255 floor: one path keeps it, the other drops it, a jump of exactly 1/255 in alpha (1.3e-3 here in "
    "alpha, 5.7e-4 in rgb, tolerance 3e-4). A hard threshold cannot agree to 3e-4 at its edge",
)
def test_native_rasterizer_matches_pytorch_on_sub_pixel_gaussians():
    check_rasterizers_agree(
        {
            "n": 199,
            "seed": 650,
            "scale": 1e-4,
            "spread": 0.2,
            "height": 26,
            "width": 13,
            "geometry": False,
            "sh_degree": 0,
        }
    )


def check_rasterizers_agree(case: dict) -> None:
    g = torch.Generator().manual_seed(case["seed"])
    n = case["n"]
    scene = [
        torch.randn(n, 3, generator=g) * case["spread"],  # some far off-screen or behind the camera
        case["scale"]
        * (0.3 + torch.rand(n, 3, generator=g))
        * torch.where(torch.rand(n, 3, generator=g) < 0.1, 0.01, 1.0),
        torch.randn(n, 4, generator=g),
        torch.rand(n, generator=g),
        torch.randn(n, (case["sh_degree"] + 1) ** 2, 3, generator=g) * 0.5,
    ]
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
    scene = [
        torch.randn(n, 3, generator=g) * 0.25,
        0.03 + 0.05 * torch.rand(n, 3, generator=g),
        torch.randn(n, 4, generator=g),
        0.5 + 0.5 * torch.rand(n, generator=g),
        torch.randn(n, 4, 3, generator=g),
    ]
    cams = orbit_cameras([30.0], [15.0], 2.6)
    (out_t, grad_t), (out_n, grad_n) = render_both(scene, cams, 64, 48, geometry=True)
    assert out_t["alpha"].max() > 0.99
    for key in ("rgb", "alpha"):
        assert (out_t[key] - out_n[key]).abs().max() < 5e-4, key
    for a, b in zip(grad_t, grad_n):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 8), st.integers(9, 15), st.integers(1, 4), st.integers(0, 1000))
def test_native_hash_grid_equals_pytorch(n, levels, log2_table, features, seed):
    # levels below and above the thread count take the kernel's two backward schedules; 2 features its fixed-size path
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = HashGridEncoding(
        levels=levels,
        features_per_level=features,
        log2_table_size=log2_table,
        base_resolution=4,
        max_resolution=300,
        init_scale=1.0,
    )
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
    from threedistill.workflows.generate import generate

    ious = {}
    for mode in ("torch", "native"):
        run = generate(
            prompt="a red cone",
            steps=60,
            seed=0,
            out=str(tmp_path / mode),
            progress=False,
            log=lambda s: None,
            overrides=[
                f"native={mode}",
                "export=[]",
                "trainer.resolution=32",
                "trainer.checkpoint_every=0",
                "trainer.preview_every=0",
            ],
        )
        ious[mode] = compare(run.render(eval_cameras(), 32), "red", "cone", 32)["silhouette_iou"]
    assert abs(ious["torch"] - ious["native"]) < 0.05, ious
    assert min(ious.values()) > 0.3
    assert not math.isnan(sum(ious.values()))


def test_perf_bench_pieces(tmp_path):
    """The benchmark's dense reference renders what the rasterizer renders, and the step split adds up."""
    from threedistill.bench.perf_bench import dense_composite, generate_row, markdown_report, random_scene

    scene = random_scene(200, seed=4)
    cams = orbit_cameras([30.0], [15.0], 2.8)
    native.set_mode("torch")
    out = rasterize(*scene, cams, 24, 24, geometry=False)
    ours = (out["rgb"] - (1 - out["alpha"]))[0].permute(1, 2, 0).reshape(-1, 3)  # without the white background
    assert torch.allclose(dense_composite(*scene, cams, 24), ours, atol=1e-4)

    row = generate_row(
        "native",
        "a red cone",
        0.0,
        2,
        lambda s: None,
        ["trainer.steps=4", "gaussians.num_points=200", "trainer.resolution=16", "export=[]"],
    )
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
    means2d = torch.rand(n, 2, generator=g) * torch.tensor([width * 1.6, height * 1.6]) - 0.3 * torch.tensor(
        [width, height]
    )
    radii = torch.ceil(torch.rand(n, generator=g) * 12) * (torch.rand(n, generator=g) > 0.2)
    depths = torch.randint(0, 5, (n,), generator=g).float()  # many ties
    tiles_x, tiles_y = -(-width // NATIVE_TILE), -(-height // NATIVE_TILE)
    tile, gauss = _tile_pairs(means2d, radii, depths, tiles_x, tiles_y, NATIVE_TILE)
    offsets, ids = native.kernels().bin_gaussians(means2d, radii, depths, tiles_x, tiles_y, NATIVE_TILE)
    assert torch.equal(ids, gauss)
    assert torch.equal(
        offsets,
        torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(tile, minlength=tiles_x * tiles_y).cumsum(0)]),
    )


def gaussians(n, seed, scale, spread, dtype=torch.float64):
    """Random Gaussians with some degenerate ones: tiny and huge scales, near-zero quaternions, many behind the
    camera or outside the frustum (with spread 3), a few at the camera centre's depth."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * spread
    scales = (
        scale * (0.3 + torch.rand(n, 3, generator=g)) * torch.where(torch.rand(n, 3, generator=g) < 0.15, 1e-3, 1.0)
    )
    scales = torch.where(torch.rand(n, 1, generator=g) < 0.1, 5.0 * scales, scales)
    quats = torch.randn(n, 4, generator=g) * torch.where(torch.rand(n, 1, generator=g) < 0.1, 1e-4, 1.0)
    return [t.to(dtype) for t in (means, scales, quats)]


def camera(seed, height, width, dtype=torch.float64):
    cams = orbit_cameras([float(seed % 360)], [float(seed % 70) - 35.0], 2.5, 30.0 + seed % 50)
    return cams, gr.opencv_viewmats(cams)[0].to(dtype), gr.intrinsics(cams, height, width)[0].to(dtype)


def projected(native_path, means, scales, quats, viewmat, K, height, width):
    """The projection (the PyTorch path's or the native one) and the gradients of a fixed random loss on means2d
    and conics to means, scales and quats."""
    params = [t.clone().requires_grad_() for t in (means, scales, quats)]
    if native_path:
        out = gr._NativeProject.apply(*params, viewmat, K, height, width)
    else:
        out = gr.project(params[0], gr.covariances(params[1], params[2]), viewmat, K, height, width)
    g = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=g).to(o.dtype)).sum() for o in out[:2])
    grads = torch.autograd.grad(loss, params) if len(means) else [torch.zeros_like(p) for p in params]
    return [o.detach().contiguous() for o in out], grads


def close(a, b, rel):
    """Equal within `rel` of the larger magnitude of the two, entry by entry (plus a floor at rel * max |a|)."""
    floor = rel * max(float(a.abs().max()) if a.numel() else 0.0, 1e-30)
    return bool(((a - b).abs() <= rel * torch.maximum(a.abs(), b.abs()) + floor).all())


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 200),
    st.integers(0, 10_000),
    st.sampled_from([1e-4, 0.05, 0.5]),
    st.sampled_from([0.3, 3.0]),
    st.integers(1, 48),
    st.integers(1, 48),
)
def test_native_projection_equals_pytorch_in_float64(n, seed, scale, spread, height, width):
    """Same 2D means, conics, depths, radii (culling included) and gradients, to rounding."""
    means, scales, quats = gaussians(n, seed, scale, spread)
    _, viewmat, K = camera(seed, height, width)
    (out_t, grad_t), (out_n, grad_n) = [projected(p, means, scales, quats, viewmat, K, height, width) for p in (0, 1)]
    assert torch.equal(out_t[3], out_n[3])  # radii: the same Gaussians culled, the same footprints
    for a, b in zip(out_t[:3], out_n[:3]):
        assert close(a, b, 1e-9)
    for a, b in zip(grad_t, grad_n):
        assert close(a, b, 1e-8)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 200), st.integers(0, 10_000), st.sampled_from([1e-4, 0.05, 0.5]), st.sampled_from([0.3, 3.0]))
@example(1, 236, 1e-4, 3.0)  # a Gaussian 0.04 in front of the camera: its float32 depth cancels (CI, 2026-12-07)
def test_native_projection_matches_pytorch_in_float32(n, seed, scale, spread):
    """float32, as rendering runs. The native kernel computes in float64 inside: its outputs and gradients are
    those of the PyTorch path in float64 to float32 rounding. The PyTorch path in float32 is further off (its
    conics of huge or thin Gaussians by up to a few %, from cancellation in the determinant), yet puts the same
    Gaussians in the same tiles: radii differ only where the footprint lies within its rounding of an integer."""
    means, scales, quats = gaussians(n, seed, scale, spread, torch.float32)
    _, viewmat, K = camera(seed, 40, 56, torch.float32)
    out_t, _ = projected(False, means, scales, quats, viewmat, K, 40, 56)
    out_n, grad_n = projected(True, means, scales, quats, viewmat, K, 40, 56)
    out_x, grad_x = projected(False, *(t.double() for t in (means, scales, quats, viewmat, K)), 40, 56)
    for a, b in zip(out_x[:3], out_n[:3]):
        assert close(a, b.double(), 1e-6)
    for a, b in zip(grad_x, grad_n):
        assert close(a, b.double(), 1e-5)
    assert close(out_t[0], out_n[0], 1e-5)
    # depth = r3 . p + t3: in float32 the terms round before they cancel, so near the camera plane the error is a
    # few float32 roundings of the terms' size, not of the depth's
    terms = means.abs().sum(-1) * viewmat[:3, :3].abs().max() + viewmat[:3, 3].abs().max()
    assert bool(((out_t[2] - out_n[2]).abs() <= 1e-6 * (terms + out_n[2].abs())).all())
    conic = out_x[1]
    det = conic[:, 0] * conic[:, 2] - conic[:, 1] ** 2
    mid = 0.5 * (conic[:, 0] + conic[:, 2]) / det
    footprint = 3.33 * torch.sqrt(mid + torch.sqrt((mid * mid - 1 / det).clamp_min(0.01)))
    off_integer = (footprint - footprint.round()).abs()
    assert torch.equal(out_x[3][off_integer > 1e-6], out_n[3][off_integer > 1e-6])
    on_edge = off_integer < 3e-4 * footprint
    assert torch.equal(out_t[3][~on_edge], out_n[3][~on_edge])
    tiles = -(-56 // gr.NATIVE_TILE), -(-40 // gr.NATIVE_TILE)
    bins = [
        native.kernels().bin_gaussians(o[0], torch.where(on_edge, 0.0, o[3]), o[2], *tiles, gr.NATIVE_TILE)
        for o in (out_t, out_n)
    ]
    assert all(torch.equal(a, b) for a, b in zip(*bins))


@pytest.mark.parametrize("geometry", [False, True])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_native_features_equal_pytorch(geometry, degree):
    """Colours (all SH degrees), distances and normals, and their gradients to means, quats and sh."""
    means, scales, quats = gaussians(300, degree, 0.05, 1.0)
    sh = torch.randn(300, (degree + 1) ** 2, 3, generator=torch.Generator().manual_seed(degree), dtype=torch.float64)
    position = orbit_cameras([40.0], [20.0], 2.5).positions[0]
    means[0] = position  # at the camera centre: the direction's clamp
    results = []
    for native_path in (False, True):
        params = [t.clone().requires_grad_() for t in (means, scales, quats, sh)]
        if native_path:
            out = gr._NativeFeatures.apply(*params, position, geometry)
        else:
            out = gr._camera_features(*params, position.double())[:, : 7 if geometry else 3]
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
        grads = torch.autograd.grad((out * weights).sum(), params, allow_unused=True)
        results.append((out.detach(), [torch.zeros_like(p) if d is None else d for p, d in zip(params, grads)]))
    (out_t, grad_t), (out_n, grad_n) = results
    assert (out_t[:, :3] == 0).any()  # some colours clamped at 0
    assert close(out_t, out_n, 1e-12)
    for a, b in zip(grad_t, grad_n):
        assert close(a, b, 1e-10)


def test_native_projection_and_features_pass_gradcheck():
    """The hand-written backward passes against finite differences, in float64."""
    means, scales, quats = gaussians(8, 5, 0.1, 0.3)
    _, viewmat, K = camera(5, 20, 24)
    params = [t.requires_grad_() for t in (means, scales, quats)]
    assert torch.autograd.gradcheck(lambda *p: gr._NativeProject.apply(*p, viewmat, K, 20, 24)[:2], params)
    sh = torch.randn(8, 16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64).requires_grad_()
    position = orbit_cameras([0.0], [0.0], 2.5).positions[0]
    for geometry in (False, True):
        assert torch.autograd.gradcheck(
            lambda m, q, c: gr._NativeFeatures.apply(m, scales, q, c, position, geometry), [means, quats, sh]
        )


def test_native_rasterizer_keeps_densification_statistics():
    """meta receives means2d with its gradient and radii per camera, as on the PyTorch path."""
    g = torch.Generator().manual_seed(2)
    scene = [
        torch.randn(300, 3, generator=g) * 0.3,
        0.03 + 0.02 * torch.rand(300, 3, generator=g),
        torch.randn(300, 4, generator=g),
        torch.rand(300, generator=g),
        torch.randn(300, 4, 3, generator=g),
    ]
    cams = orbit_cameras([0.0, 120.0], [10.0, 30.0], 2.5)
    metas = {}
    for mode in ("torch", "native"):
        native.set_mode(mode)
        meta = []
        params = [t.clone().requires_grad_() for t in scene]
        rasterize(*params, cams, 24, 32, meta=meta)["rgb"].sum().backward()
        metas[mode] = [(m.grad, r) for m, r in meta]
    assert len(metas["native"]) == 2
    for (grad_t, radii_t), (grad_n, radii_n) in zip(metas["torch"], metas["native"]):
        assert torch.equal(radii_t, radii_n) and (radii_n > 0).sum() > 100
        assert torch.allclose(grad_t, grad_n, atol=1e-3 * float(grad_t.abs().max()))


def test_a_build_killed_half_way_does_not_make_later_loads_wait_forever():
    """torch's build lock (a `lock` file) outlives a killed build; a later load must not wait on it."""
    import subprocess
    import sys

    from threedistill import native

    if native.kernels() is None:
        pytest.skip("no native kernels on this machine")
    build_dir, _ = native.build_directory()
    (build_dir / "lock").write_text("")  # what a build killed by SIGKILL leaves
    code = "from threedistill import native; native.set_mode('native'); assert native.kernels() is not None"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (build_dir / "lock").exists()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 400), st.integers(0, 10_000), st.sampled_from([1e-3, 0.05, 0.5]), st.integers(8, 60))
def test_opacity_aware_footprint_changes_no_pixel_and_no_gradient(n, seed, scale, size):
    """Binning by `footprint` (the box where alpha can reach 1/255) instead of the 3.33-sigma square drops
    (tile, Gaussian) pairs, and the native compositor's image and gradients stay the same bit for bit; every
    dropped pair has alpha below 1/255 at every pixel of its tile (so the PyTorch path loses nothing either)."""
    means, scales, quats = gaussians(n, seed, scale, 1.0, torch.float32)
    _, viewmat, K = camera(seed, size, size + 7, torch.float32)
    g = torch.Generator().manual_seed(seed)
    opac = torch.rand(n, generator=g) ** 3  # many faint ones, some below 1/255
    feats = torch.rand(n, 3, generator=g)
    height, width = size, size + 7
    with torch.no_grad():
        m2, con, d, r = gr.project(means, gr.covariances(scales, quats), viewmat, K, height, width)
    box = gr.footprint(r, con, opac)
    assert bool((box <= r[:, None]).all()) and bool((box[r == 0] == 0).all())
    k, tile = native.kernels(), gr.NATIVE_TILE
    tiles = -(-width // tile), -(-height // tile)
    outputs = []
    for radii in (r.contiguous(), box.float()):
        offs, ids = k.bin_gaussians(m2.contiguous(), radii, d.contiguous(), *tiles, tile)
        args = [m2.contiguous(), con.contiguous(), opac, feats, offs, ids]
        img, alpha, final_t, last = k.raster_forward(
            *args, height, width, tile, gr.ALPHA_MIN, gr.ALPHA_MAX, gr.T_MIN, 1
        )
        grad_img = torch.rand(img.shape, generator=torch.Generator().manual_seed(1))
        grads = k.raster_backward(*args, final_t, last, grad_img, alpha * 0.5, tile, gr.ALPHA_MIN, gr.ALPHA_MAX, 1)
        outputs.append((len(ids), img, alpha, *grads))
    assert outputs[1][0] <= outputs[0][0]
    assert all(torch.equal(a, b) for a, b in zip(outputs[0][1:], outputs[1][1:]))
    # The PyTorch path's pairs: the dropped ones light no pixel.
    t_sq, g_sq = gr._tile_pairs(m2, r, d, *tiles, tile)
    t_box, g_box = gr._tile_pairs(m2, box, d, *tiles, tile)
    kept = set(zip(t_box.tolist(), g_box.tolist()))
    dropped = [(t, i) for t, i in zip(t_sq.tolist(), g_sq.tolist()) if (t, i) not in kept]
    assert kept <= set(zip(t_sq.tolist(), g_sq.tolist()))
    for t, i in dropped:
        ys, xs = torch.meshgrid(
            torch.arange(tile) + (t // tiles[0]) * tile + 0.5,
            torch.arange(tile) + (t % tiles[0]) * tile + 0.5,
            indexing="ij",
        )
        dx, dy = xs - m2[i, 0], ys - m2[i, 1]
        power = -0.5 * (con[i, 0] * dx * dx + con[i, 2] * dy * dy) - con[i, 1] * dx * dy
        assert bool((opac[i] * torch.exp(power.clamp_max(0)) < gr.ALPHA_MIN).all())


def test_the_build_is_keyed_by_the_cpu_it_targets(monkeypatch):
    """-march=native only with the CPU's features in the build key: another CPU gets its own build folder."""
    folder = native.build_directory()[0]
    flags = native.compiler_flags()
    assert "-ffp-contract=off" in flags
    if "-march=native" in flags:
        monkeypatch.setattr(native, "_cpu_features", lambda: b"flags : fpu sse2")
        assert native.build_directory()[0] != folder
    monkeypatch.setattr(native, "_cpu_features", lambda: b"")  # not x86-64 Linux: the portable build
    assert "-march=native" not in native.compiler_flags()
    assert (native.build_directory()[0] != folder) == ("-march=native" in flags)


def test_absgrad_is_the_sum_of_each_pixels_gradient_magnitude():
    """means2d.absgrad from the native backward = sum over pixels of |d(pixel's loss)/d means2d|, computed pixel by
    pixel through the PyTorch path; it is at least |means2d.grad| and larger where pixels pull both ways."""
    means, scales, quats = gaussians(12, 3, 0.3, 0.4, torch.float32)
    opac = torch.rand(12, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    feats = torch.rand(12, 3, generator=torch.Generator().manual_seed(2))
    _, viewmat, K = camera(3, 9, 11, torch.float32)
    weights = torch.randn(9, 11, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        m2, con, d, r = gr.project(means, gr.covariances(scales, quats), viewmat, K, 9, 11)
    native.set_mode("native")
    m2n = m2.clone().requires_grad_()
    image, _ = gr._composite_native(m2n, con, d, r, opac, feats, 9, 11)
    (image.permute(1, 2, 0) * weights).sum().backward()
    per_pixel = torch.zeros(12, 2)
    for y in range(9):
        for x in range(11):
            m2t = m2.double().clone().requires_grad_()
            img, _ = gr._composite_torch(
                m2t, con.double(), d, r, opac.double(), feats.double(), 9, 11, None, gr.ALPHA_MIN
            )
            (img[:, y, x] * weights[y, x].double()).sum().backward()
            per_pixel += m2t.grad.abs().float()
    assert torch.allclose(m2n.absgrad, per_pixel, rtol=1e-3, atol=1e-6)
    assert bool((m2n.absgrad >= m2n.grad.abs() - 1e-6).all()) and float((m2n.absgrad - m2n.grad.abs()).max()) > 1e-3
