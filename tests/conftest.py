import os

import pytest
import torch
from hypothesis import settings

# The property tests draw their examples from a fixed seed per test (the same examples on every run and machine:
# the project's determinism rule); a test's own @settings still sets its example count and deadline.
settings.register_profile("threedistill", derandomize=True, database=None)
settings.load_profile("threedistill")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest-xdist (`-n auto` in pyproject.toml) runs one worker per core: each worker, and the `t3d` commands it starts,
# gets its share of the cores, so the workers do not fight over them. Without xdist: up to 2 threads, as before.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # ours to use
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, CORES // WORKERS))
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core this process may use, at most 8 (each worker holds torch and a few small runs,
    about 1-2 GB)."""
    return max(1, min(8, CORES))


@pytest.fixture(scope="session")
def toy_prior():
    from threedistill.priors import load_prior

    return load_prior()


FIT_FAST = [
    "device=cpu",
    "export=[]",
    "resolution=24",
    "trainer.batch_size=1",
    "trainer.preview_every=0",
    "gaussians.capture.refine_start=1000",
    "background_points=500",  # a small background shell (20000 by default)
]


@pytest.fixture(scope="session")
def captured(tmp_path_factory):
    """A small toy captured scene (nerfstudio + COLMAP layouts) and a short Gaussians fit of it (tests/test_fit_edit.py,
    tests/test_edit_in2n.py)."""
    from threedistill.toyworld.capture import write_captured_scene
    from threedistill.workflows.fit import fit

    root = tmp_path_factory.mktemp("capture")
    scene = write_captured_scene("three", root / "three", n_views=16, width=32, height=24, n_points=1500, supersample=1)
    run = fit(
        scene=str(scene),
        steps=60,
        seed=0,
        out=str(root / "runs"),
        progress=False,
        log=lambda s: None,
        overrides=FIT_FAST + ["trainer.checkpoint_every=20"],
    )
    return scene, run


@pytest.fixture(scope="session")
def tiny_drag_teacher(tmp_path_factory):
    """An untrained drag teacher directory of the shipped layout (tests/test_drag_sds.py, tests/test_drag_edit.py:
    the identities and the plumbing hold for any weights)."""
    from threedistill.toyworld.training.components import build_scheduler
    from threedistill.toyworld.training.drag_teacher import DragTeacherTrainConfig, build_teacher_unet, save_teacher

    cfg = DragTeacherTrainConfig(channels=[8, 16, 16], layers_per_block=1)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("teacher") / "drag"
    save_teacher(out, build_teacher_unet(cfg), build_scheduler(cfg.beta_schedule), {"test": True})
    return out
