import json

import pytest
import torch
from safetensors.torch import load_file

from threedistill.errors import ThreeDistillError, UnknownNameError
from threedistill.evaluation.ground_truth import compare, eval_cameras
from threedistill.toyworld.render import render_toy
from threedistill.workflows.generate import generate

FAST = {  # small models, no export at the end (tests/test_export_mesh.py and test_cli cover it), and the CPU, where
    # results are bit-reproducible (gsplat's CUDA backward sums with atomics; tests/test_devices.py covers CUDA)
    "gaussians": [
        "device=cpu",
        "export=[]",
        "gaussians.num_points=200",
        "gaussians.densify_from=1",
        "gaussians.densify_every=2",
        "gaussians.densify_until=6",
        "gaussians.densify_grad_threshold=0.0",
        "trainer.batch_size=1",
        "trainer.resolution=16",
    ],
    "nerf": [
        "device=cpu",
        "export=[]",
        "nerf.n_samples=8",
        "nerf.n_importance=8",
        "nerf.levels=4",
        "nerf.log2_table_size=10",
        "trainer.batch_size=1",
        "trainer.resolution=16",
    ],
}


def final_tensors(run):
    ckpt = run.dir / "checkpoints"
    name = json.loads((ckpt / "latest.json").read_text())["checkpoint"]
    return load_file(str(ckpt / f"{name}.safetensors"))


@pytest.mark.parametrize("representation", ["gaussians", "nerf"])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, representation):
    args = dict(
        prompt="a red cone",
        representation=representation,
        steps=6,
        seed=3,
        progress=False,
        overrides=FAST[representation] + ["trainer.checkpoint_every=2", "trainer.preview_every=0"],
        log=lambda s: None,
    )
    full = generate(out=str(tmp_path / "a"), **args)
    cut = generate(out=str(tmp_path / "b"), stop_at=5, **args)  # "killed" after step 5; last checkpoint at 4
    assert cut.trainer.step == 5
    resumed = generate(resume=cut.dir, progress=False, log=lambda s: None)
    assert resumed.trainer.step == 6
    a, b = final_tensors(full), final_tensors(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (full.dir / "renders" / "views.png").is_file() and (full.dir / "config.yaml").is_file()
    assert (full.dir / "log.jsonl").read_text().count("\n") >= 1


def test_same_seed_same_result_different_seed_differs(tmp_path):
    args = dict(
        prompt="a blue cube",
        representation="gaussians",
        steps=2,
        progress=False,
        log=lambda s: None,
        overrides=FAST["gaussians"] + ["trainer.checkpoint_every=0", "trainer.preview_every=0"],
    )
    one = generate(out=str(tmp_path / "1"), seed=1, **args).model.means.detach()
    two = generate(out=str(tmp_path / "2"), seed=1, **args).model.means.detach()
    three = generate(out=str(tmp_path / "3"), seed=2, **args).model.means.detach()
    assert torch.equal(one, two) and not torch.equal(one, three)


def test_learning_rate_schedules_reach_the_optimiser(tmp_path):
    """lr_means decays linearly to 0 at step 3: the positions stop moving then, while colours go on changing."""
    args = dict(
        prompt="a blue cube",
        representation="gaussians",
        seed=0,
        progress=False,
        log=lambda s: None,
        overrides=FAST["gaussians"]
        + [
            "gaussians.densify_from=100",
            "trainer.checkpoint_every=0",
            "trainer.preview_every=0",
            "gaussians.lr_means=[0,0.01,0.0,3]",
        ],
    )
    at3 = generate(out=str(tmp_path / "3"), steps=3, **args).model
    at5 = generate(out=str(tmp_path / "5"), steps=5, **args)
    assert at5.trainer.optimizer.param_groups[0]["lr"] == 0.0
    assert torch.equal(at3.means, at5.model.means) and not torch.equal(at3.sh, at5.model.sh)
    at1 = generate(out=str(tmp_path / "1"), steps=1, **args).model
    assert not torch.equal(at1.means, at3.means)  # the means kept moving while their learning rate was above 0
    with pytest.raises(ThreeDistillError, match=r"gaussians.lr_means: expected a number or a schedule"):
        generate(
            prompt="a blue cube", out=str(tmp_path / "bad"), progress=False, overrides=["gaussians.lr_means=[1,2]"]
        )


def test_bad_generate_inputs(tmp_path):
    with pytest.raises(ThreeDistillError, match="prompt is empty"):
        generate(prompt="  ", out=str(tmp_path), progress=False)
    with pytest.raises(
        UnknownNameError, match="unknown representation 'voxels'; known: gaussians, mesh, nerf, triplane"
    ):
        generate(prompt="a red cube", representation="voxels", out=str(tmp_path), progress=False)
    with pytest.raises(UnknownNameError, match="unknown guidance 'sdx'"):
        generate(prompt="a red cube", guidance="sdx", out=str(tmp_path), progress=False)
    with pytest.raises(ThreeDistillError, match="not a run directory"):
        generate(resume=tmp_path / "nothing", progress=False)


def test_ground_truth_scores_perfectly_against_itself():
    cams = eval_cameras()
    gt = render_toy("duck", "yellow", cams, 32, 32)
    metrics = compare(gt, "yellow", "duck", 32)
    assert metrics["silhouette_iou"] == 1.0 and metrics["colour_error"] == 0.0
    assert metrics["front_back_correct"] == 1.0 and metrics["front_back_views"] == 12


def test_a_janus_result_is_caught():
    """A duck with a second head on its back (front-back mirrored views) fails the front/back check."""
    cams = eval_cameras()
    from threedistill.cameras import orbit_cameras

    mirror_cams = orbit_cameras((180.0 - cams.azimuth).tolist(), cams.elevation.tolist(), 2.9, 40.0)
    janus = render_toy("duck", "yellow", mirror_cams, 32, 32)
    janus = {"rgb": janus["rgb"].flip(-1), "alpha": janus["alpha"].flip(-1)}
    assert compare(janus, "yellow", "duck", 32)["front_back_correct"] == 0.0


def test_non_toy_prompt_has_no_ground_truth():
    from threedistill.evaluation.ground_truth import subject_of

    with pytest.raises(ThreeDistillError, match="no ground truth for prompt 'a photo of a cat'"):
        subject_of("a photo of a cat")
