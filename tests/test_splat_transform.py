"""Our splat files read by an independent reader, PlayCanvas's splat-transform (pinned in tools/package-lock.json;
.ci/run installs it): each file converted to CSV by its CLI and compared with what we wrote. Same count, positions
within 1e-3 (within the format's quantisation for the compressed ply), and the frames: splat-transform's own
frame is the .ply's, which it takes as RDF (x right, y down, z forward) and converts .spz (RUB by its spec) into by
negating y and z; our .ply, .splat and .compressed.ply hold our world frame (+Y up) as it is."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from threedistill.export.compressed_ply import CHUNK, _morton_order, read_compressed_ply, write_compressed_ply
from threedistill.export.splats import SH_C0, SplatParams, write_ply, write_splat, write_spz

TOOLS = Path(__file__).resolve().parents[1] / "tools"
CLI = TOOLS / "node_modules" / "@playcanvas" / "splat-transform" / "bin" / "cli.mjs"


@pytest.fixture(scope="module")
def splat_transform():
    reason = "node not found" if shutil.which("node") is None else None
    reason = reason or (None if CLI.is_file() else "splat-transform not installed (npm ci --prefix tools)")
    if reason:
        if os.environ.get("T3D_REQUIRE_TOOLS"):
            pytest.fail(f"T3D_REQUIRE_TOOLS is set but {reason}")
        pytest.skip(reason)

    def to_table(path: Path) -> dict[str, np.ndarray]:
        out = path.with_name(path.name + ".csv")
        subprocess.run(["node", str(CLI), "-q", "-w", str(path), str(out)], check=True, timeout=120, cwd=TOOLS)
        table = np.genfromtxt(out, delimiter=",", names=True, dtype=np.float64)
        return {name: np.atleast_1d(table[name]) for name in table.dtype.names}

    return to_table


def scene(n=700, degree=1, seed=0) -> SplatParams:
    """A lopsided object (a tall column above a flat base: the up axis is plain), 700 Gaussians (3 chunks of the
    compressed ply), some colours below 0 and above 1."""
    rng = np.random.default_rng(seed)
    base = rng.uniform([-0.6, -0.5, -0.6], [0.6, -0.4, 0.6], (n // 2, 3))
    column = rng.uniform([-0.1, -0.4, -0.1], [0.1, 0.8, 0.1], (n - n // 2, 3))
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    sh = f(n, (degree + 1) ** 2, 3) * 0.3
    sh[:, 0] = rng.uniform(-0.6, 1.6, (n, 3)) - 0.5  # rgb 0.5 + C0 * dc from about -0.3 to 0.8 ...
    sh[:5, 0] = 2.5  # ... and a few above 1
    return SplatParams(np.concatenate([base, column]).astype(np.float32), f(n, 3) * 0.3 - 4, f(n, 4), f(n) * 2, sh)


def positions(table) -> np.ndarray:
    return np.stack([table["x"], table["y"], table["z"]], 1)


def test_ply_is_read_as_written(tmp_path, splat_transform):
    params = scene()
    table = splat_transform(write_ply(params, tmp_path / "a.ply"))
    assert len(table["x"]) == len(params.means)
    assert np.abs(positions(table) - params.means).max() < 1e-6  # the same frame: as written
    assert positions(table)[:, 1].mean() > params.means[:, 1].min() + 0.3  # +Y up: most of the mass is above the base
    assert np.abs(table["f_dc_0"] - params.sh[:, 0, 0]).max() < 1e-6 and "f_rest_8" in table


def test_splat_is_read_in_its_own_order(tmp_path, splat_transform):
    params = scene(degree=0)
    table = splat_transform(write_splat(params, tmp_path / "a.splat"))
    alpha = 1 / (1 + np.exp(-params.opacity_logits))
    order = np.argsort(-(np.exp(params.log_scales.sum(1)) * alpha), kind="stable")  # the writer's order
    assert len(table["x"]) == len(params.means)
    assert np.abs(positions(table) - params.means[order]).max() < 1e-6  # float32 positions
    # colours: the 8-bit colour is what our renderer shows, max(0, 0.5 + C0 dc), capped at 1 by the format
    rgb = np.clip(0.5 + SH_C0 * params.sh[order, 0], 0, 1)
    assert np.abs(0.5 + SH_C0 * table["f_dc_0"] - rgb[:, 0]).max() <= 0.5 / 255 + 1e-6


def test_spz_is_rub_and_read_into_the_ply_frame(tmp_path, splat_transform):
    params = scene()
    table = splat_transform(write_spz(params, tmp_path / "a.spz"))
    assert len(table["x"]) == len(params.means)
    # .spz is RUB (+Y up) on disk by its spec; splat-transform reads it into its RDF .ply frame: y and z negated
    flipped = params.means * np.array([1, -1, -1], np.float32)
    assert np.abs(positions(table) - flipped).max() <= 0.5 / 4096 + 1e-6  # 12 fractional bits


def test_compressed_ply_is_read_within_its_quantisation(tmp_path, splat_transform):
    params = scene(degree=1)
    path = write_compressed_ply(params, tmp_path / "a.compressed.ply")
    assert path.stat().st_size < 0.3 * write_ply(params, tmp_path / "a.ply").stat().st_size
    table = splat_transform(path)
    n = len(params.means)
    assert len(table["x"]) == n
    order = _morton_order(params.means.astype(np.float64))
    means = params.means[order].astype(np.float64)
    # a position is an 11-10-11 bit fraction of its chunk's bounding box: half a step off at most
    chunks = np.arange(n) // CHUNK
    lo = np.stack([means[chunks == c].min(0) for c in range(chunks.max() + 1)])[chunks]
    hi = np.stack([means[chunks == c].max(0) for c in range(chunks.max() + 1)])[chunks]
    step = (hi - lo) / np.array([2047, 1023, 2047])
    err = np.abs(positions(table) - means)
    assert np.all(err <= step / 2 + 1e-6) and err.max() < 1e-3
    quats = params.quats[order] / np.linalg.norm(params.quats[order], axis=1, keepdims=True)
    theirs = np.stack([table[f"rot_{i}"] for i in range(4)], 1)
    assert np.abs((quats * theirs).sum(1)).min() > 0.999  # the same rotation (q and -q are one)
    assert np.abs(table["scale_0"] - params.log_scales[order, 0]).max() < 0.01
    rgb = 0.5 + SH_C0 * params.sh[order, 0]  # not clamped: the chunk's colour range holds values beyond 0..1
    assert np.abs(0.5 + SH_C0 * table["f_dc_0"] - rgb[:, 0]).max() < 0.02
    alpha = 1 / (1 + np.exp(-params.opacity_logits[order]))
    assert np.abs(1 / (1 + np.exp(-table["opacity"])) - alpha).max() <= 0.5 / 255 + 1e-6
    assert np.abs(table["f_rest_0"] - params.sh[order, 1, 0]).max() <= 8 / 256 + 1e-6
    # our own reader agrees with theirs
    ours = read_compressed_ply(path)
    assert np.abs(ours.means - positions(table)).max() < 1e-5
