"""3D Gaussians as the files splat tools read: the INRIA 3DGS `point_cloud.ply` (pre-activation values, exact
property names; SuperSplat, gsplat and nerfstudio read it) and antimatter15's `.splat` for web viewers.
Conventions in docs/formats.md. Reading our own .ply back gives the same parameters bit for bit."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ThreeDistillError

SH_C0 = 0.28209479177387814


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
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k)))
                for k in ("means", "log_scales", "quats", "opacity_logits", "sh")}

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1


def _ply_properties(n_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(params: SplatParams, path: str | Path) -> Path:
    """Binary little-endian 3DGS point_cloud.ply; f_rest is channel-major (index = c * K + k)."""
    from plyfile import PlyData, PlyElement

    n, coeffs, _ = params.sh.shape
    rest = params.sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # (N, 3*K), channel-major
    columns = [params.means, np.zeros((n, 3), np.float32), params.sh[:, 0, :], rest,
               params.opacity_logits[:, None], params.log_scales, params.quats]
    names = _ply_properties(rest.shape[1])
    data = np.concatenate(columns, axis=1).astype("<f4")
    vertex = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        vertex[name] = data[:, i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(vertex, "vertex")], byte_order="<").write(str(path))
    return path


def read_ply(path: str | Path) -> SplatParams:
    """Read a 3DGS point_cloud.ply of any SH degree; one-line errors for anything else."""
    from plyfile import PlyData

    path = Path(path)
    if not path.is_file():
        raise ThreeDistillError(f"no such file: {path}")
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"].data
    except Exception as err:  # plyfile raises many types for malformed files
        raise ThreeDistillError(f"{path} is not a readable PLY file: {err}") from None
    names = set(vertex.dtype.names or ())
    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    degree = math.sqrt(n_rest / 3 + 1) - 1
    if n_rest % 3 or abs(degree - round(degree)) > 1e-9:
        raise ThreeDistillError(f"{path}: {n_rest} f_rest properties give no SH degree "
                                "(expected 0, 9, 24 or 45 for degrees 0-3)")
    missing = [p for p in _ply_properties(n_rest) if p not in names and not p.startswith("n")]
    if missing:
        raise ThreeDistillError(f"{path} is not a 3DGS point cloud: missing properties {', '.join(missing)}")
    col = lambda *keys: np.stack([np.asarray(vertex[k], dtype=np.float32) for k in keys], axis=1)  # noqa: E731
    n, k = len(vertex), n_rest // 3
    sh = np.empty((n, k + 1, 3), np.float32)
    sh[:, 0] = col("f_dc_0", "f_dc_1", "f_dc_2")
    if k:
        sh[:, 1:] = col(*[f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, k).transpose(0, 2, 1)
    return SplatParams(col("x", "y", "z"), col("scale_0", "scale_1", "scale_2"),
                       col("rot_0", "rot_1", "rot_2", "rot_3"), col("opacity")[:, 0], sh)


def write_splat(params: SplatParams, path: str | Path) -> Path:
    """antimatter15 .splat: 32 bytes per Gaussian (position, exp'd scale, RGBA u8, quaternion u8), no SH,
    sorted by descending size x opacity so viewers can stream the important ones first."""
    scales = np.exp(params.log_scales)
    alpha = 1.0 / (1.0 + np.exp(-params.opacity_logits))
    rgb = np.clip(0.5 + SH_C0 * params.sh[:, 0, :], 0.0, 1.0)
    quats = params.quats / np.linalg.norm(params.quats, axis=1, keepdims=True).clip(1e-12)
    order = np.argsort(-(np.exp(params.log_scales.sum(1)) * alpha), kind="stable")
    record = np.empty(len(order), dtype=[("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    record["position"] = params.means[order]
    record["scale"] = scales[order]
    record["rgba"] = np.round(np.concatenate([rgb, alpha[:, None]], 1)[order] * 255).astype(np.uint8)
    record["rot"] = np.clip(np.round(quats[order] * 128 + 128), 0, 255).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(record.tobytes())
    return path


def read_splat(path: str | Path) -> SplatParams:
    """Read a .splat back (lossy: colours and rotations are 8-bit, SH degree 0)."""
    raw = Path(path).read_bytes()
    if len(raw) % 32:
        raise ThreeDistillError(f"{path}: size {len(raw)} is not a multiple of 32 bytes, so not a .splat file")
    rec = np.frombuffer(raw, dtype=[("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    rgba = rec["rgba"].astype(np.float32) / 255
    alpha = rgba[:, 3].clip(1e-6, 1 - 1e-6)
    return SplatParams(rec["position"].astype(np.float32), np.log(rec["scale"].clip(1e-12)).astype(np.float32),
                       (rec["rot"].astype(np.float32) - 128) / 128, np.log(alpha / (1 - alpha)).astype(np.float32),
                       ((rgba[:, None, :3] - 0.5) / SH_C0).astype(np.float32))
