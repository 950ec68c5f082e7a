"""3D Gaussians as the files splat tools read: the INRIA 3DGS `point_cloud.ply` (pre-activation values, exact
property names; SuperSplat, gsplat and nerfstudio read it), antimatter15's `.splat` and Niantic's compressed
`.spz` for web viewers. Reading our own .ply back gives the same parameters bit for bit. Coordinates are the
project's world frame (+Y up, front +Z), written as they are."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ThreeDistillError
from ..renderers.gaussian_raster import SH_C0
from ..representations.gaussians import PARAM_NAMES
from ..utils.files import atomic_path, atomic_write

LOG_SCALE_LIMIT = 30.0  # |log scale| above this is not a Gaussian's size (exp(30) is 1e13 scene units)
PLY_LABELS = {  # SplatParams field -> its 3DGS .ply properties, as messages name them
    "means": "position (x, y, z)",
    "log_scales": "scale (scale_0-2)",
    "quats": "rotation (rot_0-3)",
    "opacity_logits": "opacity",
    "sh": "colour (f_dc, f_rest)",
}
SPLAT_RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])  # 32 bytes


@dataclass
class SplatParams:
    """Pre-activation Gaussian parameters as numpy float32: means (N,3), log_scales (N,3), quats (N,4, w first),
    opacity_logits (N,), sh (N,(d+1)^2,3) with the DC term first."""

    means: np.ndarray
    log_scales: np.ndarray
    quats: np.ndarray
    opacity_logits: np.ndarray
    sh: np.ndarray

    @classmethod
    def from_gaussians(cls, model) -> "SplatParams":
        get = lambda t: t.detach().cpu().float().numpy()  # noqa: E731
        return cls(get(model.means), get(model.log_scales), get(model.quats), get(model.opacity_logits), get(model.sh))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The dict `Gaussians.load_tensors` takes."""
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in PARAM_NAMES}

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1

    def checked(self, where: str) -> "SplatParams":
        """Self, or a one-line ThreeDistillError (prefixed by `where`) when a value is NaN or inf, a log-scale is
        beyond +-LOG_SCALE_LIMIT (its exp overflows: a linear scale written where a log one belongs?) or a rotation
        quaternion is zero: what every reader and writer refuses rather than passing it on."""
        n = len(self.means)
        for name, label in PLY_LABELS.items():
            values = getattr(self, name).reshape(n, -1) if n else np.zeros((0, 1))
            rows = ~np.isfinite(values).all(axis=1)
            if rows.any():
                raise ThreeDistillError(
                    f"{where}: {label} is NaN or inf for {int(rows.sum())} of {n} Gaussians "
                    f"(first: Gaussian {int(rows.argmax())})"
                )
        rows = (np.abs(self.log_scales) > LOG_SCALE_LIMIT).any(axis=1)
        if rows.any():
            i = int(rows.argmax())
            raise ThreeDistillError(
                f"{where}: scale (a log scale) of {int(rows.sum())} of {n} Gaussians is beyond +-{LOG_SCALE_LIMIT:g} "
                f"(first: Gaussian {i}, {self.log_scales[i].max():.3g}); is a linear scale stored?"
            )
        rows = np.linalg.norm(self.quats.astype(np.float64), axis=1) < 1e-12
        if rows.any():
            raise ThreeDistillError(
                f"{where}: rotation quaternion (rot_0-3) is zero for {int(rows.sum())} of {n} Gaussians "
                f"(first: Gaussian {int(rows.argmax())})"
            )
        return self


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ThreeDistillError(f"no such file: {path}")
    return path


def _ply_properties(n_rest: int) -> list[str]:
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def write_ply(params: SplatParams, path: str | Path) -> Path:
    """Binary little-endian 3DGS point_cloud.ply; f_rest is channel-major (index = c * K + k)."""
    from plyfile import PlyData, PlyElement

    params.checked(f"cannot write {path}")
    n = len(params.sh)
    rest = params.sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # (N, 3*K), channel-major
    columns = [
        params.means,
        np.zeros((n, 3), np.float32),
        params.sh[:, 0, :],
        rest,
        params.opacity_logits[:, None],
        params.log_scales,
        params.quats,
    ]
    names = _ply_properties(rest.shape[1])
    data = np.concatenate(columns, axis=1).astype("<f4")
    vertex = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        vertex[name] = data[:, i]
    path = Path(path)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(str(tmp))
    return path


