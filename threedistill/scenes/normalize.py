"""Normalisation of a captured scene into our frame: the mean camera up becomes +Y, the scene's centre the origin,
and its size about that of a toy-world object (points within ~0.9, or cameras at ~3 units). One 4x4 similarity
`T` (original -> normalised) is applied to cameras, points and splats and kept so results can be mapped back."""

from __future__ import annotations

import numpy as np

from ..geometry import quat_multiply, rotmat_to_quat

MIN_POINTS = 10  # fewer points than this: centre and scale from the cameras instead
POINT_RADIUS = 0.9  # 95th-percentile point distance after normalisation
CAMERA_DISTANCE = 3.0  # mean camera distance after normalisation when there are no points


def rotation_to_y(up: np.ndarray) -> np.ndarray:
    """The rotation (3,3) taking the direction `up` to +Y (identity for a zero vector)."""
    n = np.linalg.norm(up)
    if n < 1e-9:
        return np.eye(3)
    a, b = up / n, np.array([0.0, 1.0, 0.0])
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-12:  # pointing straight down: half a turn about X
        return np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def look_centre(c2w: np.ndarray) -> np.ndarray:
    """The point closest (least squares) to all optical axes: where the cameras look. When the axes are nearly
    parallel (a single or forward-facing camera set), the camera centroid moved along the mean view direction."""
    origins, dirs = c2w[:, :3, 3], -c2w[:, :3, 2]
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # (N,3,3) projections orthogonal to each axis
    a, b = proj.sum(0), np.einsum("nij,nj->i", proj, origins)
    if np.linalg.eigvalsh(a)[0] > 1e-3 * len(c2w):
        return np.linalg.solve(a, b)
    centroid = origins.mean(0)
    spread = np.linalg.norm(origins - centroid, axis=1).max()
    forward = dirs.mean(0)
    forward = forward / max(np.linalg.norm(forward), 1e-12)
    return centroid + forward * (spread if spread > 1e-9 else 1.0)


def normalization_transform(c2w: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """The 4x4 similarity (float64) taking the original frame to the normalised one, from camera-to-world matrices
    (N,4,4, OpenGL axes; N may be 0) and optional points (M,3)."""
    c2w = np.asarray(c2w, dtype=np.float64).reshape(-1, 4, 4)
    pts = None if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 3)
    use_points = pts is not None and len(pts) >= MIN_POINTS
    rot = rotation_to_y(c2w[:, :3, 1].sum(0)) if len(c2w) else np.eye(3)
    if use_points:
        centre = np.median(pts, axis=0)
    elif len(c2w):
        centre = look_centre(c2w)
    else:
        centre = pts.mean(0) if pts is not None and len(pts) else np.zeros(3)
    scale = None
    if use_points:
        q = np.percentile(np.linalg.norm(pts - centre, axis=1), 95)
        scale = POINT_RADIUS / q if q > 1e-12 else None
    if scale is None and len(c2w):
        d = np.linalg.norm(c2w[:, :3, 3] - centre, axis=1).mean()
        scale = CAMERA_DISTANCE / d if d > 1e-12 else None
    scale = 1.0 if scale is None else scale
    t = np.eye(4)
    t[:3, :3] = scale * rot
    t[:3, 3] = -scale * rot @ centre
    return t


def similarity_scale(transform: np.ndarray) -> float:
    """The uniform scale of a similarity (cube root of the determinant of its 3x3 part)."""
    return float(np.cbrt(np.linalg.det(np.asarray(transform, dtype=np.float64)[:3, :3])))


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (M,3) through the similarity."""
    t = np.asarray(transform, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ t[:3, :3].T + t[:3, 3]


def transform_c2w(transform: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world matrices (N,4,4) through the similarity, keeping their rotations orthonormal."""
    t = np.asarray(transform, dtype=np.float64)
    out = t[None] @ np.asarray(c2w, dtype=np.float64).reshape(-1, 4, 4)
    out[:, :3, :3] /= similarity_scale(t)
    return out


def _sh_basis(dirs: np.ndarray, k: int) -> np.ndarray:
    """The renderer's real SH basis (K, D) at unit directions (D,3), evaluated through `sh_to_rgb` itself so the
    sign conventions cannot drift (coefficients scaled by 0.1 to stay clear of its clamp at 0)."""
    import torch

    from ..renderers.gaussian_raster import sh_to_rgb

    d = torch.from_numpy(dirs)
    rows = []
    for i in range(k):
        sh = torch.zeros(len(d), k, 3, dtype=torch.float64)
        sh[:, i] = 0.1
        rows.append(((sh_to_rgb(sh, d)[:, 0] - 0.5) / 0.1).numpy())
    return np.stack(rows)


def rotate_sh(sh: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """SH coefficients (N,K,3) of colours seen along d, re-expressed after the world rotates by `rot`: the new
    function at R d equals the old one at d. Each band is mixed by a matrix fitted on sample directions."""
    k = sh.shape[1]
    if k == 1:
        return sh.copy()
    dirs = np.random.default_rng(0).normal(size=(64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    basis, rotated = _sh_basis(dirs, k), _sh_basis(dirs @ rot, k)  # rows of dirs @ rot are R^T d
    out = sh.astype(np.float64).copy()
    degree = 1
    while (degree + 1) ** 2 <= k:
        band = slice(degree**2, (degree + 1) ** 2)
        mix = rotated[band] @ np.linalg.pinv(basis[band])  # Y(R^T d) = mix @ Y(d)
        out[:, band] = np.einsum("ji,njc->nic", mix, sh[:, band].astype(np.float64))
        degree += 1
    return out.astype(sh.dtype)


def transform_splats(transform: np.ndarray, splats):
    """3DGS parameters (`SplatParams`) through the similarity: means moved, log-scales shifted by log s,
    quaternions and view-dependent colour (SH) rotated."""
    from ..export.splats import SplatParams

    t = np.asarray(transform, dtype=np.float64)
    s = similarity_scale(t)
    rot = t[:3, :3] / s
    q = quat_multiply(rotmat_to_quat(rot)[None], splats.quats.astype(np.float64))
    return SplatParams(
        transform_points(t, splats.means).astype(np.float32),
        (splats.log_scales + np.log(s)).astype(np.float32),
        q.astype(np.float32),
        splats.opacity_logits.astype(np.float32).copy(),
        rotate_sh(splats.sh, rot).astype(np.float32),
    )


__all__ = [
    "normalization_transform",
    "transform_points",
    "transform_c2w",
    "transform_splats",
    "rotate_sh",
    "similarity_scale",
    "rotation_to_y",
    "look_centre",
]
