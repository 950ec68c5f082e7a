"""`t3d bench lift`: lifting 2D masks to Gaussian selections on a REAL capture (issue #23), where no 3D ground truth
exists: the object's silhouette in each photo stands in for it.

- The object's mask in a photo: the capture's own mask files where it has them; else the photo's two Otsu classes
  (grey level), the one that touches the image border less (the object, on a plain background), its largest
  connected part with holes filled. For captures of an object against a plain backdrop (a dark or a light one).
- Each of `views` training views (evenly spaced) in turn is the mask a user draws: its mask, drawn on the photo as
  taken, is lifted by `editing/lift.py` (`--mask view:NAME:MASK.png`).
- The selection is rendered alone from every held-out view (never a mask view) and scored against that view's
  object mask: **precision**, the share of the selection's rendered alpha inside the mask dilated by `SLACK` pixels
  (what the selection shows that is not the object); **coverage**, the share of the mask the selection's alpha
  covers; **fit coverage**, the same for all the fit's Gaussians within the cameras' reach (what any selection
  could cover: a short fit does not cover the whole object)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

SLACK = 2  # pixels: a silhouette's edge is uncertain by about this much at the fits' sizes


def object_mask(rgb: torch.Tensor) -> np.ndarray:
    """(H,W) bool: the object of a photo (3,H,W) in [0,1] on a plain background (the module docstring's rule)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    grey = ndimage.gaussian_filter(rgb.mean(0).numpy(), 1.0)
    bright = grey > threshold_otsu(grey)
    border = np.concatenate([bright[0], bright[-1], bright[:, 0], bright[:, -1]])
    mask = bright if border.mean() < 0.5 else ~bright  # the class that touches the border less
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    largest = 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, count + 1))))
    return ndimage.binary_fill_holes(labels == largest)


def view_masks(scene, indices: list[int], undistorted: bool) -> dict[int, np.ndarray]:
    """Object masks (H,W) bool at each view's stored size: of the photo as taken (what a user draws on), or of the
    undistorted view (what renders are compared with). The capture's own mask files win where they exist."""
    from ..scenes.base import read_image

    masks = {}
    for i in indices:
        w, h = (int(v) for v in scene.sizes[i])
        if not undistorted:  # the files as they are
            if scene.mask_paths[i] is not None:
                masks[i] = read_image(scene.mask_paths[i], as_mask=True)[0][0].numpy() > 0.5
            else:
                masks[i] = object_mask(read_image(scene.image_paths[i])[0][:3])
            continue
        rgb, alpha = scene.load_images([i], h, w)  # undistorted, a mask file with them
        masks[i] = alpha[0, 0].numpy() > 0.5 if scene.mask_paths[i] is not None else object_mask(rgb[0])
    return masks


def near_gaussians(scene, gaussians) -> torch.Tensor:
    """(N,) bool: the Gaussians within the cameras' reach (`editing.lift.within_cameras`)."""
    from ..editing.lift import within_cameras

    return within_cameras(scene, gaussians.means.detach())


def subset(gaussians, keep: torch.Tensor):
    from ..representations.gaussians import PARAM_NAMES, Gaussians

    part = Gaussians(gaussians.cfg)
    part.load_tensors({name: getattr(gaussians, name).detach()[keep] for name in PARAM_NAMES})
    return part


@torch.no_grad()
def silhouette_scores(scene, gaussians, selected: torch.Tensor, masks: dict[int, np.ndarray]) -> dict:
    """Precision, coverage and fit coverage (module docstring) of a selection over the views of `masks`."""
    from scipy import ndimage

    chosen, near = subset(gaussians, selected), subset(gaussians, near_gaussians(scene, gaussians))
    precision, coverage, fit_coverage = [], [], []
    for i, mask in masks.items():
        h, w = mask.shape
        cams = scene.cameras([i])
        alpha = chosen.render(cams, h, w)["alpha"][0, 0]
        whole = near.render(cams, h, w)["alpha"][0, 0]
        inside = torch.from_numpy(mask).float()
        slack = torch.from_numpy(ndimage.binary_dilation(mask, iterations=SLACK)).float()
        precision.append(float((alpha * slack).sum() / alpha.sum().clamp_min(1e-6)))
        coverage.append(float((alpha * inside).sum() / inside.sum().clamp_min(1)))
        fit_coverage.append(float((whole * inside).sum() / inside.sum().clamp_min(1)))
    return {
        "precision": float(np.mean(precision)),
        "coverage": float(np.mean(coverage)),
        "fit_coverage": float(np.mean(fit_coverage)),
        "worst_precision": float(np.min(precision)),
    }


