"""PlayCanvas's compressed 3DGS ply (`.compressed.ply`; SuperSplat, PlayCanvas and Spark read it): the Gaussians in
Morton order, in chunks of 256, each chunk with float min / max bounds of position, log-scale and colour; per
Gaussian four uint32: position and log-scale as 11-10-11 bit fractions of their chunk's range, the rotation as
2-10-10-10 (index of the largest component, then the other three), colour and opacity as 8-8-8-8; SH degree > 0
as one byte per f_rest coefficient. Written from the layout alone (about 4x smaller than the .ply: 16 bytes a
Gaussian plus 72 per chunk, and the SH bytes). Coordinates are written as they are, like the .ply."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import ThreeDistillError
from ..renderers.gaussian_raster import SH_C0
from ..utils.files import atomic_write
from .splats import SplatParams, _existing

CHUNK = 256
# The chunk element's properties: min_x min_y min_z max_x max_y max_z, the same for scale_* and r g b.
CHUNK_ORDER = [
    f"{end}_{axis}"
    for group in (("x", "y", "z"), ("scale_x", "scale_y", "scale_z"), ("r", "g", "b"))
    for end in ("min", "max")
    for axis in group
]
VERTEX_PROPERTIES = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]
SH_SCALE = 8.0  # an f_rest coefficient v is stored as the byte floor((v / 8 + 0.5) * 256), clamped to 0..255
_SQRT2 = math.sqrt(2.0)


def _morton_order(means: np.ndarray) -> np.ndarray:
    """Indices that sort points along a 3D Morton (Z-order) curve of 10 bits per axis over their bounding box, so
    each chunk of 256 holds nearby points and its bounds stay tight."""
    lo, hi = means.min(0), means.max(0)
    cells = np.clip(((means - lo) / np.where(hi > lo, hi - lo, 1.0) * 1023).astype(np.int64), 0, 1023)
    code = np.zeros(len(means), np.int64)
    for bit in range(10):
        for axis in range(3):
            code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + (2 - axis))
    return np.argsort(code, kind="stable")


def _unorm(t: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.clip(np.floor(t * top + 0.5), 0, top).astype(np.uint32)


def _chunk_fraction(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """values (N,3) as fractions 0..1 of their chunk's [lo, hi] (per Gaussian, already gathered); 0 where the
    chunk's range is empty (every value is then `lo` exactly)."""
    span = hi - lo
    return np.where(span > 0, (values - lo) / np.where(span > 0, span, 1.0), 0.0)


def _pack_111011(t: np.ndarray) -> np.ndarray:
    return (_unorm(t[:, 0], 11) << 21) | (_unorm(t[:, 1], 10) << 11) | _unorm(t[:, 2], 11)


def _pack_rotation(quats: np.ndarray) -> np.ndarray:
    """Quaternions (N,4) in the ply's rot_0..rot_3 order: the index of the largest |component| in the top 2 bits
    (the quaternion negated so it is positive), the other three in order as 10-bit fractions of +-1/sqrt(2)."""
    q = quats.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)
    largest = np.abs(q).argmax(1)
    rows = np.arange(len(q))
    q *= np.where(q[rows, largest] < 0, -1.0, 1.0)[:, None]
    packed = largest.astype(np.uint32) << 30
    others = np.array([[j for j in range(4) if j != i] for i in range(4)])[largest]  # (N,3)
    for slot, shift in enumerate((20, 10, 0)):
        packed |= _unorm(q[rows, others[:, slot]] / _SQRT2 + 0.5, 10) << shift
    return packed


