"""Ground-truth evaluation of a 3D result on the toy world: silhouette IoU, masked colour error and per-view
front/back correctness (a Janus result looks like a front from behind) at fixed views."""

from __future__ import annotations

import functools

import torch

from ..cameras import orbit_cameras
from ..errors import ThreeDistillError
from ..toyworld.catalogue import get_object, parse_subject
from ..toyworld.render import render_toy

EVAL_AZIMUTHS = tuple(range(0, 360, 45))
EVAL_ELEVATIONS = (10.0, 35.0)
EVAL_RADIUS = 2.9
EVAL_FOV = 40.0


def eval_cameras():
    grid = [(a, e) for e in EVAL_ELEVATIONS for a in EVAL_AZIMUTHS]
    az, el = zip(*grid)
    return orbit_cameras(list(az), list(el), EVAL_RADIUS, EVAL_FOV)


@functools.lru_cache(maxsize=8)
def _truth_renders(obj: str, colour: str, resolution: int, mirrored: bool) -> dict:
    cams = eval_cameras()
    if mirrored:  # the front-back mirrored object's views: the ground truth's at 180 - azimuth, flipped
        cams = orbit_cameras((180.0 - cams.azimuth).tolist(), cams.elevation.tolist(), EVAL_RADIUS, EVAL_FOV)
    out = render_toy(obj, colour, cams, resolution, resolution)
    return out if not mirrored else {k: v.flip(-1) for k, v in out.items()}


def truth_at_eval_views(obj: str, colour: str, resolution: int, mirrored: bool = False) -> dict:
    """rgb and alpha of the toy ground truth at eval_cameras() (or its front-back mirror image), rendered once per
    process: a run's evaluation compares its renders, its mesh and its picture with the same views."""
    return {k: v.clone() for k, v in _truth_renders(obj, colour, resolution, mirrored).items()}


def subject_of(prompt: str) -> tuple[str, str]:
    """(colour, object) of a toy prompt, or a one-line error saying ground truth is unavailable."""
    try:
        return parse_subject(prompt)
    except ThreeDistillError:
        raise ThreeDistillError(
            f"no ground truth for prompt {prompt!r}: only toy-world prompts "
            "'a <colour> <object>' can be evaluated (see `t3d toyworld list`)"
        ) from None


def compare(render: dict, colour: str, obj: str, resolution: int) -> dict:
    """Metrics of renders (rgb, alpha at eval_cameras()) against the toy ground truth."""
    gt = truth_at_eval_views(obj, colour, resolution)
    pred_mask, gt_mask = render["alpha"][:, 0] > 0.5, gt["alpha"][:, 0] > 0.5
    inter = (pred_mask & gt_mask).flatten(1).sum(1).float()
    union = (pred_mask | gt_mask).flatten(1).sum(1).float().clamp_min(1)
    iou = inter / union
    both = (pred_mask & gt_mask)[:, None].expand(-1, 3, -1, -1)
    colour_err = (render["rgb"] - gt["rgb"]).abs()[both].mean().item() if both.any() else 1.0
    out = {
        "silhouette_iou": iou.mean().item(),
        "silhouette_iou_per_view": [round(v, 4) for v in iou.tolist()],
        "colour_error": colour_err,
        "saturation_ratio": mean_saturation(render["rgb"], pred_mask) / max(mean_saturation(gt["rgb"], gt_mask), 1e-6),
    }
    if get_object(obj).has_front:
        out |= front_back(render["rgb"], colour, obj, resolution)
    return out


def mean_saturation(rgb: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean HSV saturation (max - min) / max of the masked pixels of images (B,3,H,W); 0 when nothing is masked.
    Over-saturated results (a known SDS failure at high CFG) score above the ground truth's value."""
    hi, lo = rgb.amax(dim=1), rgb.amin(dim=1)
    sat = (hi - lo) / hi.clamp_min(1e-6)
    return sat[mask].mean().item() if mask.any() else 0.0


def front_back(rgb: torch.Tensor, colour: str, obj: str, resolution: int) -> dict:
    """For eval_cameras()' views facing the front or back (|cos az| > 0.5): the render must be closer to the
    ground truth at its own azimuth a than to the front-back mirrored object, whose view at a is the mirror image
    of the ground truth at 180 - a. A Janus (two-faced) result matches the latter."""
    az = eval_cameras().azimuth
    gt = truth_at_eval_views(obj, colour, resolution)["rgb"]
    gt_mirror = truth_at_eval_views(obj, colour, resolution, mirrored=True)["rgb"]
    considered = torch.cos(torch.deg2rad(az)).abs() > 0.5
    err_true = (rgb - gt).pow(2).flatten(1).mean(1)
    err_janus = (rgb - gt_mirror).pow(2).flatten(1).mean(1)
    correct = (err_true < err_janus) & considered
    n = int(considered.sum())
    return {"front_back_correct": correct.sum().item() / max(n, 1), "front_back_views": n}
