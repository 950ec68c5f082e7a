"""`t3d view` and the page every `t3d generate` writes: one self-contained HTML file, opened from file:// in a real
headless Chromium (tests/browser.py): no network requests, a picture on the canvas, and the object's silhouette
from the page's default camera matching our own renders from the same camera (splats and mesh)."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from browser import Chromium, require_browser

from threedistill.cli import main
from threedistill.errors import ThreeDistillError
from threedistill.evaluation.mesh_eval import load_mesh, render_mesh
from threedistill.export.splats import read_ply
from threedistill.representations.gaussians import Gaussians, GaussiansConfig
from threedistill.viewer.page import ViewCamera
from threedistill.workflows.generate import generate
from threedistill.workflows.view import view_run

TINY = [  # a small Gaussians run that still has a shape; the page is written by the run itself (export=[.., viewer])
    "device=cpu",
    "export=[glb,ply,viewer]",
    "gaussians.num_points=300",
    "gaussians.init_opacity=0.6",
    "gaussians.init_radius=0.7",
    "gaussians.densify_from=100",
    "trainer.batch_size=1",
    "trainer.resolution=16",
    "trainer.checkpoint_every=0",
    "trainer.preview_every=0",
]
WIDTH, HEIGHT = 1000, 600  # the 3D view is the window less the 360 px side panel: 640 x 600
VIEW = {"x": 20, "y": 0, "width": HEIGHT, "height": HEIGHT}  # its middle square: the default camera's fovy spans it


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer")
    quiet = dict(progress=False, log=lambda s: None)
    run = generate(prompt="a red cone", steps=8, seed=0, out=str(out), overrides=TINY, **quiet)
    return run.dir


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_generate_writes_a_self_contained_page(tiny_run):
    page = tiny_run / "export" / "viewer.html"
    text = page.read_text()
    assert page.stat().st_size < 4e6
    for block in ("t3d-meta", "t3d-splats", "t3d-mesh", "t3d-bundle"):
        assert f'id="{block}"' in text
    assert "default-src 'none'" in text  # the page's CSP: nothing from the network
    assert not re.search(r"""(src|href)=["']https?:""", text)
    assert "data:video/mp4;base64," in text or "data:image/gif;base64," in text  # the turntable
    assert "a red cone" in text and "trainer:" in text  # title and the resolved config
    assert "<td>wall_seconds</td>" in text  # written after the run's metrics.json


def test_view_command_and_one_line_errors(tiny_run, tmp_path, capsys):
    cmd = [sys.executable, "-m", "threedistill.cli", "view"]
    done = subprocess.run([*cmd, str(tiny_run), "--out", str(tmp_path / "p.html")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.html").stat().st_size > 1e6 and "wrote" in done.stdout
    blocked = tmp_path / "file"
    blocked.write_text("x")
    for args, message in [
        ([str(tmp_path / "missing")], "no such run directory"),
        ([str(tmp_path)], "is not a run directory"),
        ([str(tiny_run), "--out", str(blocked / "p.html")], "cannot write"),
        ([str(tiny_run), "--out", str(tmp_path)], "is a folder"),
        ([str(tiny_run), "--out", str(tmp_path / "p.txt")], "does not end in .html"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["view", *args])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_view_run_without_splats_or_mesh_export(tmp_path):
    """export=[] leaves no files: no page; `t3d view` then shows the checkpoint's splats, noting the missing glb."""
    overrides = [o for o in TINY if not o.startswith("export")] + ["export=[]"]
    run = generate(prompt="a red cone", steps=2, out=str(tmp_path), progress=False, overrides=overrides, log=print)
    assert not (run.dir / "export" / "viewer.html").exists()
    page = view_run(run.dir)
    text = page.read_text()
    assert page == run.dir / "export" / "viewer.html" and 'id="t3d-splats"' in text and 'id="t3d-mesh"' not in text
    assert "splats only" in text
    with pytest.raises(ThreeDistillError, match="not a run directory"):
        view_run(tmp_path)


def our_silhouettes(run_dir, size: int) -> dict[str, np.ndarray]:
    """alpha > 0.5 of our renders from the page's default camera: the splats (our rasterizer) and the glb."""
    cams = ViewCamera().cameras()
    model = Gaussians(GaussiansConfig(num_points=1))
    model.load_tensors(read_ply(run_dir / "export" / "point_cloud.ply").tensors())
    with torch.no_grad():
        splats = model.render(cams, size, size)["alpha"][0, 0].numpy() > 0.5
    mesh = render_mesh(load_mesh(run_dir / "export" / "model.glb"), cams, size)["alpha"][0, 0].numpy() > 0.5
    return {"splats": splats, "mesh": mesh}


def test_page_in_headless_chromium_offline_and_matching_our_renders(tiny_run):
    require_browser()
    page = tiny_run / "export" / "viewer.html"
    ours = our_silhouettes(tiny_run, HEIGHT)
    with Chromium(WIDTH, HEIGHT) as browser:
        browser.open(page)
        state = browser.wait_for("window.t3dViewer && (window.t3dViewer.ready || window.t3dViewer.error) && t3dViewer")
        assert state.get("error") is None and state["mode"] == "splats", state
        assert browser.evaluate("document.getElementById('error').textContent") == ""
        shot = browser.screenshot(VIEW)
        background = np.array([0xF4, 0xF4, 0xF4]) / 255
        assert (np.abs(shot - background).max(-1) > 0.1).mean() > 0.01  # the canvas shows something
        for mode in ("splats", "mesh"):  # black silhouettes on white (#mask), toggled like the buttons do
            browser.open(page, f"mask&mode={mode}")
            browser.wait_for(f"window.t3dViewer && t3dViewer.ready && t3dViewer.mode === '{mode}'")
            theirs = browser.screenshot(VIEW).mean(-1) < 0.5
            score = iou(theirs, ours[mode])
            assert score >= 0.8, (mode, score, theirs.mean(), ours[mode].mean())
        urls = browser.requests()
        assert browser.console_errors() == []
    # The page itself is the only file it opens; everything else is a data: or blob: URL made from the page.
    assert urls and all(u.startswith(("data:", "blob:")) or u.startswith(page.as_uri()) for u in urls), urls


def test_fit_and_edit_runs_get_pages_framed_on_their_scene(captured, tmp_path):
    """Any run kind: a fit run and an edit of it (splats only: no glb exported), each page drawing its scene."""
    from test_fit_edit import EDIT_FAST, cube_region

    from threedistill.workflows.edit import edit

    scene, fit_run = captured
    edited = edit(
        source=str(fit_run.dir),
        prompt="a blue cube",
        source_prompt="a red cube",
        region=cube_region(scene),
        steps=2,
        seed=0,
        out=str(tmp_path),
        progress=False,
        log=lambda s: None,
        overrides=EDIT_FAST,
    )
    pages = [view_run(fit_run.dir, tmp_path / "fit.html"), view_run(edited.dir, tmp_path / "edit.html")]
    assert '"kind": "fit"' in pages[0].read_text() and '"kind": "edit"' in pages[1].read_text()
    require_browser()
    with Chromium(600, 300) as browser:  # small: a scene's big background splats are slow on a software GPU
        for page in pages:
            browser.open(page)
            state = browser.wait_for("window.t3dViewer && (t3dViewer.ready || t3dViewer.error) && t3dViewer")
            assert state.get("error") is None and state["mode"] == "splats", state
            shot = browser.screenshot({"x": 0, "y": 0, "width": 240, "height": 300})
            assert (np.abs(shot - np.array([0xF4, 0xF4, 0xF4]) / 255).max(-1) > 0.1).mean() > 0.05, page