def mask_view_indices(scene, views: int) -> list[int]:
    """`views` training views spread evenly over the training order."""
    train = list(scene.train_indices)
    if views >= len(train):
        return train
    return [train[round(k * (len(train) - 1) / max(views - 1, 1))] for k in range(views)]


@torch.no_grad()
def selection_picture(scene, gaussians, selected: torch.Tensor, indices: list[int], path: Path) -> Path:
    """Rows of held-out views: the photo (undistorted), the selection rendered alone, the rest of the Gaussians
    within the cameras' reach rendered alone (white background)."""
    from ..utils.images import save_image

    near = near_gaussians(scene, gaussians)
    rows = []
    for i in indices:
        w, h = (int(v) for v in scene.sizes[i])
        cams = scene.cameras([i])
        photo = scene.load_images([i], h, w)[0][0]
        parts = [subset(gaussians, keep).render(cams, h, w)["rgb"][0] for keep in (selected, near & ~selected)]
        rows.append(torch.cat([photo, *parts], dim=2))
    return save_image(torch.cat(rows, dim=1).clamp(0, 1), path)


def measure_lifting(
    scene_dir: Path, run_dir: Path, views: int, work_dir: Path, picture: Path | None = None, log=print
) -> list[dict]:
    """One row per mask view: the lifted selection's silhouette scores over the held-out views; a last row
    `everything` scores all the Gaussians within the cameras' reach (what a selection must beat). With `picture`,
    the first mask view's selection from three held-out views is drawn there (`selection_picture`)."""
    import imageio.v3 as iio

    from ..editing.lift import lift_view_mask
    from ..scenes import load_scene
    from ..workflows.fit import load_fit_model

    scene, gaussians = load_scene(str(scene_dir)), load_fit_model(run_dir)
    held_out = view_masks(scene, list(scene.val_indices), undistorted=True)
    chosen = mask_view_indices(scene, views)
    drawn = view_masks(scene, chosen, undistorted=False)
    work_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in chosen:
        name = scene.image_paths[i].name
        path = work_dir / f"mask_{Path(name).stem}.png"
        iio.imwrite(path, drawn[i].astype(np.uint8) * 255)
        start = time.time()
        selected, _ = lift_view_mask(scene, gaussians, f"view:{name}:{path}")
        seconds = time.time() - start
        row = {"view": name, "selected": int(selected.sum()), "seconds": seconds}
        row |= silhouette_scores(scene, gaussians, selected, held_out)
        log(
            f"mask on {name}: {row['selected']} Gaussians, held-out precision {row['precision']:.3f}, coverage "
            f"{row['coverage']:.3f} (the fit covers {row['fit_coverage']:.3f})"
        )
        rows.append(row)
        if picture is not None and len(rows) == 1:
            val = list(scene.val_indices)
            selection_picture(scene, gaussians, selected, val[:: max(1, len(val) // 3)][:3], picture)
    everything = near_gaussians(scene, gaussians)
    rows.append({"view": "everything", "selected": int(everything.sum()), "seconds": 0.0})
    rows[-1] |= silhouette_scores(scene, gaussians, everything, held_out)
    return rows


def markdown_report(rows: list[dict], header: str, fit_line: str, picture: str | None = None) -> str:
    lines = [header, "", fit_line, ""]
    lines += ["| mask view | Gaussians selected | held-out precision | worst view | coverage | fit coverage | s |"]
    lines += ["|---|---|---|---|---|---|---|"]
    lifted = [r for r in rows if r["view"] != "everything"]
    for r in lifted:
        lines.append(
            f"| {r['view']} | {r['selected']} | {r['precision']:.3f} | {r['worst_precision']:.3f} | "
            f"{r['coverage']:.3f} | {r['fit_coverage']:.3f} | {r['seconds']:.2f} |"
        )
    if lifted:
        mean = lambda key: float(np.mean([r[key] for r in lifted]))  # noqa: E731
        lines.append(
            f"| **mean** | {mean('selected'):.0f} | **{mean('precision'):.3f}** | {mean('worst_precision'):.3f} | "
            f"**{mean('coverage'):.3f}** | {mean('fit_coverage'):.3f} | {mean('seconds'):.2f} |"
        )
    for r in rows:
        if r["view"] == "everything":
            lines.append(
                f"| every Gaussian within the cameras' reach (no lifting) | {r['selected']} | {r['precision']:.3f} | "
                f"{r['worst_precision']:.3f} | {r['coverage']:.3f} | {r['fit_coverage']:.3f} | - |"
            )
    if picture is not None:
        lines += ["", "The first mask view's selection from held-out views (photo | selection | the rest):", "",
                  f"![selection]({picture})"]  # fmt: skip
    return "\n".join(lines) + "\n"
