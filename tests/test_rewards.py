"""Reward models (guidance_spec section 10) on tiny random-weight models built here from configs: the gradient
reaches every view, swapping the VLM's Yes/No ids flips it exactly, the torch preprocessing equals the stock
Qwen2-VL processor's, and the reward term trains with any method."""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration

from threedistill.errors import ThreeDistillError
from threedistill.rewards import RewardConfig, load_reward
from threedistill.rewards.reference import ReferenceConfig
from threedistill.rewards.vlm import patchify

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>", "[UNK]"]  # fmt: skip
WORDS = (
    "You are a helpful assistant . system user These 1 2 3 4 views of one 3D object , 90 degrees apart Do they "
    "show red blue cone duck with consistent shape seen from different sides ( no second face broken or floating "
    "parts ) ? Answer Yes No"
).split()


def word_tokenizer(folder, **special) -> dict:
    vocab = {w: i for i, w in enumerate(SPECIAL + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", **special).save_pretrained(folder)
    return vocab


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen2-vl")
    vocab = word_tokenizer(folder, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, eos_token_id=None,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    vocab = word_tokenizer(folder, pad_token="<|endoftext|>")
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=None, eos_token_id=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(folder)
    return folder


def views(k: int = 4, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(k, 3, size, size, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def gradient(reward, images, prompt="a red cone") -> tuple[float, torch.Tensor]:
    score = reward.score(images, prompt)
    (grad,) = torch.autograd.grad(score, images)
    return float(score.detach()), grad


def test_the_vlm_reward_reaches_every_view_and_swapping_yes_and_no_flips_it_exactly(tiny_vlm):
    reward = load_reward(RewardConfig(name="vlm", model=str(tiny_vlm)))
    swapped = load_reward(RewardConfig(name="vlm", model=str(tiny_vlm), yes="No", no="Yes"))
    images = views()
    score, grad = gradient(reward, images)
    flipped_score, flipped_grad = gradient(swapped, images)
    per_view = grad.flatten(1).norm(dim=1)
    assert torch.isfinite(grad).all() and (per_view > 0).all()  # no view cut off the graph (spec 10.6)
    assert flipped_score == -score and torch.equal(flipped_grad, -grad)
    assert reward.yes_id != reward.no_id


def test_the_torch_pixel_values_equal_the_stock_qwen2_vl_processors(tiny_vlm):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image = torch.rand(3, 56, 84, generator=torch.Generator().manual_seed(1))
    stock = Qwen2VLImageProcessorPil(do_resize=False, do_rescale=False)
    expected = stock(images=[image.permute(1, 2, 0).numpy()], return_tensors="np", input_data_format="channels_last")
    reward = load_reward(RewardConfig(name="vlm", model=str(tiny_vlm)))
    pixels, grids = reward.pixel_values(image[None])  # 56 x 84: already multiples of 28, no resize
    assert grids.tolist() == expected["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert np.allclose(pixels.numpy(), expected["pixel_values"], atol=1e-5)


def test_patchify_keeps_every_pixel_once_per_frame():
    pixels = torch.arange(3 * 28 * 56, dtype=torch.float32).reshape(3, 28, 56)
    patches, grid = patchify(pixels, 14, 2, 2)
    assert grid == (1, 2, 4) and patches.shape == (8, 3 * 2 * 14 * 14)
    assert sorted(patches.reshape(-1).tolist()) == sorted(pixels.reshape(-1).tolist() * 2)


def test_the_clip_reward_pulls_every_view_and_a_visual_prompt_scores_itself_highest(tiny_clip, tmp_path):
    import imageio.v3 as iio

    reward = load_reward(RewardConfig(name="clip", model=str(tiny_clip)))
    images = views(3, 48)
    score, grad = gradient(reward, images)
    assert -1 <= score <= 1 and torch.isfinite(grad).all() and (grad.flatten(1).norm(dim=1) > 0).all()
    picture = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "front.png", picture)
    visual = load_reward(RewardConfig(name="clip", model=str(tiny_clip), visual_prompt=str(tmp_path / "front.png")))
    same = torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 255
    assert float(visual.score(same, "ignored")) == pytest.approx(1.0, abs=1e-5)
    assert float(visual.score(images.detach(), "ignored")) < 0.999


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: RewardConfig(name="magic", model=str(d)), "unknown reward 'magic'; known: clip, critic, orient"),
        (lambda d: RewardConfig(name="vlm"), "reward vlm needs reward.model=DIR"),
        (lambda d: RewardConfig(name="clip", model=str(d), views=0), "reward.views, reward.resolution"),
        (lambda d: RewardConfig(name="clip", model=str(d), elevation=[30, 0]), "reward.elevation must be [low, high]"),
        (lambda d: ReferenceConfig(image="auto", auto_candidates=0), "reference.auto_candidates must be at least"),
        (lambda d: load_reward(RewardConfig(name="vlm", model=str(d))), "holds a clip model"),
        (lambda d: load_reward(RewardConfig(name="clip", model=str(d / "nothing"))), "is not a local CLIP directory"),
    ],
)
def test_bad_reward_settings_are_one_line_errors(tiny_clip, make, fragment):
    with pytest.raises(ThreeDistillError, match=None) as err:
        make(tiny_clip)
    assert fragment in str(err.value) and "\n" not in str(err.value)


FAST = ["gaussians.num_points=200", "trainer.batch_size=1", "trainer.resolution=16", "trainer.preview_every=0",
        "trainer.checkpoint_every=0", "trainer.log_every=1", "export=[]", "device=cpu"]  # fmt: skip


def test_a_run_with_a_reward_adds_the_named_term_every_n_steps_and_trains_on_it(tiny_clip, tmp_path):
    import json

    from safetensors.torch import load_file

    from threedistill.workflows.generate import generate

    rewarded = FAST + ["reward.name=clip", f"reward.model={tiny_clip}", "reward.every=2", "reward.resolution=32"]
    tensors = {}
    for name, overrides in (("plain", FAST), ("rewarded", rewarded)):
        run = generate(
            prompt="a red cone", steps=4, seed=0, out=str(tmp_path / name), overrides=overrides, progress=False,
            log=lambda s: None,
        )  # fmt: skip
        tensors[name] = load_file(str(next((run.dir / "checkpoints").glob("step_*.safetensors"))))
    logs = [json.loads(line) for line in (run.dir / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logs if "loss_reward" in row] == [2, 4]
    assert all(-1 <= row["loss_reward"] <= 1 for row in logs if "loss_reward" in row)  # -cosine
    assert not torch.equal(tensors["plain"]["model.means"], tensors["rewarded"]["model.means"])


def test_a_bad_reward_key_is_a_one_line_error_from_the_command_line(tmp_path):
    from test_cli import assert_one_line_error, t3d

    result = t3d("generate", "--prompt", "a red cone", "reward.name=magic", "reward.model=/x", cwd=tmp_path)
    assert_one_line_error(result, "unknown reward 'magic'; known: clip, critic, orient, vlm")


def test_reference_images_give_their_mask_from_alpha_or_from_a_plain_background(tmp_path):
    import imageio.v3 as iio

    from threedistill.rewards.reference import read_rgba

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3], rgba[5:15, 10:20] = 255, (200, 0, 0, 255)  # a red square on transparent white
    iio.imwrite(tmp_path / "a.png", rgba)
    iio.imwrite(tmp_path / "b.png", rgba[..., :3])  # the same on an opaque white background
    for name in ("a.png", "b.png"):
        rgb, mask = read_rgba(tmp_path / name)
        assert rgb.shape == (3, 20, 30) and mask.shape == (1, 20, 30)
        assert mask.sum() == 100 and mask[0, 5:15, 10:20].all()
        assert torch.allclose(rgb[:, 10, 15], torch.tensor([200 / 255, 0.0, 0.0]))


def test_a_reference_image_is_matched_at_the_front_camera(tmp_path):
    """The toy duck's front view as the reference (an oracle image): the run learns to match it there, and the
    term is logged as loss_reference every step."""
    import json

    import imageio.v3 as iio

    from threedistill.rewards.reference import ReferenceConfig, ReferenceTerm, read_rgba
    from threedistill.toyworld.render import render_toy_view
    from threedistill.workflows.generate import generate

    rgb = render_toy_view("red duck", 0.0, 15.0, resolution=32)
    alpha = render_toy_view("red duck", 0.0, 15.0, resolution=32, what="alpha")[:1]
    iio.imwrite(tmp_path / "duck.png", (torch.cat([rgb, alpha]).permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    overrides = FAST + [f"reference.image={tmp_path / 'duck.png'}", "reference.resolution=32"]
    run = generate(
        prompt="a red duck", steps=30, seed=0, out=str(tmp_path / "r"), overrides=overrides, progress=False,
        log=lambda s: None,
    )  # fmt: skip
    logs = [json.loads(line) for line in (run.dir / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logs if "loss_reference" in row] == list(range(1, 31))
    term = ReferenceTerm(*read_rgba(tmp_path / "duck.png"), ReferenceConfig(resolution=32))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        after = float(term.loss(run.model, gen, "a red duck"))
    assert after < 0.5 * logs[0]["loss_reference"]  # the front view now matches the image


def test_an_automatic_reference_is_drawn_from_the_prior_once_and_kept_with_the_run(tmp_path):
    from threedistill.workflows.generate import generate

    overrides = FAST + ["reference.image=auto", "reference.auto_steps=4", "reference.resolution=16"]
    run = generate(
        prompt="a red cone", steps=2, seed=0, out=str(tmp_path / "r"), overrides=overrides, progress=False,
        log=lambda s: None,
    )  # fmt: skip
    assert (run.dir / "reference.png").is_file()
    before = (run.dir / "reference.png").read_bytes()
    generate(resume=run.dir, progress=False, log=lambda s: None)  # a resumed run reads it back
    assert (run.dir / "reference.png").read_bytes() == before


def test_the_auto_reference_keeps_the_candidate_its_judge_scores_highest(tmp_path):
    """Best of n (VP3D's visual prompt): n front views drawn, the judge's scores saved, the highest kept; the kept
    image is the saved candidate's and scores what was saved."""
    import json

    from threedistill.priors import load_prior
    from threedistill.rewards.reference import ReferenceConfig, draw_reference, judge_candidates, read_rgba

    prior = load_prior("toyworld")
    cfg = ReferenceConfig(image="auto", auto_steps=4, auto_candidates=3)
    image = draw_reference(prior, "a red duck", cfg, seed=0, out_dir=tmp_path, log=lambda s: None)
    saved = json.loads((tmp_path / "reference.json").read_text())
    assert saved["judge"] == "toyworld-clip, then the prior's front/back margin" and len(saved["scores"]) == 3
    assert saved["kept"] == int(np.argmax(saved["scores"]))
    assert len(set(saved["clip"])) == 3  # three different draws
    best_clip = max(saved["clip"])
    assert saved["clip"][saved["kept"]] >= best_clip - 0.05  # the CLIP gate
    gated = [m for m, c in zip(saved["front_margin"], saved["clip"]) if c >= best_clip - 0.05]
    assert saved["front_margin"][saved["kept"]] == max(gated)
    grid = read_rgba(tmp_path / "reference_candidates.png")[0]  # the candidates, one row each
    size = image.shape[-1]
    assert grid.shape[-2:] == (3 * size, size)
    kept = grid[:, saved["kept"] * size : (saved["kept"] + 1) * size]
    assert torch.allclose(kept, image, atol=1 / 255 + 1e-6)
    clip_only, details = judge_candidates(image[None, None], "a red duck")
    assert details["judge"] == "toyworld-clip"
    assert float(clip_only[0]) == pytest.approx(saved["clip"][saved["kept"]], abs=1e-5)


def test_the_prior_tells_a_true_front_view_from_a_back_view():
    """The 2D judge's view margin (the prior as a zero-shot classifier of its own view words) on the toy world's
    true views: positive for the front (and 20 degrees off it), negative for the back."""
    from threedistill.priors import load_prior
    from threedistill.rewards.reference import front_margin
    from threedistill.toyworld.render import render_toy_view

    prior = load_prior("toyworld")
    for subject in ("red duck", "blue robot"):
        views = torch.stack([render_toy_view(subject, a, 15.0, resolution=32) for a in (0.0, 20.0, 180.0, 200.0)])
        margin = front_margin(prior, views, f"a {subject}")
        assert (margin[:2] > 0).all() and (margin[2:] < 0).all(), (subject, margin)


def test_one_auto_candidate_is_the_priors_own_front_view():
    from threedistill.priors import load_prior
    from threedistill.priors.sampling import sample_images
    from threedistill.rewards.reference import ReferenceConfig, draw_reference

    prior = load_prior("toyworld")
    cfg = ReferenceConfig(image="auto", auto_steps=4, auto_candidates=1)
    image = draw_reference(prior, "a red cone", cfg, seed=3, log=lambda s: None)
    direct = sample_images(prior, ["a red cone, front view"], steps=4, guidance_scale=cfg.auto_guidance, seed=3)[0]
    assert torch.equal(image, direct.cpu())


def test_the_reference_judges_prefer_the_right_object_and_one_consistent_shape():
    """The CLIP judge (single front views) ranks the prompt's object first; the critic judge (sets of 4 views, a
    multi-view prior's candidates) ranks the true orbit above a wrong object and above a front copied onto the
    back (Janus)."""
    from threedistill.rewards.reference import judge_candidates
    from threedistill.toyworld.render import render_toy_view

    def views(subject, azimuths):
        return torch.stack([render_toy_view(subject, a, 15.0, resolution=32) for a in azimuths])

    fronts = torch.stack([views(s, [0.0]) for s in ("red duck", "blue cube", "green torus")])
    scores, _ = judge_candidates(fronts, "a red duck")
    assert int(scores.argmax()) == 0
    sets = torch.stack([views("red duck", [0, 90, 180, 270]), views("blue cube", [0, 90, 180, 270]),
                        views("red duck", [0, 90, 0, 270])])  # fmt: skip
    scores, _ = judge_candidates(sets, "a red duck")
    assert scores[0] > scores[1] and scores[0] > scores[2]


def test_the_embedded_judges_leave_prompts_outside_their_vocabulary_alone():
    """A real prior's prompt ("a hamburger") is not judged by the toy CLIP or critic: sets keep their first draw,
    single images are judged by the prior's front/back margin alone."""
    from threedistill.priors import load_prior
    from threedistill.rewards.reference import judge_candidates

    images = torch.rand(3, 1, 3, 32, 32)
    scores, details = judge_candidates(images, "a hamburger")
    assert details["judge"].startswith("none") and not scores.any()
    scores, details = judge_candidates(torch.rand(2, 4, 3, 32, 32), "a hamburger, front view")
    assert details["judge"].startswith("none") and not scores.any()
    scores, details = judge_candidates(images, "a hamburger", load_prior("toyworld"))
    assert details["judge"] == "the prior's front/back margin" and details["clip"] is None
    assert scores.tolist() == details["front_margin"]


def test_bench_reward_says_whether_the_auto_reference_shows_the_front(tmp_path):
    from threedistill.bench.reward_bench import reference_front
    from threedistill.toyworld.render import render_toy_view
    from threedistill.utils.images import save_image

    assert reference_front(tmp_path, "red duck") is None  # no auto reference in this run
    for azimuth, expected in ((0.0, 1.0), (180.0, 0.0), (20.0, 1.0)):
        save_image(render_toy_view("red duck", azimuth, 15.0, resolution=32), tmp_path / "reference.png")
        assert reference_front(tmp_path, "red duck") == expected


def test_a_missing_visual_prompt_is_a_one_line_error(tmp_path):
    from test_cli import assert_one_line_error, t3d

    result = t3d("generate", "--prompt", "a red cone", "--visual-prompt", "/nonexistent.png", cwd=tmp_path)
    assert_one_line_error(result, "reference.image '/nonexistent.png' is not an image file (or auto)")


def test_bench_reward_writes_its_janus_table(tmp_path):
    from test_cli import t3d

    out = tmp_path / "reward.md"
    result = t3d(
        "bench", "reward", "--variants", "none,visual-gt,orient", "--objects", "duck", "--colours", "red",
        "--seeds", "1", "--methods", "sds", "--representation", "gaussians", "--steps", "2", "--out", str(out),
        "--runs-dir", str(tmp_path / "runs"), *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = out.read_text()
    for variant in ("none", "visual-gt", "orient"):
        row = next(line for line in table.splitlines() if line.startswith(f"| sds | gaussians | {variant} | 1 |"))
        assert 0.0 <= float(row.split(" | ")[6]) <= 1.0  # a Janus rate over the front/back views
        assert (row.split(" | ")[7] == "-") == (variant != "orient")  # turned: only the checked runs count
    assert "Turned: the runs the orientation check turned round" in table
    orient = next(line for line in table.splitlines() if line.startswith("| sds | gaussians | orient |"))
    assert orient.split(" | ")[7] in ("0", "1")  # the check ran at the last step and may have turned the run
    assert (tmp_path / "runs" / "references" / "red_duck_front.png").is_file()
    assert "visual-gt uses the true front view: an oracle" in table
    # --resume with a second seed: seed 0's finished run is read back (no second run folder), seed 1 runs
    first = next(line for line in result.stdout.splitlines() if " none " in line and "seed 0" in line)
    again = t3d(
        "bench", "reward", "--variants", "none", "--objects", "duck", "--colours", "red", "--seeds", "2",
        "--methods", "sds", "--representation", "gaussians", "--steps", "2", "--out", str(tmp_path / "again.md"),
        "--runs-dir", str(tmp_path / "runs"), "--resume", *FAST,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    none = tmp_path / "runs" / "sds-gaussians" / "none"
    assert [len(list(none.glob(f"seed{k}/a-red-duck/*/reward_row.json"))) for k in (0, 1)] == [1, 1]
    assert first.rsplit(" ", 1)[0] in again.stdout  # the same IoU and Janus, read back


def test_guidance_bench_runs_each_method_with_each_reward(tmp_path):
    """`t3d bench guidance --rewards none,critic`: one row per method and reward, the reward's runs apart, the
    critic's loss term logged only in its runs, a reward column in the report."""
    import json
    from pathlib import Path

    from threedistill.bench.guidance_bench import markdown_report, run_guidance_bench, summarise

    seen = []
    rows = run_guidance_bench(
        ["sds"], ["a red duck"], 1, ["gaussians"], tmp_path, FAST[:-2], steps=2, log=lambda s: None,
        on_row=lambda rs: seen.append(len(rs)), rewards=("none", "critic"),
    )  # fmt: skip
    assert [r["reward"] for r in rows] == ["none", "critic"] and seen[-1] == 2
    assert f"{tmp_path}/reward-critic/" in rows[1]["run_dir"] and "reward-" not in rows[0]["run_dir"]
    logged = [[json.loads(line) for line in (Path(r["run_dir"]) / "log.jsonl").read_text().splitlines()] for r in rows]
    assert not any("loss_reward" in e for e in logged[0]) and any("loss_reward" in e for e in logged[1])
    assert [(s["guidance"], s["reward"]) for s in summarise(rows)] == [("sds", "none"), ("sds", "critic")]
    report = markdown_report(rows, "# header")
    assert "| representation | method | reward | runs |" in report and "| gaussians | sds | critic | 1 |" in report
    plain = markdown_report(rows[:1], "# header")
    assert "| reward |" not in plain and "| gaussians | sds | 1 |" in plain
