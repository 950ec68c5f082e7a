"""Converting the official MVDream checkpoint (issue #29): a tiny random model of MVDream's architecture is written
in the official LDM layout (`model.diffusion_model.*`, `camera_embed.*`) through a key map of this test's own,
converted, loaded as a prior and compared weight by weight and output by output; MVDream's camera convention on
known cameras; the one-line errors."""

from __future__ import annotations

import json
import math
import pickle
import shutil

import pytest
import torch
from tiny_pipelines import build_tiny_sd

from threedistill.cameras import orbit_cameras
from threedistill.errors import PriorLoadError, ThreeDistillError
from threedistill.priors import load_prior
from threedistill.priors.multiview import camera_embedding, make_multiview
from threedistill.priors.mvdream_convert import convert_mvdream

# SD 2.1-base's UNet in miniature (2 resnets per level, as SD's num_res_blocks): attention at the first level, none
# at the last, linear projections in and out of the transformers (use_linear_in_transformer), heads of one width.
UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2,
    cross_attention_dim=32,
    attention_head_dim=(2, 4),
    use_linear_projection=True,
)
RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0"}
RESNET |= {"conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "class_embedding.linear_1": "camera_embed.0",
    "class_embedding.linear_2": "camera_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def ldm_key(key: str, config: dict = UNET) -> str:
    """The name MVDream's MultiViewUNetModel gives a diffusers UNet2DConditionModel weight (written from the LDM
    UNet's layout: input_blocks 1 + level * (layers + 1) + i, a downsampler last in its level; output_blocks
    level * (layers + 1) + i from the bottom; the middle block resnet, transformer, resnet)."""
    parts, layers = key.split("."), config["layers_per_block"]
    for head, name in TOP.items():
        if key.startswith(head + "."):
            return f"{name}.{parts[-1]}"
    if parts[0] in ("down_blocks", "up_blocks"):
        level, kind, i, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        base = level * (layers + 1) + (1 if parts[0] == "down_blocks" else 0)
        if kind == "downsamplers":
            return f"input_blocks.{base + layers}.0.op.{rest[-1]}"
        if kind == "upsamplers":  # after the resnet and, where the level has one, the transformer
            has_attention = config["up_block_types"][level].startswith("CrossAttn")
            return f"output_blocks.{base + layers}.{2 if has_attention else 1}.conv.{rest[-1]}"
        block = f"{'input_blocks' if parts[0] == 'down_blocks' else 'output_blocks'}.{base + i}"
    else:  # mid_block.resnets.0 / attentions.0 / resnets.1
        kind, i, rest = parts[1], int(parts[2]), parts[3:]
        block = f"middle_block.{1 if kind == 'attentions' else 2 * i}"
        if kind == "attentions":
            return f"{block}.{'.'.join(rest)}"
        return f"{block}.{RESNET.get(rest[0], rest[0])}.{rest[-1]}"
    if kind == "resnets":
        return f"{block}.0.{RESNET.get(rest[0], rest[0])}.{rest[-1]}"
    return f"{block}.1.{'.'.join(rest)}"  # a transformer: the same names inside


# stabilityai/stable-diffusion-2-1-base's unet/config.json (the entries that shape the weights)
SD21_BASE_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    layers_per_block=2,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
)


def test_the_full_size_sd21_base_layout_converts_key_for_key():
    """sd-v2.1-base-4view's UNet at full size, as shapes only (meta tensors): every weight of the 4-level
    architecture finds its place, the camera MLP is Linear(16, 1280), Linear(1280, 1280)."""
    from threedistill.priors.mvdream_convert import convert_unet, expected_shapes

    config = SD21_BASE_UNET | dict(class_embed_type="projection", projection_class_embeddings_input_dim=16)
    shapes = expected_shapes(config)  # a diffusers UNet of this config, built on the meta device
    ldm = {
        "model.diffusion_model." + ldm_key(k, SD21_BASE_UNET): torch.empty(s, device="meta") for k, s in shapes.items()
    }
    assert len(ldm) == len(shapes) and ldm["model.diffusion_model.camera_embed.0.weight"].shape == (1280, 16)
    converted = convert_unet(ldm, config, "sd-v2.1-base-4view.pt")
    assert {k: v.shape for k, v in converted.items()} == shapes
    assert 860e6 < sum(v.numel() for v in converted.values()) < 875e6


