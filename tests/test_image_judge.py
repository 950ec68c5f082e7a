import pytest
import torch

from threedistill.cameras import orbit_cameras
from threedistill.evaluation.image_judge import SilhouetteBank, dominant_colour, judge_image
from threedistill.toyworld.catalogue import COLOURS, OBJECTS
from threedistill.toyworld.render import render_toy


@pytest.fixture(scope="module")
def bank():
    # a coarse grid keeps the test fast; the gate's default grid is ~12x denser
    return SilhouetteBank(32, azimuths=range(0, 360, 30), elevations=(-10, 10, 30, 50, 70), radii=(2.6, 2.9, 3.2))


def test_ground_truth_renders_are_judged_right(bank):
    # Off-grid views (not in the bank): the judge must still recognise nearly all ground-truth renders.
    cams = orbit_cameras([17.0, 100.0, 200.0], [5.0, 25.0, 40.0], [2.7, 3.0, 3.1])
    right = total = 0
    for i, name in enumerate(OBJECTS):
        colour = list(COLOURS)[i % len(COLOURS)]
        for image in render_toy(name, colour, cams, 32, 32)["rgb"]:
            j = judge_image(image, bank)
            right += (j.object == name) and (j.colour == colour) and j.background_clean
            total += 1
    assert right / total >= 0.9


def test_noisy_background_and_wrong_colour_are_caught(bank):
    image = render_toy("cube", "green", orbit_cameras(30.0, 20.0, 2.9), 32, 32)["rgb"][0]
    gen = torch.Generator().manual_seed(0)
    noisy = (image - 0.3 * torch.rand(image.shape, generator=gen)).clamp(0, 1)
    assert judge_image(image, bank).background_clean
    assert not judge_image(noisy, bank).background_clean
    assert dominant_colour(image, torch.ones(32, 32, dtype=torch.bool)) == "green"
    assert judge_image(image[[1, 0, 2]], bank).colour != "green"  # swapped channels: green becomes red-ish
    blank = torch.ones(3, 32, 32)
    assert judge_image(blank, bank).colour is None
