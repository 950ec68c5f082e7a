"""The end of a generate run, made faster without changing what it writes (issue #26): the UV atlas from pieces
of the mesh, the evaluation of the run still in memory, the exact Chamfer distance by k-d trees."""

import numpy as np
import pytest
import torch
import trimesh
from test_generate import FAST

from threedistill.export.texture import unwrap
from threedistill.export.unwrap_worker import pieces


def sphere(subdivisions=4):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces)


def test_pieces_cover_every_face_once_are_small_and_always_the_same():
    vertices, faces = sphere()  # 5120 faces
    parts = pieces(vertices, faces, max_faces=700)
    assert len(parts) > 1 and all(len(p) <= 700 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(faces)))
    again = pieces(vertices, faces, max_faces=700)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    # compact: a piece spans a small part of the sphere, not a band around it
    centres = vertices[faces].mean(1)
    assert max(np.ptp(centres[p], 0).min() for p in parts) < 1.0


def uv_overlap(uvs, faces, size):
    """Share of the texels covered by a face's UV triangle that more than one face covers."""
    from threedistill.renderers.mesh_raster import triangle_pixels

    tri_xy = torch.stack([torch.from_numpy(uvs[:, 0]) * size, (1 - torch.from_numpy(uvs[:, 1])) * size], -1)
    _, pix, _ = triangle_pixels(tri_xy[torch.from_numpy(faces)], size, size)
    counts = torch.bincount(pix, minlength=size * size)
    return float((counts > 1).sum() / (counts > 0).sum())


def test_the_pieced_atlas_is_one_valid_non_overlapping_atlas_of_the_whole_mesh():
    vertices, faces = sphere()
    vmap, uv_faces, uvs = unwrap(vertices, faces, texture_size=512)
    assert len(uv_faces) == len(faces) and uvs.min() >= 0 and uvs.max() <= 1
    # the same triangles, each once: the vertex map takes the atlas's faces back to the input faces
    back = {tuple(sorted(f)) for f in vmap[uv_faces]}
    assert back == {tuple(sorted(f)) for f in faces}
    # no two charts share texels (the pieces are packed together, not each into the whole texture)
    assert uv_overlap(uvs, uv_faces, 512) < 0.005
    e1, e2 = uvs[uv_faces[:, 1]] - uvs[uv_faces[:, 0]], uvs[uv_faces[:, 2]] - uvs[uv_faces[:, 0]]
    assert (np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) > 0).all()  # no face squashed to a line
    again = unwrap(vertices, faces, texture_size=512)
    assert all(np.array_equal(a, b) for a, b in zip((vmap, uv_faces, uvs), again))  # deterministic


def test_chamfer_by_kd_trees_equals_the_brute_force_distance():
    from threedistill.evaluation.mesh_eval import chamfer

    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(700, 3, generator=gen), torch.rand(500, 3, generator=gen) + 0.2
    brute = 0.5 * (torch.cdist(a, b).min(1).values.mean() + torch.cdist(b, a).min(1).values.mean())
    assert chamfer(a, b) == pytest.approx(float(brute), rel=1e-5)
    assert chamfer(a, a) == 0.0


@pytest.mark.parametrize("representation", ["gaussians", "nerf"])
def test_a_run_evaluated_in_memory_scores_as_the_run_loaded_from_its_checkpoint(tmp_path, representation):
    from threedistill.workflows.generate import generate
    from threedistill.workflows.results import evaluate_run

    run = generate(
        prompt="a red cone",
        representation=representation,
        steps=3,
        seed=2,
        out=str(tmp_path),
        progress=False,
        log=lambda s: None,
        overrides=FAST[representation] + ["trainer.preview_every=0", "trainer.checkpoint_every=0"],
    )
    run.model.cpu()
    in_memory = evaluate_run(run.dir, run)
    loaded = evaluate_run(run.dir)
    for key in ("silhouette_iou", "colour_error", "step"):
        assert in_memory[key] == loaded[key], key


@pytest.mark.parametrize("code, status", [(3, 3), (None, 0), ("stopped: bad things", 1)])
def test_exit_now_does_what_a_normal_exit_does_first(tmp_path, code, status):
    """The fast exit of `t3d` (utils.exiting) joins the other threads, runs the at-exit handlers and flushes the
    output before it ends the process, and keeps sys.exit's status codes."""
    import subprocess
    import sys

    script = f"""
import atexit, sys, threading, time
from pathlib import Path
from threedistill.utils.exiting import exit_now
out = Path({str(tmp_path)!r})
atexit.register(lambda: (out / "atexit").write_text("ran"))
threading.Thread(target=lambda: (time.sleep(0.3), (out / "thread").write_text("done"))).start()
sys.stdout.write("buffered, no newline")
exit_now({code!r})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == status, result.stderr
    assert result.stdout == "buffered, no newline"
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "thread").read_text() == "done"
    if isinstance(code, str):
        assert result.stderr.strip() == code