def _check_binary_size(ply, path: Path) -> None:
    """A binary file of fixed-size records is exactly its header plus its elements: bytes beyond them mean the
    header's counts are wrong (a file cut by count, or appended to), which plyfile would silently ignore."""
    if ply.text or any(prop.__class__.__name__ == "PlyListProperty" for el in ply.elements for prop in el.properties):
        return
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if end < 0:
        return
    header = head.index(b"\n", end) + 1
    expected = header + sum(el.data.dtype.itemsize * el.count for el in ply.elements)
    size = path.stat().st_size
    if size != expected:
        raise ThreeDistillError(
            f"{path}: {size - expected} bytes after the {ply['vertex'].count} Gaussians its header declares; "
            "the header's count and the data disagree"
        )


def read_ply(path: str | Path) -> SplatParams:
    """Read a 3DGS point_cloud.ply of any SH degree; one-line errors for anything else."""
    from plyfile import PlyData

    path = _existing(path)
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"].data
    except Exception as err:  # plyfile raises many types for malformed files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ThreeDistillError(f"{path} is not a readable PLY file: {reason}") from None
    _check_binary_size(ply, path)
    names = set(vertex.dtype.names or ())
    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    degree = math.sqrt(n_rest / 3 + 1) - 1
    if n_rest % 3 or abs(degree - round(degree)) > 1e-9:
        raise ThreeDistillError(
            f"{path}: {n_rest} f_rest properties give no SH degree (expected 0, 9, 24 or 45 for degrees 0-3)"
        )
    missing = [p for p in _ply_properties(n_rest) if p not in names and not p.startswith("n")]
    if missing:
        raise ThreeDistillError(f"{path} is not a 3DGS point cloud: missing properties {', '.join(missing)}")
    listed = [p for p in _ply_properties(n_rest) if p in names and vertex.dtype[p].kind not in "fiu"]
    if listed:  # list properties (or anything else that is not one number per Gaussian)
        raise ThreeDistillError(f"{path} is not a 3DGS point cloud: property {listed[0]} is not a scalar number")
    col = lambda *keys: np.stack([np.asarray(vertex[k], dtype=np.float32) for k in keys], axis=1)  # noqa: E731
    n, k = len(vertex), n_rest // 3
    sh = np.empty((n, k + 1, 3), np.float32)
    sh[:, 0] = col("f_dc_0", "f_dc_1", "f_dc_2")
    if k:
        sh[:, 1:] = col(*[f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k).transpose(0, 2, 1)
    return SplatParams(
        col("x", "y", "z"),
        col("scale_0", "scale_1", "scale_2"),
        col("rot_0", "rot_1", "rot_2", "rot_3"),
        col("opacity")[:, 0],
        sh,
    ).checked(str(path))


def write_splat(params: SplatParams, path: str | Path) -> Path:
    """antimatter15 .splat: 32 bytes per Gaussian (position, exp'd scale, RGBA u8, quaternion u8), no SH (the
    colour is what the renderer shows, `splat_colours`), sorted by descending size x opacity so viewers can stream
    the important ones first."""
    params.checked(f"cannot write {path}")
    scales = np.exp(params.log_scales)
    alpha = 1.0 / (1.0 + np.exp(-params.opacity_logits))
    rgb = splat_colours(params)
    quats = params.quats / np.linalg.norm(params.quats, axis=1, keepdims=True).clip(1e-12)
    order = np.argsort(-(np.exp(params.log_scales.sum(1)) * alpha), kind="stable")
    record = np.empty(len(order), dtype=SPLAT_RECORD)
    record["position"] = params.means[order]
    record["scale"] = scales[order]
    record["rgba"] = np.round(np.concatenate([rgb, alpha[:, None]], 1)[order] * 255).astype(np.uint8)
    record["rot"] = np.clip(np.round(quats[order] * 128 + 128), 0, 255).astype(np.uint8)
    return atomic_write(path, record.tobytes())


def splat_colours(params: SplatParams) -> np.ndarray:
    """The one colour per Gaussian a .splat holds (N,3) in 0..1: the DC colour our renderer shows (`sh_to_rgb`:
    0.5 + C0 dc, clamped at 0, so a DC term below 0 loses nothing) clipped at 1, the format's only loss of colour
    range; SH bands beyond DC are dropped (averaging the colour over view directions instead gained 0.0001 of mean
    rendered error on a degree-3 model; docs/formats.md)."""
    return np.clip(0.5 + SH_C0 * params.sh[:, 0, :], 0.0, 1.0)


def read_splat(path: str | Path) -> SplatParams:
    """Read a .splat back (lossy: colours and rotations are 8-bit, SH degree 0)."""
    raw = _existing(path).read_bytes()
    if len(raw) % SPLAT_RECORD.itemsize:
        raise ThreeDistillError(f"{path}: size {len(raw)} is not a multiple of 32 bytes, so not a .splat file")
    rec = np.frombuffer(raw, dtype=SPLAT_RECORD)
    rgba = rec["rgba"].astype(np.float32) / 255
    alpha = rgba[:, 3].clip(1e-6, 1 - 1e-6)
    return SplatParams(
        rec["position"].astype(np.float32),
        np.log(rec["scale"].clip(1e-12)).astype(np.float32),
        (rec["rot"].astype(np.float32) - 128) / 128,
        np.log(alpha / (1 - alpha)).astype(np.float32),
        ((rgba[:, None, :3] - 0.5) / SH_C0).astype(np.float32),
    ).checked(str(path))


# ---------------------------------------------------------------- .spz (Niantic)
SPZ_MAGIC = 0x5053474E
SPZ_COLOR_SCALE = 0.15  # DC colour is stored as dc * 0.15 + 0.5 so slightly out-of-range colours survive
SPZ_FRACTIONAL_BITS = 12
_SQRT1_2 = 0.7071067811865476


def _quantize_sh(x: np.ndarray, bits: int) -> np.ndarray:
    bucket = 1 << (8 - bits)
    q = np.round(x * 128.0).astype(np.int32) + 128
    return np.clip((q + bucket // 2) // bucket * bucket, 0, 255).astype(np.uint8)


def _pack_smallest_three(quats_wxyz: np.ndarray) -> np.ndarray:
    """Quaternions (N,4, w first) -> (N,4) bytes: index of the largest |component| of (x,y,z,w) in the top 2 bits,
    then the other three as sign + 9-bit magnitude scaled by 1/sqrt(1/2)."""
    q = quats_wxyz[:, [1, 2, 3, 0]].astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)
    largest = np.abs(q).argmax(1)
    negate = q[np.arange(len(q)), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        other = largest != i
        negbit = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = np.floor(511.0 * np.abs(q[:, i]) / _SQRT1_2 + 0.5).astype(np.uint32)
        comp = np.where(other, (comp << 10) | (negbit << 9) | mag, comp)
    return comp.astype("<u4").view(np.uint8).reshape(-1, 4)


def _unpack_smallest_three(raw: np.ndarray) -> np.ndarray:
    comp = raw.reshape(-1, 4).copy().view("<u4")[:, 0].astype(np.uint64)
    largest = (comp >> 30).astype(np.int64)
    q = np.zeros((len(comp), 4))
    for i in range(3, -1, -1):
        other = largest != i
        mag = (comp & 511).astype(np.float64)
        sign = np.where((comp >> 9) & 1, -1.0, 1.0)
        q[:, i] = np.where(other, sign * _SQRT1_2 * mag / 511.0, 0.0)
        comp = np.where(other, comp >> 10, comp)
    rows = np.arange(len(q))
    q[rows, largest] = np.sqrt(np.clip(1.0 - (q**2).sum(1), 0.0, None))
    return q[:, [3, 0, 1, 2]].astype(np.float32)  # back to w first


def write_spz(params: SplatParams, path: str | Path) -> Path:
    """Niantic .spz version 3 (gzip; 24-bit fixed-point positions, 8-bit everything else, smallest-three
    rotations). Our world frame is already the format's RUB (+X right, +Y up, +Z back), so nothing is flipped."""
    return atomic_write(path, spz_bytes(params, f"cannot write {path}"))


def spz_bytes(params: SplatParams, where: str = "cannot write .spz") -> bytes:
    """The bytes of a .spz file (`write_spz`); `where` prefixes the error for values no file may hold."""
    import gzip

    params.checked(where)
    n, degree = len(params.means), params.sh_degree
    fixed = np.round(params.means.astype(np.float64) * (1 << SPZ_FRACTIONAL_BITS)).astype(np.int64)
    if np.abs(fixed).max(initial=0) >= 1 << 23:
        raise ThreeDistillError(
            f"positions beyond +-{(1 << 23) / (1 << SPZ_FRACTIONAL_BITS):.0f} do not fit .spz's 24-bit coordinates"
        )
    positions = (fixed.astype("<i4").view(np.uint8).reshape(n, 3, 4)[:, :, :3]).reshape(-1)
    alphas = np.clip(np.round(255.0 / (1.0 + np.exp(-params.opacity_logits.astype(np.float64)))), 0, 255).astype(
        np.uint8
    )
    colors = np.clip(np.round(params.sh[:, 0, :] * (SPZ_COLOR_SCALE * 255.0) + 127.5), 0, 255).astype(np.uint8)
    scales = np.clip(np.round((params.log_scales + 10.0) * 16.0), 0, 255).astype(np.uint8)
    rest = params.sh[:, 1:, :]  # (N, K, 3): coefficient-major, channel inner, as .spz stores it
    sh = (
        np.concatenate([_quantize_sh(rest[:, :3], 5), _quantize_sh(rest[:, 3:], 4)], 1)
        if degree
        else rest.astype(np.uint8)
    )
    header = np.array([SPZ_MAGIC, 3, n], "<u4").tobytes() + bytes([degree, SPZ_FRACTIONAL_BITS, 0, 0])
    body = b"".join(
        a.tobytes()
        for a in (
            positions,
            alphas,
            colors.reshape(-1),
            scales.reshape(-1),
            _pack_smallest_three(params.quats).reshape(-1),
            sh.reshape(-1),
        )
    )
    return gzip.compress(header + body, mtime=0)


def read_spz(path: str | Path) -> SplatParams:
    """Read .spz versions 2 (first-three rotations) and 3 (smallest-three)."""
    import gzip
    import zlib

    try:
        data = gzip.decompress(_existing(path).read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise ThreeDistillError(f"{path} is not a gzip-compressed .spz file: {err}") from None
    if len(data) < 16 or int.from_bytes(data[:4], "little") != SPZ_MAGIC:
        raise ThreeDistillError(f"{path}: no .spz header (magic 0x5053474e)")
    version, n = (int.from_bytes(data[i : i + 4], "little") for i in (4, 8))
    degree, frac = data[12], data[13]
    if version not in (2, 3) or degree > 3:
        raise ThreeDistillError(
            f"{path}: unsupported .spz version {version} / SH degree {degree} (expected 2 or 3 / 0-3)"
        )
    k = (degree + 1) ** 2 - 1
    rot_bytes = 4 if version == 3 else 3
    sizes = [9 * n, n, 3 * n, 3 * n, rot_bytes * n, 3 * k * n]
    if len(data) - 16 != sum(sizes):
        raise ThreeDistillError(f"{path}: {len(data) - 16} bytes of data, expected {sum(sizes)} for {n} Gaussians")
    chunks, offset = [], 16
    for size in sizes:
        chunks.append(np.frombuffer(data, np.uint8, size, offset))
        offset += size
    pos, alpha, colour, scale, rot, sh_raw = chunks
    p = pos.reshape(-1, 3).astype(np.int32)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    a = (alpha.astype(np.float32) / 255).clip(1e-6, 1 - 1e-6)
    if version == 3:
        quats = _unpack_smallest_three(rot)
    else:
        xyz = rot.reshape(-1, 3).astype(np.float32) / 127.5 - 1.0
        quats = np.concatenate([np.sqrt(np.clip(1 - (xyz**2).sum(1, keepdims=True), 0, None)), xyz], 1)
    sh = np.empty((n, k + 1, 3), np.float32)
    sh[:, 0] = (colour.reshape(-1, 3).astype(np.float32) / 255 - 0.5) / SPZ_COLOR_SCALE
    sh[:, 1:] = ((sh_raw.astype(np.float32) - 128) / 128).reshape(n, k, 3)
    return SplatParams(
        (fixed.reshape(n, 3) / float(1 << frac)).astype(np.float32),
        (scale.reshape(n, 3).astype(np.float32) / 16 - 10),
        quats.astype(np.float32),
        np.log(a / (1 - a)).astype(np.float32),
        sh,
    ).checked(str(path))
