"""Device handling: the `device` setting's errors (everywhere), and on machines with a CUDA GPU the CUDA paths
against the CPU ones (gsplat's rasterizer vs ours, renders on CUDA vs CPU, a short generate with densification).
The CUDA tests are skipped where torch sees no GPU, as in CI."""

import json

import pytest
import torch
from test_gaussian_raster import random_scene

from threedistill.cameras import orbit_cameras
from threedistill.errors import ConfigError
from threedistill.renderers.gaussian_raster import rasterize
from threedistill.representations.nerf import NeRF, NeRFConfig
from threedistill.session import resolve_device
from threedistill.workflows.generate import GenerateConfig, generate

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_device_setting_errors_are_one_line():
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        GenerateConfig(device="gpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"device=cuda:99 but torch sees \d+ CUDA GPU"):
        resolve_device("cuda:99")


def test_generate_with_a_missing_gpu_fails_before_optimising(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="device=cuda but torch sees 0 CUDA GPU"):
        generate(
            prompt="a red cone",
            steps=1,
            out=str(tmp_path),
            overrides=["device=cuda"],
            progress=False,
            log=lambda s: None,
        )
    assert not any(tmp_path.rglob("checkpoints"))


def _cuda(*tensors):
    return [t.cuda() for t in tensors]


@cuda
def test_torch_rasterizer_on_cuda_matches_cpu():
    means, scales, quats, opac, sh = random_scene(300, seed=1)
    cams = orbit_cameras([20.0, 200.0], [10.0, -5.0], 2.8)
    cpu = rasterize(means, scales, quats, opac, sh, cams, 40, 48)
    gpu = rasterize(*_cuda(means, scales, quats, opac, sh), cams.to("cuda"), 40, 48, backend="torch")
    for key in ("rgb", "alpha", "depth", "normal"):
        assert torch.allclose(cpu[key], gpu[key].cpu(), atol=2e-4), key


@cuda
def test_gsplat_rasterizer_matches_ours():
    """gsplat (CUDA) and our PyTorch rasterizer implement the same conventions: the images and the gradients
    of the Gaussians' parameters agree."""
    from threedistill.renderers.gaussian_raster import gsplat_available

    assert gsplat_available(), "gsplat should import and build on a CUDA machine"
    scene = [t.cuda().requires_grad_() for t in random_scene(400, seed=2)]
    cams = orbit_cameras([0.0, 135.0], [15.0, 30.0], 3.0).to("cuda")
    weights = torch.rand(2, 3, 64, 64, device="cuda")
    outs, grads = {}, {}
    for backend in ("auto", "torch"):
        out = rasterize(*scene, cams, 64, 64, geometry=False, backend=backend)
        (out["rgb"] * weights).sum().backward()
        outs[backend] = {k: v.detach() for k, v in out.items()}
        grads[backend] = [p.grad.clone() for p in scene]
        for p in scene:
            p.grad = None
    assert (outs["auto"]["rgb"] - outs["torch"]["rgb"]).abs().max() < 2e-2
    assert (outs["auto"]["alpha"] - outs["torch"]["alpha"]).abs().mean() < 2e-3
    for g_gsplat, g_torch in zip(grads["auto"], grads["torch"]):
        cos = torch.nn.functional.cosine_similarity(g_gsplat.flatten(), g_torch.flatten(), dim=0)
        assert cos > 0.95, float(cos)


@cuda
def test_nerf_renders_the_same_on_cuda_and_cpu():
    cpu_model = NeRF(NeRFConfig(levels=6, log2_table_size=14), generator=torch.Generator().manual_seed(0))
    gpu_model = NeRF(
        NeRFConfig(levels=6, log2_table_size=14), generator=torch.Generator().manual_seed(0), device="cuda"
    )
    if type(gpu_model.encoding) is not type(cpu_model.encoding):
        pytest.skip("tinycudann's encoding initialises differently")
    cams = orbit_cameras([30.0], [20.0], 2.8)
    with torch.no_grad():
        a = cpu_model.render(cams, 24, 24, perturb=False, geometry=True)
        b = gpu_model.render(cams, 24, 24, perturb=False, geometry=True)
    for key in ("rgb", "alpha", "depth"):
        assert torch.allclose(a[key], b[key].cpu(), atol=1e-3), key


@cuda
@pytest.mark.parametrize("representation", ["gaussians", "nerf"])
def test_generate_on_cuda(tmp_path, representation):
    """A short run on the GPU: trains there (densifying from gsplat's screen-space gradients for Gaussians),
    checkpoints, exports on the CPU, and resumes."""
    fast = {
        "gaussians": [
            "gaussians.num_points=500",
            "gaussians.densify_from=2",
            "gaussians.densify_every=2",
            "gaussians.densify_until=8",
            "gaussians.densify_grad_threshold=0.0",
        ],
        "nerf": ["nerf.levels=8"],
    }[representation]
    run = generate(
        prompt="a red cone",
        representation=representation,
        steps=10,
        seed=0,
        out=str(tmp_path),
        overrides=fast + ["device=cuda", "export=[glb]", "trainer.checkpoint_every=5"],
        progress=False,
        log=lambda s: None,
    )
    assert run.trainer.step == 10
    log = [json.loads(line) for line in (run.dir / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in log)
    if representation == "gaussians":
        assert log[-1]["num_points"] > 500  # densification saw gsplat's gradients
    assert (run.dir / "export" / "model.glb").is_file()
    resumed = generate(resume=run.dir, overrides=["trainer.steps=12"], progress=False, log=lambda s: None)
    assert resumed.trainer.step == 12
