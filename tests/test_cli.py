import json
import subprocess
import sys

import imageio.v3 as iio
import pytest


def t3d(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "threedistill.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_subcommands():
    result = t3d("--help")
    assert result.returncode == 0 and "toyworld" in result.stdout and "prior" in result.stdout


def test_toyworld_render_writes_image(tmp_path):
    out = tmp_path / "duck.png"
    result = t3d("toyworld", "render", "--object", "red duck", "--azimuth", "30", "--elevation", "15",
                 "--resolution", "48", "--what", "all", "--out", str(out))
    assert result.returncode == 0, result.stderr
    image = iio.imread(out)
    assert image.shape == (48, 4 * 48, 3)
    assert image[0, 0].tolist() == [255, 255, 255] and image[24, 24].tolist() != [255, 255, 255]


@pytest.mark.parametrize("args, fragment", [
    (["toyworld", "render", "--object", "red duk"], "unknown toy object 'duk'"),
    (["toyworld", "render", "--object", "pink duck"], "unknown toy colour 'pink'"),
    (["toyworld", "render", "--object", "red duck", "--resolution", "0"], "--resolution must be between"),
    (["toyworld", "render", "--object", "red duck", "--out", "x.txt"], "cannot write image"),
    (["prior", "sample", "--prompt", "  "], "--prompt is empty"),
    (["prior", "info", "--prior", "/nonexistent/prior"], "prior directory not found"),
    (["prior", "train", "stepz=3"], "unknown config key 'stepz'"),
    (["prior", "train", "--config", "/nonexistent.yaml"], "config file not found"),
])
def test_bad_input_gives_one_line_error(tmp_path, args, fragment):
    assert_one_line_error(t3d(*args, cwd=tmp_path), fragment)


def test_prior_sample_and_info(tmp_path):
    out = tmp_path / "grid.png"
    result = t3d("prior", "sample", "--prompt", "a blue cone, side view", "--n", "4", "--steps", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert iio.imread(out).shape == (2 * 32 + 2, 2 * 32 + 2, 3)
    info = t3d("prior", "info")
    assert info.returncode == 0 and "pixel, 32px, epsilon" in info.stdout


def test_prior_eval_writes_report(tmp_path):
    out = tmp_path / "gate.json"
    result = t3d("prior", "eval", "--n", "1", "--steps", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert len(report["per_prompt"]) == 54 and 0.0 <= report["accuracy"]["all"] <= 1.0
    assert ("PASS" in result.stdout) == report["passed"]
    assert out.with_suffix(".png").is_file()


def test_prior_train_smoke(tmp_path):
    """A few steps of the real training command produce a loadable diffusers directory."""
    result = t3d("prior", "train", f"out={tmp_path}/p", f"dataset_cache={tmp_path}/d.npz", "views_per_subject=1",
                 "resolution=16", "steps=2", "batch_size=4", "channels=[16,16]", "layers_per_block=1", "text_width=16")
    assert result.returncode == 0, result.stderr
    from threedistill.priors import load_prior
    prior = load_prior(tmp_path / "p")
    assert prior.native_resolution == 16 and prior.info["trained_steps"] == 2
