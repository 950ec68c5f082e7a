"""A small CPU prior starts from its cached bundle (priors/bundle.py) without diffusers and transformers, and
gives the same tokens, embeddings, warnings, noise predictions and runs as the full load."""

import os
import subprocess
import sys

import pytest
import torch

from threedistill.priors import load_prior
from threedistill.priors.bundle import LeanTokenizer

PROMPTS = [
    "",
    "a red cone",
    "a red cone, front view",
    "a blue duck, overhead view",
    "a hamburger",
    "A RED cone!!",
    "a red cone a red cone a red cone a red cone a red cone, back view",
]


def test_the_bundles_tokens_embeddings_and_warnings_are_the_full_loads(monkeypatch, tmp_path):
    monkeypatch.setenv("THREEDISTILL_CACHE", str(tmp_path))
    full = load_prior()
    assert "unet" in full.__dict__ and not isinstance(full.tokenizer, LeanTokenizer)
    lean = load_prior()
    assert "unet" not in lean.__dict__ and "text_encoder" not in lean.__dict__
    assert isinstance(lean.tokenizer, LeanTokenizer)
    tok = full.tokenizer
    expected = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert lean.tokenizer.ids(PROMPTS).tolist() == expected
    for text in PROMPTS:
        assert lean.prompt_warnings(text) == full.prompt_warnings(text), text
    assert any("hamburger" in w for w in lean.prompt_warnings("a hamburger"))
    # the full prior traced the encoder for its batch sizes; the lean one runs that graph, or the encoder
    assert torch.equal(full.encode_prompt(PROMPTS), load_prior().encode_prompt(PROMPTS))
    again = load_prior()
    assert torch.equal(again.encode_prompt(PROMPTS), full.encode_prompt(PROMPTS))
    assert "text_encoder" not in again.__dict__  # the batch of 7 was traced by the previous prior
    assert torch.equal(again.alphas_cumprod, full.alphas_cumprod)
    assert (again.native_resolution, again.channels, again.prediction_type) == (32, 3, "epsilon")
    assert again.num_train_timesteps == full.num_train_timesteps


def test_a_lean_prior_loads_a_component_when_something_asks_for_it(monkeypatch, tmp_path):
    monkeypatch.setenv("THREEDISTILL_CACHE", str(tmp_path))
    full = load_prior()
    lean = load_prior()
    assert "scheduler" not in lean.__dict__
    assert lean.scheduler.config.num_train_timesteps == full.scheduler.config.num_train_timesteps
    assert sum(p.numel() for p in lean.unet.parameters()) == sum(p.numel() for p in full.unet.parameters())
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 32, 32, generator=gen), torch.tensor([100, 700])
    emb = full.encode_prompt(["a red cone", ""])
    lean.use_graph = full.use_graph = False
    with torch.no_grad():
        assert torch.equal(lean.predict_noise(x, t, emb), full.predict_noise(x, t, emb))


def test_a_damaged_bundle_is_ignored_and_written_again(monkeypatch, tmp_path):
    monkeypatch.setenv("THREEDISTILL_CACHE", str(tmp_path))
    full = load_prior()
    full.encode_prompt(["a red cone"])
    for f in (tmp_path / "prior-bundles").rglob("*"):
        if f.is_file():
            f.write_text("{ damaged")
    again = load_prior()
    assert "unet" in again.__dict__  # loaded in full, and its meta written again
    assert torch.equal(again.encode_prompt(["a red cone"]), full.encode_prompt(["a red cone"]))
    assert "unet" not in load_prior().__dict__


