"""Lifting 2D masks drawn on captured views to Gaussian selections (editing/lift.py, `--mask view:NAME:MASK.png`),
scored against the toy scene's ground truth: the Gaussians whose nearest ground-truth surface is the object's."""

from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from threedistill.bench.edit_bench import lifting_scores, mask_views, object_membership, write_object_masks
from threedistill.cameras import orbit_cameras
from threedistill.editing.lift import ViewMask, gaussian_cloud, lift_view_mask, mask_votes
from threedistill.errors import ConfigError
from threedistill.representations.gaussians import PARAM_NAMES, Gaussians

CUBE = 0  # the red cube of the toy scene 'three'
# Measured on this fixture (16 views of 32x24, a 60-step fit, views from bench.edit_bench.mask_views): the cube from
# 1 view recall 0.98 / precision 0.92, from 2 views 1.00 / 0.93 (the lifting before issue #23: 0.91 / 1.00 and
# 0.86 / 1.00). Without the growth into the hidden back the 1-view recall falls to 0.76; without the depth bound,
# or taking every seen Gaussian whatever its vote, the precision falls to 0.64 / 0.33.
MIN_RECALL, MIN_PRECISION = 0.85, 0.85


@pytest.fixture(scope="module")
def fitted(captured):
    from threedistill.scenes import load_scene
    from threedistill.workflows.fit import load_fit_model

    scene_dir, run = captured
    data, model = load_scene(str(scene_dir)), load_fit_model(run.dir)
    return scene_dir, data, model, object_membership(scene_dir, data, model)


def cube_scores(fitted, tmp_path, n_views: int) -> tuple[dict, list[str]]:
    scene_dir, data, model, owner = fitted
    texts = write_object_masks(scene_dir, CUBE, mask_views(scene_dir, data, CUBE, n_views), tmp_path)
    selected, framing = lift_view_mask(data, model, texts)
    assert framing.contains(model.means.detach()[selected]).float().mean() > 0.9
    return lifting_scores(selected, owner == CUBE), texts


def test_votes_are_each_gaussian_s_blending_weight_inside_and_outside_the_mask():
    """The backward trick: a Gaussian's votes are its blending weights summed over the mask and over the rest, so
    over all Gaussians they add up to the rendered alpha inside and outside; an occluded Gaussian is barely seen."""
    points = torch.tensor([[0.0, 0.0, 0.3], [0.05, 0.0, -0.3], [0.6, 0.45, 0.0]])
    model = Gaussians.from_points(points)
    with torch.no_grad():
        model.log_scales.fill_(float(np.log(0.1)))
        model.log_scales[0] = float(np.log(0.3))  # a wide, nearly opaque (0.95) Gaussian hides the one behind it
        model.opacity_logits.fill_(3.0)
    cams = orbit_cameras(0.0, 0.0, 2.5, 40.0)
    mask = torch.zeros(256, 256, dtype=torch.bool)
    mask[:, :128] = True  # the left half
    votes = mask_votes(
        SimpleNamespace(cameras=lambda indices: cams), gaussian_cloud(model), ViewMask(0, "v", None, mask)
    )
    with torch.no_grad():
        alpha = model.render(cams, 256, 256)["alpha"][0, 0]
    assert float(votes.inside.sum()) == pytest.approx(float(alpha[mask].sum()), rel=1e-3)
    assert float(votes.outside.sum()) == pytest.approx(float(alpha[~mask].sum()), rel=1e-3)
    assert votes.visibility[0] > 0.9 and votes.visibility[1] < 0.2 and votes.visibility[2] > 0.8
    assert votes.share[2] < 0.01 and 0.3 < votes.share[0] < 0.7  # right of the image; straddling the middle


def test_a_one_view_mask_selects_the_object_s_gaussians(fitted, tmp_path):
    scores, _ = cube_scores(fitted, tmp_path, 1)
    assert scores["mask_recall"] >= MIN_RECALL and scores["mask_precision"] >= MIN_PRECISION, scores


def test_a_two_view_mask_does_at_least_as_well(fitted, tmp_path):
    """Masks on two views vote together (the list and `;`-joined forms alike) and select at least as well."""
    one, _ = cube_scores(fitted, tmp_path, 1)
    two, texts = cube_scores(fitted, tmp_path, 2)
    assert two["mask_recall"] >= one["mask_recall"] and two["mask_precision"] >= one["mask_precision"] - 0.02, (
        one,
        two,
    )
    _, data, model, _ = fitted
    assert torch.equal(lift_view_mask(data, model, texts)[0], lift_view_mask(data, model, ";".join(texts))[0])


def test_masks_that_select_nothing_end_with_one_line(fitted, tmp_path):
    """An empty mask, a mask over the background only, and malformed or missing masks are one-line errors."""
    scene_dir, data, model, _ = fitted
    name = data.image_paths[1].name
    near = model.means.norm(dim=-1) <= float(data.c2w[:, :3, 3].norm(dim=-1).max())  # without the background shell
    scene_only = Gaussians(model.cfg)
    scene_only.load_tensors({name: getattr(model, name).detach()[near] for name in PARAM_NAMES})
    with torch.no_grad():
        h, w = (int(v) for v in reversed(data.sizes[1]))
        alpha = scene_only.render(data.cameras([1]), h, w)["alpha"][0, 0]
    background = (alpha < 0.01).numpy()
    assert background.sum() > 20  # the fixture's view shows some sky
    iio.imwrite(tmp_path / "sky.png", background.astype(np.uint8) * 255)
    iio.imwrite(tmp_path / "empty.png", np.zeros_like(background, dtype=np.uint8))
    good = write_object_masks(scene_dir, CUBE, [1], tmp_path)[0]
    for masks, words in (
        (f"view:{name}:{tmp_path / 'empty.png'}", "is empty"),
        (f"view:{name}:{tmp_path / 'sky.png'}", "covers no visible Gaussian"),
        ([good, f"view:{name}:{tmp_path / 'missing.png'}"], "does not exist"),
        (f"{good};view:nope.png:{tmp_path / 'sky.png'}", "no view 'nope.png'"),
        (f"{good};box:0,0,0,1,1,1", "bad edit mask"),
        (" ; ", "no edit mask"),
    ):
        with pytest.raises(ConfigError, match=words) as info:
            lift_view_mask(data, model, masks)
        assert "\n" not in str(info.value)