def _chunk_bounds(values: np.ndarray, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-chunk min and max (n_chunks, 3) of values (N,3) in chunk order."""
    n = len(values)
    padded = np.concatenate([values, np.repeat(values[-1:], n_chunks * CHUNK - n, 0)]).reshape(n_chunks, CHUNK, 3)
    return padded.min(1), padded.max(1)


def write_compressed_ply(params: SplatParams, path: str | Path) -> Path:
    """PlayCanvas compressed ply (see the module's docstring); the Gaussians in Morton order."""
    params.checked(f"cannot write {path}")
    n = len(params.means)
    if n == 0:
        raise ThreeDistillError(f"cannot write {path}: no Gaussians")
    order = _morton_order(params.means.astype(np.float64))
    means = params.means[order].astype(np.float64)
    log_scales = params.log_scales[order].astype(np.float64)
    rgb = 0.5 + SH_C0 * params.sh[order, 0, :].astype(np.float64)
    alpha = 1.0 / (1.0 + np.exp(-params.opacity_logits[order].astype(np.float64)))
    n_chunks = -(-n // CHUNK)
    chunk_of = np.arange(n) // CHUNK
    bounds, packed = {}, {}
    for name, values in (("pos", means), ("scale", log_scales), ("rgb", rgb)):
        lo, hi = _chunk_bounds(values.astype(np.float32).astype(np.float64), n_chunks)  # the file's float32 bounds
        lo, hi = lo.astype(np.float32), hi.astype(np.float32)
        bounds[name] = (lo, hi)
        packed[name] = _chunk_fraction(values, lo[chunk_of].astype(np.float64), hi[chunk_of].astype(np.float64))
    colour = (
        (_unorm(packed["rgb"][:, 0], 8) << 24)
        | (_unorm(packed["rgb"][:, 1], 8) << 16)
        | (_unorm(packed["rgb"][:, 2], 8) << 8)
        | _unorm(alpha, 8)
    )
    chunk = np.empty(n_chunks, dtype=[(name, "<f4") for name in CHUNK_ORDER])
    for key, axes in (("pos", ("x", "y", "z")), ("scale", ("scale_x", "scale_y", "scale_z")), ("rgb", ("r", "g", "b"))):
        lo, hi = bounds[key]
        for i, axis in enumerate(axes):
            chunk[f"min_{axis}"], chunk[f"max_{axis}"] = lo[:, i], hi[:, i]
    vertex = np.empty(n, dtype=[(name, "<u4") for name in VERTEX_PROPERTIES])
    vertex["packed_position"] = _pack_111011(packed["pos"])
    vertex["packed_rotation"] = _pack_rotation(params.quats[order])
    vertex["packed_scale"] = _pack_111011(packed["scale"])
    vertex["packed_color"] = colour
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment written by threedistill (PlayCanvas compressed 3DGS ply)",
        f"element chunk {n_chunks}",
        *(f"property float {name}" for name in CHUNK_ORDER),
        f"element vertex {n}",
        *(f"property uint {name}" for name in VERTEX_PROPERTIES),
    ]
    body = [chunk.tobytes(), vertex.tobytes()]
    k = params.sh.shape[1] - 1
    if k:
        rest = params.sh[order, 1:, :].transpose(0, 2, 1).reshape(n, 3 * k)  # channel-major, as the .ply
        sh = np.clip(np.floor((rest.astype(np.float64) / SH_SCALE + 0.5) * 256), 0, 255).astype(np.uint8)
        header += [f"element sh {n}", *(f"property uchar f_rest_{i}" for i in range(3 * k))]
        body.append(sh.tobytes())
    header.append("end_header")
    return atomic_write(path, ("\n".join(header) + "\n").encode("ascii") + b"".join(body))


def _fractions(packed: np.ndarray, layout: tuple[tuple[int, int], ...]) -> np.ndarray:
    return np.stack([((packed >> shift) & ((1 << bits) - 1)) / ((1 << bits) - 1) for shift, bits in layout], 1)


def read_compressed_ply(path: str | Path) -> SplatParams:
    """Read a compressed ply back (lossy; in the file's Morton order); opacity bytes 0 and 255 read as 1/510 and
    1 - 1/510 so every logit is finite."""
    from plyfile import PlyData

    path = _existing(path)
    try:
        ply = PlyData.read(str(path))
        chunk, vertex = ply["chunk"].data, ply["vertex"].data
    except Exception as err:  # plyfile raises many types for malformed files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ThreeDistillError(f"{path} is not a readable compressed PLY file: {reason}") from None
    missing = [
        p for p in CHUNK_ORDER[:12] + VERTEX_PROPERTIES if p not in (chunk.dtype.names or ()) + vertex.dtype.names
    ]
    if missing or -(-len(vertex) // CHUNK) != len(chunk):
        raise ThreeDistillError(
            f"{path} is not a compressed 3DGS ply: "
            + (f"missing {', '.join(missing)}" if missing else f"{len(chunk)} chunks for {len(vertex)} Gaussians")
        )
    n = len(vertex)
    ci = np.arange(n) // CHUNK

    def lerp(prefix: str, axes, t):
        lo = np.stack([chunk[f"min_{prefix}{a}"] for a in axes], 1)[ci].astype(np.float64)
        hi = np.stack([chunk[f"max_{prefix}{a}"] for a in axes], 1)[ci].astype(np.float64)
        return lo * (1 - t) + hi * t

    p111011 = ((21, 11), (11, 10), (0, 11))
    means = lerp("", "xyz", _fractions(vertex["packed_position"].astype(np.int64), p111011))
    log_scales = lerp("scale_", "xyz", _fractions(vertex["packed_scale"].astype(np.int64), p111011))
    colour = _fractions(vertex["packed_color"].astype(np.int64), ((24, 8), (16, 8), (8, 8), (0, 8)))
    rgb = lerp("", "rgb", colour[:, :3]) if "min_r" in chunk.dtype.names else colour[:, :3]
    alpha = colour[:, 3].clip(1 / 510, 1 - 1 / 510)
    rot = vertex["packed_rotation"].astype(np.int64)
    abc = (_fractions(rot, ((20, 10), (10, 10), (0, 10))) - 0.5) * _SQRT2
    largest = rot >> 30
    quats = np.zeros((n, 4))
    others = np.array([[j for j in range(4) if j != i] for i in range(4)])[largest]
    rows = np.arange(n)
    for slot in range(3):
        quats[rows, others[:, slot]] = abc[:, slot]
    quats[rows, largest] = np.sqrt(np.clip(1 - (abc**2).sum(1), 0, None))
    names = ply["sh"].data.dtype.names if "sh" in [e.name for e in ply.elements] else ()
    k = len(names) // 3
    sh = np.empty((n, k + 1, 3), np.float32)
    sh[:, 0] = (rgb - 0.5) / SH_C0
    if k:
        raw = np.stack([ply["sh"].data[f"f_rest_{i}"] for i in range(3 * k)], 1).astype(np.float64)
        t = np.where(raw == 0, 0.0, np.where(raw == 255, 1.0, (raw + 0.5) / 256))
        sh[:, 1:] = ((t - 0.5) * SH_SCALE).reshape(n, 3, k).transpose(0, 2, 1)
    return SplatParams(
        means.astype(np.float32),
        log_scales.astype(np.float32),
        quats.astype(np.float32),
        np.log(alpha / (1 - alpha)).astype(np.float32),
        sh,
    ).checked(str(path))
