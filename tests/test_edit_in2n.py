"""`t3d edit --method in2n`: Instruct-NeRF2NeRF's Iterative Dataset Update (guidance_spec.md 12.2)."""

import json

import pytest
import torch
from test_fit_edit import EDIT_FAST, assert_region_only_edit, cube_region

from threedistill.cameras import orbit_cameras
from threedistill.editing.in2n import EditDataset, In2NConfig, In2NObjective, ip2p_eps, sdedit
from threedistill.errors import ConfigError
from threedistill.workflows.edit import edit

IN2N_FAST = EDIT_FAST + ["method=in2n", "in2n.n_views=4", "in2n.edit_every=2", "in2n.edit_denoise_steps=4"]


def test_sdedit_changes_an_image_less_at_smaller_edit_timesteps(toy_prior):
    """Spec 12.2: the edit's deviation from its input shrinks monotonically as T_e -> 0 (averaged over seeds)."""
    image = torch.ones(4, 3, 32, 32)
    image[:, :, 8:24, 10:22] = torch.tensor([0.8, 0.1, 0.1])[:, None, None]  # a red block on white
    cond, uncond = toy_prior.encode_prompt(["a blue cube"] * 4), toy_prior.encode_prompt([""] * 4)
    deviation = [
        float(
            (sdedit(toy_prior, image, cond, uncond, t, 10, 2.0, torch.Generator().manual_seed(0)) - image).abs().mean()
        )
        for t in (20, 300, 800)
    ]
    assert deviation[0] < deviation[1] < deviation[2], deviation
    assert deviation[0] < 0.05, deviation


def test_ip2p_three_branch_guidance_collapses_to_the_full_branch_at_unit_scales():
    """Spec 12.2: s_T = s_I = 1 gives eps(y, I0); s_T = s_I = 0 gives eps(0, 0); s_I alone mixes in the image."""
    full, image, none = torch.randn(3, 2, 4, 8, 8, dtype=torch.float64)
    assert torch.allclose(ip2p_eps(full, image, none, 1.0, 1.0), full, rtol=0, atol=1e-12)
    assert torch.equal(ip2p_eps(full, image, none, 0.0, 0.0), none)
    assert torch.allclose(ip2p_eps(full, image, none, 0.0, 1.0), image, rtol=0, atol=1e-12)


class _Region:
    """Stand-in region views: camera i looks from azimuth 10 i; its 'render' is filled with that azimuth."""

    image_size = (4, 4)

    def __init__(self):
        self.original = self

    def cameras(self, generator, n):
        return orbit_cameras([10.0 * i for i in range(n)], 0.0, 3.0)

    def render(self, cams, h, w):
        return {"rgb": cams.azimuth[:, None, None, None].expand(-1, 3, h, w) / 1000 + 0.0}


class _Editor:
    """Stand-in 2D editor: the render plus the number of edits so far."""

    edits = 0

    class prior:
        num_train_timesteps = 1000

    def prompt_state(self, prompt):
        return None

    def __call__(self, renders, originals, prompt, t_edit, generator):
        assert 300 <= t_edit <= 700
        self.edits += 1
        return renders + self.edits


