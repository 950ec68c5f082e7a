"""Drag input for Gaussian scenes (issue #24): handle -> target 3D point pairs, as `--drag "hx,hy,hz>tx,ty,tz"`
(repeatable) or DYG's `drag_points.json` ({"handle_points": [[x, y, z], ...], "target_points": [...]}), and DYG's
per-Gaussian mask (`gaussian_mask.pt`, read only with `torch.load(weights_only=True)`, or `.npy`). Every malformed
input is a one-line error naming it.

`warp_gaussians` is the drag with no prior at all: the selected Gaussians move by the handles' displacements,
blended by distance (what a deformation scaffold and its ring regulariser give alone) -- the benchmark's geometric
baseline, and Drag-SDS's starting point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError


@dataclass
class DragPoints:
    handles: torch.Tensor  # (N,3) in the scene's coordinates
    targets: torch.Tensor  # (N,3)

    def __post_init__(self):
        if self.handles.shape != self.targets.shape or self.handles.ndim != 2 or self.handles.shape[1] != 3:
            raise ConfigError(
                f"drag points: {len(self.handles)} handle points but {len(self.targets)} target points; each "
                "handle needs one target (x, y, z each)"
            )
        if len(self.handles) == 0:
            raise ConfigError("no drag points; give --drag 'hx,hy,hz>tx,ty,tz' or --drag-file drag_points.json")
        if not (torch.isfinite(self.handles).all() and torch.isfinite(self.targets).all()):
            raise ConfigError("drag points contain NaN or inf")

    @property
    def longest_move(self) -> float:
        """The longest handle -> target distance."""
        return float((self.targets - self.handles).norm(dim=1).max())

    def __len__(self) -> int:
        return len(self.handles)

    @classmethod
    def parse(cls, items: list[str]) -> "DragPoints":
        """From `--drag` texts `hx,hy,hz>tx,ty,tz`."""
        handles, targets = [], []
        for text in items:
            handle, sep, target = text.partition(">")
            try:
                h, t = [float(v) for v in handle.split(",")], [float(v) for v in target.split(",")]
            except ValueError:
                h = t = []
            if not sep or len(h) != 3 or len(t) != 3:
                raise ConfigError(f"bad --drag {text!r}: expected hx,hy,hz>tx,ty,tz (a handle point, '>', its target)")
            handles.append(h)
            targets.append(t)
        return cls(torch.tensor(handles).reshape(-1, 3), torch.tensor(targets).reshape(-1, 3))

    @classmethod
    def read(cls, path: str | Path) -> "DragPoints":
        """DYG's drag_points.json."""
        from ..utils.files import read_json

        meta = read_json(path, "drag points file", error=ConfigError)
        arrays = []
        for key in ("handle_points", "target_points"):
            if key not in meta:
                raise ConfigError(f"{path}: missing field {key} (DYG's layout: handle_points, target_points)")
            try:
                arrays.append(torch.tensor(np.asarray(meta[key], dtype=np.float64), dtype=torch.float32).reshape(-1, 3))
            except (TypeError, ValueError, RuntimeError):
                raise ConfigError(f"{path}: {key} must be a list of [x, y, z] numbers") from None
        try:
            return cls(*arrays)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def check_inside(
        self, centre: torch.Tensor, radius: float, where: str = "the scene", given: "DragPoints | None" = None
    ) -> None:
        """A one-line error when a point lies beyond the sphere (the scene's bounds); `given`: the same points as
        the user wrote them (another frame), for the message."""
        shown = given or self
        for name, points, written in (("handle", self.handles, shown.handles), ("target", self.targets, shown.targets)):
            far = (points - centre).norm(dim=1) > radius
            if far.any():
                i = int(far.nonzero()[0])
                where_text = f"{where} (within {radius:.3g} of {[round(v, 3) for v in centre.tolist()]})"
                if given is not None:
                    where_text = where
                raise ConfigError(
                    f"drag {name} point {i + 1} {[round(v, 4) for v in written[i].tolist()]} lies outside "
                    f"{where_text}; are the points in the scene's coordinates?"
                )


def read_gaussian_mask(path: str | Path, count: int) -> torch.Tensor:
    """DYG's per-Gaussian mask (N,) bool from `gaussian_mask.pt` (tensors only: weights_only) or `.npy` (no
    pickles); one line when it is unreadable, of the wrong length or selects nothing."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Gaussian mask {path} not found")
    try:
        if path.suffix == ".npy":
            mask = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            mask = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch and numpy raise many types for damaged or unsafe files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"Gaussian mask {path} is unreadable ({reason[:160]})") from None
    if not isinstance(mask, torch.Tensor) or mask.reshape(-1).numel() != count:
        size = mask.reshape(-1).numel() if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ConfigError(f"Gaussian mask {path} has {size} entries; the scene has {count} Gaussians")
    mask = mask.reshape(-1).bool()
    if not mask.any():
        raise ConfigError(f"Gaussian mask {path} selects no Gaussian")
    return mask


WARP_FALLOFF = 0.5  # the geometric drag's default falloff radius, as a fraction of the longest handle -> target move


def warp_gaussians(
    means: torch.Tensor, selected: torch.Tensor, points: DragPoints, falloff: float | None = None
) -> torch.Tensor:
    """New centres (N,3): each selected Gaussian moves by sum_k w_k (target_k - handle_k) with
    w_k = exp(-d_k^2 / 2 falloff^2) of its distance d_k to handle k, the weights divided by their sum where that
    exceeds 1 (several handles pulling one point share it); the others stay bit-identical. `falloff` None: no
    falloff (every selected Gaussian moves by the handles' mean displacement: a rigid translation)."""
    out = means.clone()
    out[selected] = means[selected] + warp_offsets(means, selected, points, falloff)
    return out


def warp_offsets(
    means: torch.Tensor, selected: torch.Tensor, points: DragPoints, falloff: float | None = None
) -> torch.Tensor:
    """(M,3): how far `warp_gaussians` moves each selected Gaussian, in the order of selected.nonzero()."""
    sel = means[selected]
    shift = (points.targets - points.handles).to(sel)
    if falloff is None:
        weights = torch.full((len(sel), len(points)), 1.0 / len(points), dtype=sel.dtype)
    else:
        d2 = torch.cdist(sel, points.handles.to(sel)) ** 2  # (M, K)
        weights = torch.exp(-d2 / (2 * falloff**2))
        weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
    return weights @ shift


def default_falloff(points: DragPoints) -> float:
    """The geometric drag's falloff: WARP_FALLOFF of the longest handle -> target move."""
    return WARP_FALLOFF * points.longest_move


def handle_error(
    before: torch.Tensor, after: torch.Tensor, points: DragPoints, size: float, k: int = 16
) -> list[float]:
    """Per pair: where the handle ended -- the handle moved as the k Gaussians nearest it (before the edit) moved
    on average -- against the target, divided by the object's size. (Their mean centre itself sits off a handle on
    a corner or an edge; its displacement does not.)"""
    errors = []
    for handle, target in zip(points.handles, points.targets):
        near = (before - handle.to(before)).norm(dim=1).topk(min(k, len(before)), largest=False).indices
        moved = handle.to(after) + after[near].mean(0) - before[near].mean(0)
        errors.append(float((moved - target.to(after)).norm()) / size)
    return errors
