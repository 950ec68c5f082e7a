"""Drag input for Gaussian scenes (issue #24): handle -> target 3D point pairs, as `--drag "hx,hy,hz>tx,ty,tz"`
(repeatable) or DYG's `drag_points.json` ({"handle_points": [[x, y, z], ...], "target_points": [...]}), and DYG's
per-Gaussian mask (`gaussian_mask.pt`, read only with `torch.load(weights_only=True)`, or `.npy`). Every malformed
input is a one-line error naming it.

`warp_gaussians` is the drag with no prior at all: the selected Gaussians move by the handles' displacements,
blended by distance (what a deformation scaffold and its ring regulariser give alone) -- the benchmark's geometric
baseline. `joint_motion` is the other drag with no prior: the part moved rigidly, turned about where it joins the
rest when a turn explains the drag, else shifted -- Drag-SDS's default start and the source of its teacher's hint
(configs/edit/drag.yaml)."""

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


JOINT_CONTACT = 0.2  # where the part touches the rest: this share of its Gaussians, the nearest to the rest
JOINT_FAR = 0.5  # the joint: the touching Gaussians farther from the handles than this share of the farthest one
JOINT_FIT = 0.375  # a turn about the joint explains the drag when it misses the targets by at most this share of it


@dataclass
class RigidMotion:
    """p -> R (p - pivot) + pivot + shift: how `joint_motion` moves a dragged part; `kind` says which model it is
    ("turn": about the part's joint; "shift": a translation) and `miss` how far the turn alone missed the targets
    (mean, in the scene's units)."""

    rotation: torch.Tensor  # (3,3)
    pivot: torch.Tensor  # (3,)
    shift: torch.Tensor  # (3,)
    kind: str
    miss: float = 0.0

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        if self.kind == "shift":
            return points + self.shift.to(points)
        r, c, t = (v.to(points) for v in (self.rotation, self.pivot, self.shift))
        return (points - c) @ r.T + c + t

    def turn_quats(self, quats: torch.Tensor) -> torch.Tensor:
        """Orientations (N,4) (w, x, y, z) turned with the part: q_R * q."""
        from ..geometry import quat_multiply, rotmat_to_quat

        if self.kind == "shift":
            return quats.clone()
        q = rotmat_to_quat(self.rotation.detach().double().cpu().numpy())
        return torch.from_numpy(quat_multiply(q[None], quats.detach().double().cpu().numpy())).to(quats)

    def moved(self, gaussians, selected: torch.Tensor):
        """A copy of the Gaussians with the selected ones moved (centres and orientations); the rest as they were."""
        import copy

        out = copy.deepcopy(gaussians)
        means, quats = out.means.detach().clone(), out.quats.detach().clone()
        sel = selected.to(means.device)
        means[sel], quats[sel] = self.apply(means[sel]), self.turn_quats(quats[sel])
        out.means.data, out.quats.data = means, quats
        return out


def _kabsch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The rotation (3,3) that best takes the vectors a (K,3) onto b (K,3) (Kabsch: no reflection)."""
    u, _, vh = torch.linalg.svd(a.T @ b)
    flip = torch.eye(3, dtype=a.dtype, device=a.device)
    flip[2, 2] = float(torch.sign(torch.det(vh.T @ u.T))) or 1.0
    return vh.T @ flip @ u.T


def _turn_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The rotation (3,3) that takes the directions a (K,3) to b (K,3) best: Kabsch for two or more, the
    smallest rotation (Rodrigues) for one."""
    eye = torch.eye(3, dtype=a.dtype, device=a.device)
    if len(a) == 1:  # (opposite directions: no smallest turn; the identity, which then misses and is not taken)
        u, v = a[0] / a[0].norm().clamp_min(1e-12), b[0] / b[0].norm().clamp_min(1e-12)
        axis, cos = torch.linalg.cross(u, v), (u * v).sum().clamp(-1, 1)
        sin = axis.norm()
        if sin < 1e-9:
            return eye
        k = axis / sin
        zero = k.new_zeros(())
        kx = torch.stack([torch.stack([zero, -k[2], k[1]]), torch.stack([k[2], zero, -k[0]]),
                          torch.stack([-k[1], k[0], zero])])  # fmt: skip
        return eye + sin * kx + (1 - cos) * kx @ kx
    return _kabsch(a, b)