def test_a_default_generate_from_a_bundle_imports_neither_library_and_ends_bit_identical(tmp_path):
    """Two fresh processes: the first loads the prior in full and writes its bundle, the second starts from it
    without importing diffusers or transformers; both runs end with the same weights (the default config, made
    smaller: one view a step, no Perp-Neg, fewer points). (In bfloat16, where the
    traced UNet gives the direct call's bits; in float32 the warm-up's direct calls load the UNet.)"""
    code = (
        "import sys, hashlib\n"
        "from threedistill.workflows.generate import generate\n"
        "run = generate(prompt='a red cone', steps=25, out=sys.argv[1], progress=False, log=lambda s: None,"
        " page=False, overrides=['native=torch', 'prior_precision=bfloat16', 'export=[]',"
        " 'trainer.preview_every=0', 'trainer.checkpoint_every=0', 'trainer.batch_size=1',"
        " 'guidance.perp_neg=false', 'gaussians.num_points=500'])\n"
        "digest = hashlib.sha256(b''.join(p.detach().contiguous().numpy().tobytes()"
        " for p in run.model.parameters())).hexdigest()\n"
        "print(digest, 'diffusers' in sys.modules, 'transformers' in sys.modules)\n"
    )
    env = {**os.environ, "THREEDISTILL_CACHE": str(tmp_path / "cache")}
    outs = []
    for i in range(2):
        done = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"run{i}")], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(done.stdout.split())
    assert outs[0][0] == outs[1][0]
    assert outs[0][1:] == ["True", "True"] and outs[1][1:] == ["False", "False"]


def test_the_prior_cache_can_be_turned_off(monkeypatch, tmp_path):
    """THREEDISTILL_PRIOR_CACHE=0 (a first run's behaviour, as `t3d bench perf` times it): nothing read or written."""
    from threedistill.priors.graph import GraphUNet

    monkeypatch.setenv("THREEDISTILL_CACHE", str(tmp_path))
    monkeypatch.setenv("THREEDISTILL_PRIOR_CACHE", "0")
    monkeypatch.setattr(GraphUNet, "warmup_calls", 0)
    for _ in range(2):
        prior = load_prior(precision="bfloat16")
        assert "unet" in prior.__dict__ and prior.bundle is None
        with torch.no_grad():
            prior._unet(torch.zeros(2, 3, 32, 32), torch.tensor([5, 500]), prior.encode_prompt(["a red cone", ""]))
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("meta.json"))


def test_a_meta_file_with_wrong_values_is_not_used(monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("THREEDISTILL_CACHE", str(tmp_path))
    load_prior()
    (meta_path,) = (tmp_path / "prior-bundles").rglob("meta.json")
    good = json.loads(meta_path.read_text())
    for key, value in [
        ("alphas_cumprod", ["x"] * good["num_train_timesteps"]),
        ("alphas_cumprod", [0.5] * 3),
        ("sample_size", 0),
        ("unet_parameters", True),
        ("prediction_type", "noise"),
        ("identity", "another"),
    ]:
        meta_path.write_text(json.dumps({**good, key: value}))
        assert "unet" in load_prior().__dict__, key  # loaded in full (which writes the meta again)
    assert "unet" not in load_prior().__dict__


def test_an_unwritable_cache_means_full_loads_and_traces_without_a_word(monkeypatch, tmp_path):
    from threedistill.priors.graph import GraphUNet

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("THREEDISTILL_CACHE", str(blocked / "cache"))  # mkdir fails under a file
    monkeypatch.setattr(GraphUNet, "warmup_calls", 0)
    prior = load_prior(precision="bfloat16")
    assert prior.bundle is None and "unet" in prior.__dict__
    x, t = torch.zeros(2, 3, 32, 32), torch.tensor([5, 500])
    emb = prior.encode_prompt(["a red cone", ""])
    with torch.no_grad():
        fast = prior._unet(x, t, emb)
        prior.use_graph = False
        assert torch.equal(fast, prior._unet(x, t, emb))


def test_a_bad_prior_cache_setting_is_a_one_line_error(monkeypatch):
    from threedistill.errors import ConfigError

    monkeypatch.setenv("THREEDISTILL_PRIOR_CACHE", "maybe")
    with pytest.raises(ConfigError, match="THREEDISTILL_PRIOR_CACHE must be one of .* got 'maybe'"):
        load_prior()