def test_dataset_update_replaces_the_scheduled_images_in_turn_every_edit_every_steps():
    region, gen = _Region(), torch.Generator().manual_seed(0)
    dataset = EditDataset(region, 5)
    objective = In2NObjective(In2NConfig(n_views=5, edit_every=3, edit_count=2), dataset, region.render, _Editor())
    dataset.draw(gen)
    assert torch.equal(dataset.images, dataset.originals)
    batch = dataset.sample(gen, 2)
    cams, targets = batch.cameras, batch.targets
    assert batch.size == (4, 4)
    expected, editor = {3: [0, 1], 6: [2, 3], 9: [4, 0], 12: [1, 2]}, objective.editor
    for call in range(1, 13):
        before = dataset.images.clone()
        out = objective(targets["images"].clone().requires_grad_(True), cams, None, call, gen, images=targets["images"])
        changed = sorted((before != dataset.images).flatten(1).any(1).nonzero().flatten().tolist())
        assert changed == sorted(expected.get(call, [])), (call, changed)
        if call in expected:
            assert int(out["edited_view"]) == expected[call][0]
            for k, i in enumerate(expected[call]):  # by the edit of the render at its own camera, in order
                edit_number = editor.edits - len(changed) + k + 1
                assert torch.equal(dataset.images[i], region.render(dataset.cams[i], 4, 4)["rgb"][0] + edit_number)
    restored = In2NObjective(
        In2NConfig(n_views=5, edit_every=3, edit_count=2), EditDataset(region, 5), region.render, _Editor()
    )
    restored.dataset.draw(torch.Generator().manual_seed(0))
    restored.load_checkpoint_tensors(objective.checkpoint_tensors())
    assert torch.equal(restored.dataset.images, dataset.images) and (restored.calls, restored.cursor) == (12, 3)


def test_in2n_edit_changes_only_the_region_and_turns_it_blue(captured, tmp_path):
    assert_region_only_edit(captured, tmp_path, IN2N_FAST)


def test_interrupted_in2n_edit_resumes_to_the_same_parameters(captured, tmp_path):
    scene, run = captured
    args = dict(
        source=str(run.dir),
        prompt="a blue cube",
        region=cube_region(scene),
        steps=9,
        seed=1,
        progress=False,
        log=lambda s: None,
        overrides=IN2N_FAST + ["trainer.checkpoint_every=4"],
    )
    full = edit(out=str(tmp_path / "a"), **args)
    cut = edit(out=str(tmp_path / "b"), stop_at=7, **args)  # resumes from step 4: edits at 6 and 8 are redone
    resumed = edit(resume=cut.dir, progress=False, log=lambda s: None)
    assert resumed.trainer.step == 9
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert torch.equal(full.trainer.guidance.dataset.images, resumed.trainer.guidance.dataset.images)


def _tiny_ip2p(root):
    """A tiny randomly initialised InstructPix2Pix-shaped pipeline: the tiny SD with an 8-channel UNet."""
    from diffusers import UNet2DConditionModel
    from tiny_pipelines import build_tiny_sd

    build_tiny_sd(root)
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8,
        in_channels=8,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    ).save_pretrained(root / "unet")
    index = json.loads((root / "model_index.json").read_text())
    (root / "model_index.json").write_text(
        json.dumps({**index, "_class_name": "StableDiffusionInstructPix2PixPipeline"})
    )
    return root


def test_in2n_with_instruct_pix2pix_runs_and_rejects_other_pipelines(captured, tmp_path):
    from threedistill.priors import embedded_prior_path

    scene, run = captured
    quiet = dict(
        source=str(run.dir),
        prompt="make it blue",
        region=cube_region(scene),
        steps=4,
        progress=False,
        log=lambda s: None,
        out=str(tmp_path),
    )
    ip2p = _tiny_ip2p(tmp_path / "ip2p")
    result = edit(**quiet, overrides=IN2N_FAST + [f"guidance.instruct_pix2pix={ip2p}", "guidance.guidance_scale=7.5"])
    assert result.trainer.step == 4 and result.trainer.guidance.editor.prior.channels == 8
    assert not torch.equal(result.trainer.guidance.dataset.images, result.trainer.guidance.dataset.originals)
    for bad in (embedded_prior_path(), tmp_path / "nope"):
        with pytest.raises(ConfigError, match="not a diffusers InstructPix2Pix pipeline") as info:
            edit(**quiet, overrides=IN2N_FAST + [f"guidance.instruct_pix2pix={bad}"])
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="in2n only"):
        edit(**quiet, overrides=EDIT_FAST + [f"guidance.instruct_pix2pix={ip2p}"])
    with pytest.raises(ConfigError, match="edit_count"):
        edit(**quiet, overrides=IN2N_FAST + ["in2n.edit_count=5"])
