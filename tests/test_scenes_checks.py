"""check_images: truncated or unreadable photos (and masks) are found by decoding, a few are left out of the split
with a warning, too many are a one-line error listing them; stored sizes are reconciled with the cameras'."""

import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from threedistill.cameras import look_at
from threedistill.errors import SceneFormatError
from threedistill.scenes import check_images, load_scene
from threedistill.scenes.colmap import write_colmap_text

W, H = 64, 48


def scene_dir(root, n=10, w=W, h=H, declared=(W, H)):
    """A COLMAP scene of n JPEG photos stored at w x h whose cameras declare `declared`."""
    eyes = torch.tensor([[np.cos(a) * 3.0, 0.5, np.sin(a) * 3.0] for a in np.linspace(0, 2, n)])
    names = [f"view_{i:02d}.jpg" for i in range(n)]
    dw, dh = declared
    write_colmap_text(root / "sparse" / "0", look_at(eyes).numpy(), names, [[50.0, 50.0, dw / 2, dh / 2, dw, dh]] * n)
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        iio.imwrite(root / "images" / name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8), quality=90)
    return root


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_jpeg_is_left_out_with_a_warning(tmp_path):
    scene = load_scene(scene_dir(tmp_path))  # the header is intact: the readers do not notice
    truncate(scene.image_paths[3])
    train, val = list(scene.train_indices), list(scene.val_indices)
    with pytest.warns(UserWarning, match=r"1 of 10 views unreadable and left out: view_03.jpg"):
        bad = check_images(scene)
    assert bad == [3]
    assert scene.train_indices == [i for i in train if i != 3] and scene.val_indices == val
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_images(load_scene(scene_dir(tmp_path / "clean"))) == []


def test_too_many_unreadable_views_are_one_line_listing_them(tmp_path):
    scene = load_scene(scene_dir(tmp_path))
    for i in (0, 4, 5, 8):
        truncate(scene.image_paths[i])
    (scene.image_paths[4]).write_bytes(b"not an image at all")
    with pytest.raises(SceneFormatError) as err:
        check_images(scene, max_unreadable=0.2)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "images") in msg
    assert (
        "4 of 10 views unreadable, more than the 20% allowed: view_00.jpg, view_04.jpg, view_05.jpg and 1 more" in msg
    )
    assert "truncated" in msg


def test_an_unreadable_mask_leaves_its_view_out(tmp_path):
    root = scene_dir(tmp_path)
    (root / "masks").mkdir()
    for i in range(10):
        iio.imwrite(root / "masks" / f"view_{i:02d}.jpg.png", np.full((H, W), 255, np.uint8))
    truncate(root / "masks" / "view_01.jpg.png")
    scene = load_scene(root)
    with pytest.warns(UserWarning, match="view_01.jpg"):
        assert check_images(scene) == [1]


def test_a_scaled_copy_takes_the_stored_size(tmp_path):
    """Cameras declare 128x96 (a rounding pixel off would also do), photos are stored at 64x48: an images_2 copy."""
    scene = load_scene(scene_dir(tmp_path, declared=(2 * W + 1, 2 * H)))
    intrinsics = scene.intrinsics.clone()
    with pytest.warns(UserWarning, match="10 images are stored at another resolution"):
        check_images(scene)
    assert scene.sizes.tolist() == [[W, H]] * 10
    torch.testing.assert_close(scene.intrinsics, intrinsics)  # fractions of the size: unchanged


@pytest.mark.parametrize(
    "stored, words", [((H, W), "stored 48x64 but its camera declares 64x48 (transposed"), ((W, W), "stored 64x64")]
)
def test_another_shape_is_one_line_naming_file_and_sizes(tmp_path, stored, words):
    scene = load_scene(scene_dir(tmp_path, w=stored[0], h=stored[1]))
    with pytest.raises(SceneFormatError) as err:
        check_images(scene)
    msg = str(err.value)
    assert "\n" not in msg and "view_00.jpg" in msg and words in msg, msg