def joint_motion(means: torch.Tensor, selected: torch.Tensor, points: DragPoints) -> RigidMotion:
    """The rigid motion of the selected Gaussians that a drag most plausibly means, with no prior: a part attached
    to the rest (a head on a neck, an arm at a shoulder) turns about where it joins it; a free part, or one whose
    drag a turn cannot explain, is shifted.

    The joint: the JOINT_CONTACT share of the selected Gaussians nearest an unselected one (where the part touches
    the rest), and of those the ones farther from the handles than JOINT_FAR of the farthest (a hand's arm turns at
    the shoulder, not along its side); their mean is the pivot. The turn: the rotation about
    the pivot that takes the handles' directions to the targets' (Kabsch; the smallest rotation for one pair), then
    the mean shift that lands the handles on their targets. It is used when its rotation alone misses the targets
    by at most JOINT_FIT of the mean drag length; otherwise (or with no contact) the part is shifted by the mean
    handle -> target move."""
    handles, targets = points.handles.to(means), points.targets.to(means)
    move = (targets - handles).mean(0)
    length = float((targets - handles).norm(dim=1).mean())
    shift = RigidMotion(torch.eye(3, dtype=means.dtype, device=means.device), handles.mean(0), move, "shift")
    part, rest = means[selected], means[~selected]
    if len(part) < 4 or not len(rest) or length == 0:
        return shift
    near = torch.cat([torch.cdist(part[i : i + 4096], rest).min(1).values for i in range(0, len(part), 4096)])
    touching = near <= near.quantile(JOINT_CONTACT)
    contact = part[touching]
    far = torch.cdist(contact, handles).min(1).values
    pivot = contact[far >= JOINT_FAR * far.max()].mean(0)
    rotation = _turn_between(handles - pivot, targets - pivot)
    turned = (handles - pivot) @ rotation.T + pivot
    miss = float((turned - targets).norm(dim=1).mean())
    if miss > JOINT_FIT * length:
        shift.miss = miss
        return shift
    return RigidMotion(rotation, pivot, (targets - turned).mean(0), "turn", miss)


def default_falloff(points: DragPoints) -> float:
    """The geometric drag's falloff: WARP_FALLOFF of the longest handle -> target move."""
    return WARP_FALLOFF * points.longest_move


def handle_error(
    before: torch.Tensor,
    after: torch.Tensor,
    points: DragPoints,
    size: float,
    k: int = 16,
    part: torch.Tensor | None = None,
) -> list[float]:
    """Per pair: where the handle ended against its target, divided by the object's size. Where it ended: the
    rigid motion that best carries the k Gaussians nearest the handle (before the edit; among `part`'s, the dragged
    part's Gaussians, when given) to where they are after it (Kabsch), applied to the handle. (Their mean centre
    sits off a handle on a tip or an edge, so its own position is not the handle's; and a turned part turns that
    offset too, so their mean displacement is not the handle's either: on the toy fit it scored the robot's arm,
    turned rigidly onto its target, 0.11 of the object's size off. Neighbours outside the part, such as the wall
    behind the house's door, do not move with it.) A part of fewer than k Gaussians is too few to fix a rotation:
    the handle moves by their mean displacement."""
    pool = torch.arange(len(before), device=before.device)
    if part is not None and part.any():
        pool = part.to(before.device).nonzero().reshape(-1)
    errors = []
    for handle, target in zip(points.handles, points.targets):
        handle = handle.to(before)
        near = pool[(before[pool] - handle).norm(dim=1).topk(min(k, len(pool)), largest=False).indices]
        src, dst = before[near].double(), after[near].to(before).double()
        cs, cd = src.mean(0), dst.mean(0)
        if len(near) < k:  # too few to fix a rotation (the toy house's door: 5): their mean move
            errors.append(float((handle.double() + cd - cs - target.to(cd)).norm()) / size)
            continue
        moved = (handle.double() - cs) @ _kabsch(src - cs, dst - cd).T + cd
        errors.append(float((moved - target.to(moved)).norm()) / size)
    return errors
