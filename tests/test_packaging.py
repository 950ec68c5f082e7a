from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "threedistill").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"


@pytest.mark.parametrize(
    "name, extra_parts",
    [
        ("toyworld", ()),
        ("toyworld-latent", ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")),
    ],
)
def test_embedded_prior_is_complete_and_small(name, extra_parts):
    root = ROOT / "assets" / "priors" / name
    for part in (
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
    ) + extra_parts:
        assert (root / part).is_file(), part
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert size < (25e6 if name == "toyworld" else 10e6)


def test_wheel_ships_the_native_kernel_sources(tmp_path):
    """The kernels build on first use from sources installed with the package (threedistill/kernels)."""
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    names = set(zipfile.ZipFile(next(tmp_path.glob("threedistill-*.whl"))).namelist())
    from threedistill.native import SOURCES

    assert {f"threedistill/kernels/{name}" for name in SOURCES} <= names
    assert "threedistill/configs/generate/gaussians.yaml" in names
    assert "threedistill/viewer/assets/viewer.bundle.js" in names  # the `t3d view` page's script: no npm to install
    assert "threedistill/configs/prior/toyworld_latent.yaml" in names
    assert {
        f"threedistill/assets/priors/toyworld-latent/{part}"
        for part in ("model_index.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors")
    } <= names