def mvdream_cameras(azimuths, elevation: float) -> torch.Tensor:
    """MVDream's `get_camera(len(azimuths), elevation, ...)` condition, from its definition (camera_utils.py):
    an OpenGL look-at camera at (cos e sin a, sin e, cos e cos a) with +Y up, its world turned to Blender's
    (x, y, z) -> (x, -z, y), flattened row by row."""
    rows = []
    for a in azimuths:
        a, e = math.radians(a), math.radians(elevation)
        eye = torch.tensor([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)], dtype=torch.float64)
        forward = -eye / eye.norm()
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
        right = right / right.norm()
        up = torch.linalg.cross(right, forward)
        c2w = torch.eye(4, dtype=torch.float64)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, eye
        flip = torch.tensor([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
        rows.append((flip @ c2w).flatten())
    return torch.stack(rows).float()


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A tiny MVDream (random weights, every one moved off its initial value) saved as the official checkpoint
    (a nested state dict with the VAE's and text encoder's keys beside the UNet's) and as safetensors, with the
    SD-2.1-base-shaped base directory it was grown from."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("mvdream")
    base = build_tiny_sd(root / "base")
    shutil.rmtree(base / "unet")
    torch.manual_seed(0)
    UNet2DConditionModel(**UNET).save_pretrained(base / "unet")
    torch.manual_seed(1)
    model = UNet2DConditionModel(**UNET, class_embed_type="projection", projection_class_embeddings_input_dim=16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    ldm = {"model.diffusion_model." + ldm_key(k): v.clone() for k, v in model.state_dict().items()}
    assert len(ldm) == len(model.state_dict())  # the key map is one to one
    others = {"first_stage_model.encoder.conv_in.weight": torch.zeros(2), "cond_stage_model.model.x": torch.ones(1)}
    others |= {"betas": torch.linspace(0, 1, 5)}
    torch.save({"state_dict": ldm | others, "global_step": 12}, root / "sd-v2.1-base-4view.pt")
    save_file(ldm, str(root / "mvdream.safetensors"))
    return {"root": root, "base": base, "model": model, "ldm": ldm}


def _inputs(seed=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 4, 8, 8, generator=gen)
    emb = torch.randn(8, 16, 32, generator=gen)
    return x, torch.tensor([700] * 4 + [150] * 4), emb


def test_converted_checkpoint_loads_with_the_same_weights_and_outputs(official, tmp_path):
    out = convert_mvdream(official["root"] / "sd-v2.1-base-4view.pt", official["base"], tmp_path / "mv", resolution=16)
    prior = load_prior(out)
    assert prior.num_views == 4 and prior.camera_convention == "mvdream" and prior.latent
    assert prior.native_resolution == 16 and "mvdream cameras" in repr(prior)
    original = official["model"].state_dict()
    loaded = prior.unet.state_dict()
    assert loaded.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(loaded[key], value), key
    index = json.loads((out / "model_index.json").read_text())
    assert index["threedistill"]["multiview"] == {"num_views": 4, "camera_convention": "mvdream"}
    assert {p.name for p in out.iterdir()} == {
        "model_index.json",
        "unet",
        "vae",
        "scheduler",
        "text_encoder",
        "tokenizer",
    }

    # The prior's UNet call (our cameras through the MVDream convention) equals the original multi-view network
    # given MVDream's own camera condition for the same views.
    reference = make_multiview(official["model"], 4)
    x, t, emb = _inputs()
    azimuths, elevation = [30.0, 120.0, 210.0, 300.0], 15.0
    cams = orbit_cameras(torch.tensor(azimuths), elevation, 2.5)
    with torch.no_grad(), prior.viewing(cams.c2w):
        got = prior.unet_output(prior.unet, x, t, emb)
        want = reference(
            x, t, encoder_hidden_states=emb, class_labels=mvdream_cameras(azimuths, elevation).repeat(2, 1)
        )
    torch.testing.assert_close(got, want.sample, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the camera condition matters: other cameras, another output
        other = reference(x, t, encoder_hidden_states=emb, class_labels=mvdream_cameras([0.0] * 4, 0.0).repeat(2, 1))
    assert (other.sample - got).abs().max() > 1e-3


def test_safetensors_and_bare_unet_checkpoints_convert_alike(official, tmp_path):
    from safetensors.torch import load_file

    out = convert_mvdream(official["root"] / "mvdream.safetensors", official["base"], tmp_path / "a", resolution=16)
    bare = {k.removeprefix("model.diffusion_model."): v for k, v in official["ldm"].items()}
    torch.save(bare, tmp_path / "bare.pt")
    (tmp_path / "b").mkdir()  # an empty folder may be the output
    out_b = convert_mvdream(tmp_path / "bare.pt", official["base"], tmp_path / "b", resolution=16)
    a = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(out_b / "unet" / "diffusion_pytorch_model.safetensors")
    original = official["model"].state_dict()
    assert a.keys() == b.keys() == original.keys()
    assert all(torch.equal(a[k], original[k]) and torch.equal(b[k], original[k]) for k in a)
    unet_config = json.loads((out / "unet" / "config.json").read_text())
    assert (
        unet_config["class_embed_type"] == "projection" and unet_config["projection_class_embeddings_input_dim"] == 16
    )


def test_our_cameras_map_to_mvdreams_convention():
    """Our orbit camera (azimuth a, elevation e, any distance) is MVDream's get_camera(azimuth_start=a,
    elevation=e): azimuth 0 is the front in both (our +Z, Blender's -Y where a glTF front lands)."""
    azimuths = [0.0, 90.0, 180.0, 270.0]
    ours = camera_embedding(orbit_cameras(torch.tensor(azimuths), 15.0, 3.2).c2w, "mvdream")
    torch.testing.assert_close(ours, mvdream_cameras(azimuths, 15.0), atol=1e-6, rtol=0)
    front = camera_embedding(orbit_cameras(0.0, 0.0, 2.0).c2w, "mvdream").reshape(4, 4)
    torch.testing.assert_close(front[:3, 3], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6, rtol=0)  # on Blender's -Y
    torch.testing.assert_close(front[:3, 1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)  # up is +Z
    torch.testing.assert_close(front[:3, 2], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6, rtol=0)  # looks toward +Y
    right = camera_embedding(orbit_cameras(90.0, 0.0, 2.0).c2w, "mvdream").reshape(4, 4)
    torch.testing.assert_close(right[:3, 3], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)  # our +X stays +X
    plain = camera_embedding(orbit_cameras(0.0, 0.0, 2.0).c2w)  # our own convention: the matrix as it is
    torch.testing.assert_close(plain.reshape(4, 4)[:3, 3], torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(PriorLoadError, match="unknown multiview.camera_convention 'opencv'"):
        camera_embedding(orbit_cameras(0.0, 0.0, 2.0).c2w, "opencv")


def test_unknown_camera_convention_in_a_prior_directory_is_one_line(official, tmp_path):
    out = convert_mvdream(official["root"] / "mvdream.safetensors", official["base"], tmp_path / "mv", resolution=16)
    index = json.loads((out / "model_index.json").read_text())
    index["threedistill"]["multiview"]["camera_convention"] = "blender"
    (out / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(PriorLoadError, match="unknown multiview.camera_convention 'blender'; known: threedistill"):
        load_prior(out)


class Unsafe:
    """Anything but tensors in a checkpoint: unpickling would run code."""


def test_checkpoint_errors_are_one_line(official, tmp_path):
    base = official["base"]
    with pytest.raises(ThreeDistillError, match="checkpoint not found"):
        convert_mvdream(tmp_path / "missing.pt", base, tmp_path / "o")

    torch.save({"state_dict": {"x": torch.ones(1)}, "hook": Unsafe()}, tmp_path / "objects.pt")
    with pytest.raises(PriorLoadError, match=r"pickle of Python objects \(.*Unsafe\).*refused"):
        convert_mvdream(tmp_path / "objects.pt", base, tmp_path / "o")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(PriorLoadError, match="cannot read checkpoint"):
        convert_mvdream(tmp_path / "junk.pt", base, tmp_path / "o")
    with open(tmp_path / "legacy.pt", "wb") as f:  # an old-format pickle of objects: no mmap, still refused
        pickle.dump(Unsafe(), f)
    with pytest.raises(PriorLoadError, match="pickle|cannot read"):
        convert_mvdream(tmp_path / "legacy.pt", base, tmp_path / "o")

    ldm = dict(official["ldm"])
    torch.save({k: v for k, v in ldm.items() if "camera_embed.2" not in k}, tmp_path / "no_camera.pt")
    with pytest.raises(PriorLoadError, match=r"missing model\.diffusion_model\.camera_embed\.2\.weight"):
        convert_mvdream(tmp_path / "no_camera.pt", base, tmp_path / "o")
    torch.save({k: v for k, v in ldm.items() if not k.endswith("time_embed.2.bias")}, tmp_path / "cut.pt")
    with pytest.raises(PriorLoadError, match=r"lacks 1 of its .* model\.diffusion_model\.time_embed\.2\.bias"):
        convert_mvdream(tmp_path / "cut.pt", base, tmp_path / "o")
    key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    torch.save({k: v for k, v in ldm.items() if k != key}, tmp_path / "cut2.pt")
    with pytest.raises(PriorLoadError, match=r"lacks 1 of .*down_blocks\.0\.attentions\.0\.proj_in\.weight"):
        convert_mvdream(tmp_path / "cut2.pt", base, tmp_path / "o")
    torch.save({"vae.x": torch.ones(1)}, tmp_path / "vae_only.pt")
    with pytest.raises(PriorLoadError, match=r"no UNet weights: expected keys model\.diffusion_model\.\*"):
        convert_mvdream(tmp_path / "vae_only.pt", base, tmp_path / "o")
    torch.save(ldm | {"model.diffusion_model.image_embed.w": torch.ones(2)}, tmp_path / "extra.pt")
    with pytest.raises(PriorLoadError, match="no place in an MVDream UNet, e.g. model.diffusion_model.image_embed.w"):
        convert_mvdream(tmp_path / "extra.pt", base, tmp_path / "o")
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_base_and_output_errors_are_one_line(official, tmp_path):
    ckpt = official["root"] / "mvdream.safetensors"
    with pytest.raises(PriorLoadError, match="--base .* is not a directory; expected a local diffusers Stable"):
        convert_mvdream(ckpt, tmp_path / "nowhere", tmp_path / "o")
    bad = tmp_path / "bad"
    shutil.copytree(official["base"], bad)
    shutil.rmtree(bad / "vae")
    with pytest.raises(PriorLoadError, match="the folder vae/ is missing"):
        convert_mvdream(ckpt, bad, tmp_path / "o")
    (bad / "model_index.json").unlink()
    with pytest.raises(PriorLoadError, match="has no model_index.json"):
        convert_mvdream(ckpt, bad, tmp_path / "o")
    other = tmp_path / "other"  # a base whose UNet is not the checkpoint's (another text width)
    shutil.copytree(official["base"], other)
    config = json.loads((other / "unet" / "config.json").read_text())
    (other / "unet" / "config.json").write_text(json.dumps(config | {"cross_attention_dim": 48}))
    with pytest.raises(PriorLoadError, match="do not fit the base's UNet, e.g. .*attn2.to_k.weight"):
        convert_mvdream(ckpt, other, tmp_path / "o")
    v_pred = tmp_path / "v"
    shutil.copytree(official["base"], v_pred)
    sched = json.loads((v_pred / "scheduler" / "scheduler_config.json").read_text())
    (v_pred / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched | {"prediction_type": "v_prediction"}))
    with pytest.raises(PriorLoadError, match="predicts 'v_prediction'"):
        convert_mvdream(ckpt, v_pred, tmp_path / "o")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ThreeDistillError, match="exists and is not empty"):
        convert_mvdream(ckpt, official["base"], full)
    assert (full / "keep.txt").read_text() == "mine"


def test_cli_converts_and_prints_one_line_errors(official, tmp_path, capsys):
    from threedistill.cli import main

    ckpt, base = str(official["root"] / "mvdream.safetensors"), str(official["base"])
    with pytest.raises(SystemExit) as done:
        main(["prior", "convert-mvdream", ckpt, "--base", base, "--out", str(tmp_path / "mv")])
    assert done.value.code in (0, None)
    assert f"use it with --prior {tmp_path / 'mv'}" in capsys.readouterr().out
    assert load_prior(tmp_path / "mv").num_views == 4
    for args, fragment in [
        ([ckpt, "--base", base, "--out", str(tmp_path / "mv")], "exists and is not empty"),
        ([str(tmp_path / "none.pt"), "--base", base, "--out", str(tmp_path / "x")], "checkpoint not found"),
        ([ckpt, "--base", str(tmp_path), "--out", str(tmp_path / "x")], "has no model_index.json"),
    ]:
        with pytest.raises(SystemExit) as failed:
            main(["prior", "convert-mvdream", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert failed.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
