"""Bad input in a scene's image files, found before any work starts: `check_images` decodes every view's image
(and mask) cheaply, drops the few that cannot be read from the train/val split, refuses a scene where too many
cannot, and reconciles each image's stored size with the size its camera declares."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import SceneFormatError
from .base import SceneData, read_image

SHOWN = 3  # names listed in a message before "and N more"


def decoded_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image file after decoding all of it (a header alone does not reveal a truncated file); JPEGs
    are decoded at 1/8 scale, which still reads every byte. One-line SceneFormatError when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            size = img.size
            img.draft(img.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))  # no-op for formats other than JPEG
            img.load()
            return size
    except FileNotFoundError:
        raise SceneFormatError(f"{path}: image file not found") from None
    except UnidentifiedImageError:  # not a format PIL knows (e.g. EXR): try the loader itself
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # imageio's plugins, tried in turn, warn about themselves
            height, width = read_image(path)[0].shape[-2:]
        return width, height
    except Exception as err:  # PIL raises several types for broken files
        raise SceneFormatError(f"{path}: not a readable image ({type(err).__name__}: {err})".splitlines()[0]) from None


def _listing(paths: list[Path]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(p.name for p in paths[:SHOWN]) + more


def check_images(scene: SceneData, max_unreadable: float = 0.1) -> list[int]:
    """Decode every view's image and mask file. Views that cannot be read are removed from `train_indices` and
    `val_indices` (in place, with one warning naming them) and their indices returned; more than `max_unreadable`
    (a fraction of all views) unreadable is a one-line SceneFormatError listing them. An image stored at another
    size than its camera declares is fine when it is a scaled copy (same aspect ratio within a pixel, e.g. an
    `images_2/` folder): `scene.sizes` is set to the stored size, the resolution-free intrinsics stay, with one
    warning. Any other size (transposed, cropped) is a one-line SceneFormatError naming the file and both sizes."""
    unreadable, reasons, rescaled = [], [], []
    for i, path in enumerate(scene.image_paths):
        try:
            width, height = decoded_size(path)
            if scene.mask_paths[i] is not None:
                decoded_size(scene.mask_paths[i])
        except SceneFormatError as err:
            unreadable.append(i)
            reasons.append(str(err))
            continue
        w, h = (int(v) for v in scene.sizes[i])
        if (width, height) == (w, h):
            continue
        if abs(width * h - height * w) > max(w, h):  # more than rounding apart: not a scaled copy
            hint = " (transposed: a rotated photo, e.g. by its EXIF orientation?)" if (height, width) == (w, h) else ""
            raise SceneFormatError(
                f"{path}: stored {width}x{height} but its camera declares {w}x{h}{hint}; a scaled copy of the same "
                f"aspect ratio would be fine"
            )
        scene.sizes[i] = scene.sizes.new_tensor([width, height])
        rescaled.append(i)
    n = len(scene.image_paths)
    if unreadable:
        paths = [scene.image_paths[i] for i in unreadable]
        if len(unreadable) > max_unreadable * n:
            raise SceneFormatError(
                f"{paths[0].parent}: {len(unreadable)} of {n} views unreadable, more than the {max_unreadable:.0%} "
                f"allowed: {_listing(paths)} (first: {reasons[0]})"
            )
        dropped = set(unreadable)
        scene.train_indices = [i for i in scene.train_indices if i not in dropped]
        scene.val_indices = [i for i in scene.val_indices if i not in dropped]
        warnings.warn(
            f"{paths[0].parent}: {len(unreadable)} of {n} views unreadable and left out: {_listing(paths)}",
            stacklevel=2,
        )
    if rescaled:
        i = rescaled[0]
        warnings.warn(
            f"{scene.image_paths[i].parent}: {len(rescaled)} images are stored at another resolution than their "
            f"cameras declare (e.g. {scene.image_paths[i].name} at {'x'.join(map(str, scene.sizes[i].tolist()))}); "
            f"intrinsics scaled to match",
            stacklevel=2,
        )
    return unreadable


__all__ = ["check_images", "decoded_size"]
