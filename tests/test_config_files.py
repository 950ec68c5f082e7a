"""Malformed YAML config files (a `--config` file, a resumed run's config.yaml) are one-line errors naming the file
and what is wrong: every file goes through `config.read_yaml`."""

import pytest
from test_cli import assert_one_line_error, t3d

from threedistill.config import load_config, read_yaml
from threedistill.errors import ConfigError
from threedistill.workflows.generate import GenerateConfig


def bomb() -> str:
    """A billion-laughs file: nine levels of nine aliases each."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        name, prev = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


BAD_FILES = {
    "syntax": ("trainer: [1,\n", "not valid YAML (line 2"),
    "python_tag": ('!!python/object/apply:os.system ["echo pwned"]\n', "could not determine a constructor"),
    "alias_bomb": (bomb(), "expansion exceeds"),
    "top_level_list": ("- 1\n- 2\n", "not a list"),
    "top_level_scalar": ("5\n", "not one value"),
    "binary": (bytes(range(256)) * 4, "not UTF-8 text"),
    "duplicate_key": ("seed: 1\nseed: 2\n", "duplicate key seed"),
    "section_as_number": ("trainer: 5\n", "not a subclass of TrainerConfig"),
    "unknown_key": ("trainer:\n  stepz: 5\n", "unknown config key 'trainer.stepz'"),
    "bytes_tag": ("trainer:\n  steps: !!binary aGVsbG8=\n", "trainer.steps"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_malformed_config_file_is_a_config_error_naming_it(case, tmp_path):
    text, fragment = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as err:
        load_config(GenerateConfig, path)
    message = str(err.value)
    assert fragment in message and str(path) in message and "\n" not in message, message


def test_read_yaml_takes_an_empty_file_as_no_settings_and_refuses_a_huge_one(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert dict(read_yaml(tmp_path / "empty.yaml")) == {}
    (tmp_path / "huge.yaml").write_text("# " + "x" * (2 << 20))
    with pytest.raises(ConfigError, match="not a config"):
        read_yaml(tmp_path / "huge.yaml")
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_cli_reports_a_bad_config_file_and_a_damaged_run_config_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_FILES["python_tag"][0])
    assert_one_line_error(t3d("generate", "--prompt", "a red cone", "--config", str(path)), "could not determine")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"kind": "generate"}')
    (run / "config.yaml").write_text(BAD_FILES["syntax"][0])
    assert_one_line_error(t3d("generate", "--resume", str(run)), "not valid YAML")


BAD_VALUES = {
    "trainer.resolution=0": "trainer.resolution must be at least 1",  # was a segfault on the native path
    "trainer.resolution=-4": "trainer.resolution must be at least 1",
    "trainer.batch_size=0": "trainer.batch_size must be at least 1",
    "trainer.batch_size=-1": "trainer.batch_size must be at least 1",
    "trainer.log_every=0": "trainer.log_every must be at least 1",
    "trainer.steps=0": "trainer.steps must be at least 1",
    "trainer.steps=-1": "trainer.steps must be at least 1",
    "trainer.checkpoint_every=-1": "trainer.checkpoint_every must be at least 0 (0: off)",
    "trainer.seed=18446744073709551616": "trainer.seed must be below 2**63",
    "trainer.seed=-3": "trainer.seed must be at least 0",
    "trainer.schedule_steps=0": "trainer.schedule_steps must be at least 1",
    "trainer.grad_clip_norm=-1": "trainer.grad_clip_norm must be 0 (off) or more",
    "trainer.cameras.azimuth=[1]": "trainer.cameras.azimuth must be [low, high] (two numbers)",
    "trainer.cameras.radius=[0,0]": "trainer.cameras.radius must be [low, high] with 0.001 <= low",
    "trainer.cameras.fovy=[0,40]": "trainer.cameras.fovy must be [low, high] with 1 <= low",
    "trainer.cameras.fovy=[40,200]": "trainer.cameras.fovy must be [low, high]",
    "trainer.cameras.elevation=[50,10]": "trainer.cameras.elevation must be [low, high]",
    "trainer.cameras.radius=[1,.inf]": "trainer.cameras.radius must be [low, high] (two numbers)",
    "seed=[1,": "bad override 'seed=[1,': did not find expected node content",
    'prompt="\\ud83c"': "found invalid Unicode character escape code",
}


@pytest.mark.parametrize("override", sorted(BAD_VALUES))
def test_an_impossible_value_is_a_one_line_config_error(override):
    from threedistill.workflows.generate import load_generate_config

    with pytest.raises(ConfigError) as err:
        load_generate_config([], ["prompt=a red cone", override])
    assert BAD_VALUES[override] in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_prompt_with_an_emoji_runs(tmp_path):
    from test_generate import FAST

    from threedistill.workflows.generate import generate

    run = generate(
        prompt="a red cone 🎉",
        steps=1,
        out=str(tmp_path),
        progress=False,
        log=lambda s: None,
        overrides=FAST["gaussians"] + ["trainer.preview_every=0", "trainer.checkpoint_every=0"],
    )
    assert run.config.prompt == "a red cone 🎉"
    assert read_yaml(run.dir / "config.yaml")["prompt"] == "a red cone 🎉"  # what a resume reads back


def test_export_never_runs_code_from_the_working_directory(tmp_path, monkeypatch):
    """`python -m` puts the working directory first on sys.path: a stray xatlas.py there once ran on every export."""
    import numpy as np

    from threedistill.export.texture import unwrap

    marker = tmp_path / "pwned"
    (tmp_path / "xatlas.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path)
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    result = unwrap(vertices, faces, texture_size=64)
    assert not marker.exists()
    assert result is not None and result[2].shape[1] == 2  # xatlas itself ran


def test_out_naming_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    result = t3d("generate", "--prompt", "a red cone", "--steps", "1", "--out", str(tmp_path / "taken"))
    assert_one_line_error(result, "--out must name a folder you can write")


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_resuming_from_a_damaged_checkpoint_is_a_one_line_error(damage, tmp_path):
    from test_generate import FAST

    from threedistill.errors import ThreeDistillError
    from threedistill.workflows.generate import generate

    fast = FAST["gaussians"] + ["trainer.preview_every=0", "trainer.checkpoint_every=1"]
    run = generate(prompt="a red cone", steps=2, out=str(tmp_path), progress=False, log=lambda s: None, overrides=fast)
    checkpoint = run.dir / "checkpoints" / "step_000002.safetensors"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with pytest.raises(ThreeDistillError, match="checkpoint step_000002 is unreadable"):
        generate(resume=str(run.dir), progress=False, log=lambda s: None)


def test_a_run_killed_before_its_first_checkpoint_restarts_from_step_0(tmp_path):
    import shutil

    import torch
    from test_generate import FAST

    from threedistill.workflows.generate import generate

    args = dict(prompt="a red cone", steps=3, progress=False, log=lambda s: None)
    fast = FAST["gaussians"] + ["trainer.preview_every=0", "trainer.checkpoint_every=100"]
    whole = generate(out=str(tmp_path / "a"), overrides=fast, **args)
    killed = generate(out=str(tmp_path / "b"), overrides=fast, **args)
    shutil.rmtree(killed.dir / "checkpoints")  # as if killed before the first checkpoint was written
    (killed.dir / "metrics.json").unlink(missing_ok=True)
    lines = []
    again = generate(resume=str(killed.dir), progress=False, log=lines.append)
    assert any("starting it again from step 0" in line for line in lines), lines
    assert again.dir == killed.dir and again.trainer.step == 3
    assert torch.equal(again.model.means, whole.model.means) and torch.equal(again.model.sh, whole.model.sh)
