"""Mesh export: automatic isosurface level, orientation (+Y up, front +Z, outward counter-clockwise faces),
textures, glTF validity (Khronos validator), OBJ, fallbacks and one-line errors."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from threedistill.cameras import orbit_cameras
from threedistill.errors import ThreeDistillError
from threedistill.evaluation.mesh_eval import load_mesh, render_mesh
from threedistill.export.fields import field_grids, surface_colours
from threedistill.export.mesh import check_budget, choose_threshold, extract_mesh
from threedistill.export.mesh_files import write_mesh
from threedistill.export.run_export import export_model
from threedistill.export.texture import unwrap
from threedistill.lighting import light_intensity
from threedistill.representations.gaussians import Gaussians, GaussiansConfig
from threedistill.representations.nerf import NeRF, NeRFConfig
from threedistill.toyworld.catalogue import BEAK, get_object
from threedistill.toyworld.render import object_sdf, part_colours

TOOLS = Path(__file__).resolve().parents[1] / "tools"
SMALL = dict(faces=3000, texture_size=256, resolution=64)


def solid_toy_gaussians(obj="duck", colour="blue", n=6000, seed=0) -> Gaussians:
    """Gaussians filling a toy object's volume, coloured by part: a stand-in for a perfect generation."""
    gen = torch.Generator().manual_seed(seed)
    toy = get_object(obj)
    points = torch.rand(60000, 3, generator=gen) * 2 - 1
    dist, part = object_sdf(toy, points)
    inside = dist < -0.01
    points, part = points[inside][:n], part[inside][:n]
    cfg = GaussiansConfig(num_points=1, init_scale=0.035, init_opacity=0.9)
    return Gaussians.from_points(points, part_colours(toy, colour)[part], cfg)


def silhouette_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def duck():
    return solid_toy_gaussians()


@pytest.fixture(scope="module")
def duck_glb(duck, tmp_path_factory):
    result = extract_mesh(duck, **SMALL)
    return result, write_mesh(result, tmp_path_factory.mktemp("glb") / "duck.glb")


def test_gaussian_mesh_matches_its_renders_and_keeps_the_world_convention(duck, duck_glb):
    result, path = duck_glb
    assert result.field == "opacity" and result.textured and result.threshold_iou > 0.9
    mesh = load_mesh(path)  # what an engine loads, texture sampled at the vertices
    assert len(mesh.faces) <= SMALL["faces"] and len(mesh.vertices) <= 65535
    cams = orbit_cameras([0, 90, 180, 270, 45], [10, 10, 10, 10, 60], 2.9)
    ours = duck.render(cams, 48, 48, geometry=False)["alpha"][:, 0]
    assert silhouette_iou(render_mesh(mesh, cams, 48)["alpha"][:, 0], ours) > 0.85
    # Front toward +Z and up +Y: the (orange) beak sits in front, high; the head is the top.
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    beak = np.linalg.norm(colours - np.array(BEAK), axis=1) < 0.25
    assert beak.sum() > 5
    assert mesh.vertices[beak, 2].mean() > 0.4 and mesh.vertices[beak, 1].mean() > 0.1
    assert abs(mesh.vertices[beak, 0].mean()) < 0.1
    # Counter-clockwise seen from outside: faces point away from the solid (positive volume, outward normals).
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    assert mesh.volume > 0
    probe = mesh.triangles_center + 0.03 * mesh.face_normals
    outside = object_sdf(get_object("duck"), torch.tensor(probe, dtype=torch.float32))[0] > -0.03
    assert outside.float().mean() > 0.95


def test_texture_carries_the_representations_colours(duck, duck_glb):
    _, path = duck_glb
    mesh = trimesh.load(path, force="mesh")
    from_texture = torch.tensor(np.asarray(mesh.visual.to_color().vertex_colors)[:, :3] / 255.0, dtype=torch.float32)
    grids = field_grids(duck, SMALL["resolution"])
    direct = surface_colours(
        grids, torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.vertex_normals, dtype=torch.float32)
    )
    assert (from_texture - direct).abs().mean() < 0.06
    image = np.asarray(mesh.visual.material.baseColorTexture)
    assert image.shape[:2] == (SMALL["texture_size"],) * 2
    assert (image.reshape(-1, image.shape[-1])[:, :3].sum(1) < 30).mean() < 0.01  # no black background bleeding


@pytest.mark.skipif(
    shutil.which("node") is None or not (TOOLS / "node_modules" / "gltf-validator").is_dir(),
    reason="Khronos glTF-Validator not installed (.ci/run installs it: npm ci --prefix tools)",
)
def test_khronos_validator_reports_no_errors_or_warnings(duck, duck_glb, tmp_path):
    plain = write_mesh(extract_mesh(duck, faces=1000, texture_size=0, resolution=48), tmp_path / "plain.glb")
    out = subprocess.run(
        ["node", str(TOOLS / "validate_gltf.js"), str(duck_glb[1]), str(plain)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    reports = [json.loads(line) for line in out.splitlines()]
    assert len(reports) == 2
    for report in reports:
        assert report["errors"] == 0 and report["warnings"] == 0, report


def test_nerf_surface_from_density_and_obj_files(tmp_path):
    torch.manual_seed(0)
    model = NeRF(
        NeRFConfig(levels=4, log2_table_size=10, n_samples=16, n_importance=16), torch.Generator().manual_seed(0)
    )
    out = export_model(model, "nerf", "obj", tmp_path / "blob.obj", faces=2000, texture_size=128)
    assert out.is_file() and (tmp_path / "blob.mtl").is_file() and (tmp_path / "blob.png").is_file()
    assert "Kd 1.0" in (tmp_path / "blob.mtl").read_text()  # white diffuse: the texture alone sets the colour
    report = json.loads((tmp_path / "blob.obj.json").read_text())
    assert report["field"] == "density" and report["threshold_silhouette_iou"] > 0.9
    mesh = load_mesh(out)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    cams = orbit_cameras([0, 120, 240], [15, 15, 15], 2.9)
    ours = model.render(cams, 48, 48, perturb=False)["alpha"][:, 0]
    assert silhouette_iou(render_mesh(mesh, cams, 48)["alpha"][:, 0], ours) > 0.85
    assert 0.25 < radius.mean() < 0.6 and radius.std() < 0.05  # the blob initialisation is a ball


def test_a_lambert_nerf_exports_its_albedo_lit_by_the_rig():
    # The same weights with shading albedo and lambert: the lambert mesh's vertex colours are the albedo mesh's
    # times the rig's light at the vertex normals (what its renders show), the surface itself is the same.
    def exported(shading):
        cfg = NeRFConfig(levels=4, log2_table_size=10, n_samples=16, n_importance=16, shading=shading)
        model = NeRF(cfg, torch.Generator().manual_seed(0))
        with torch.no_grad():  # a grey albedo: light is then the only thing that tells the vertices apart
            model.color_net[-1].weight.zero_()
            model.color_net[-1].bias.fill_(0.4)
        return extract_mesh(model, faces=2000, texture_size=0).mesh

    flat, lit = exported("albedo"), exported("lambert")
    assert np.allclose(flat.vertices, lit.vertices)
    light = light_intensity(torch.tensor(np.asarray(lit.vertex_normals), dtype=torch.float32))[:, 0].numpy()
    expected = flat.visual.vertex_colors[:, :3].astype(float) * light[:, None]
    assert np.abs(lit.visual.vertex_colors[:, :3] - expected).max() <= 1.5  # uint8 rounding
    assert light.min() < 0.5 < light.max()  # lit and unlit sides


def test_threshold_is_chosen_to_match_the_silhouettes():
    """A field that is a ball of radius 0.5 with a linear falloff: the best level is the one whose ball has the
    rendered radius."""
    from threedistill.export.fields import grid_points

    grid = (1.0 - grid_points(64).norm(dim=-1)).clamp_min(0)  # level L <-> radius 1 - L

    def alpha_of_radius(r):
        def render(cams, res):
            from threedistill.cameras import camera_rays

            o, d = camera_rays(cams, res, res)
            closest = torch.linalg.cross(o, d, dim=-1).norm(dim=-1)  # distance of each ray to the origin
            return (closest < r).float()

        return render

    for r in (0.3, 0.6):
        level, iou = choose_threshold(grid, alpha_of_radius(r))
        assert abs((1 - level) - r) < 0.04 and iou > 0.9


def test_xatlas_failure_falls_back_to_vertex_colours(duck):
    messages = []
    mesh = extract_mesh(duck, **SMALL).mesh
    assert unwrap(np.asarray(mesh.vertices), np.asarray(mesh.faces), timeout=0.001, log=messages.append) is None
    assert "per-vertex colours" in messages[0]


def test_bad_export_requests_give_one_line_errors(tmp_path):
    with pytest.raises(ThreeDistillError, match="--faces 10 is too small"):
        check_budget(10, 1024)
    with pytest.raises(ThreeDistillError, match="power of two"):
        check_budget(20000, 1000)
    model = NeRF(NeRFConfig(levels=4, log2_table_size=10))
    with pytest.raises(ThreeDistillError, match="stores 3D Gaussians, this run is 'nerf'"):
        export_model(model, "nerf", "ply", tmp_path / "x.ply")
    with pytest.raises(ThreeDistillError, match="unknown export format 'fbx'; known: glb, obj, ply, splat, spz"):
        export_model(model, "nerf", "fbx", tmp_path / "x.fbx")


def test_winding_numbers_tell_inside_from_outside():
    from threedistill.evaluation.mesh_eval import winding_numbers

    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    points = torch.tensor([[0, 0, 0], [0.4, -0.4, 0.4], [0.6, 0, 0], [0, 2, 0]], dtype=torch.float32)
    w = winding_numbers(torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces), points)
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-4)


def test_ground_truth_mesh_scores_as_ground_truth():
    from threedistill.evaluation.mesh_eval import mesh_metrics
    from threedistill.toyworld.mesh import toy_mesh

    good = mesh_metrics(toy_mesh("house", "red"), "red", "house")
    assert good["mesh_silhouette_iou"] > 0.97 and good["mesh_chamfer"] < 0.01 and good["mesh_volume_iou"] > 0.97
    shifted = toy_mesh("house", "red").apply_translation((0.0, 0.3, 0.0))
    bad = mesh_metrics(shifted, "red", "house")
    assert bad["mesh_silhouette_iou"] < 0.8 and bad["mesh_chamfer"] > 0.05 and bad["mesh_volume_iou"] < 0.7


def test_exporting_a_run_without_a_checkpoint_says_so(tmp_path):
    from threedistill.config import save_config
    from threedistill.workflows.generate import GenerateConfig
    from threedistill.workflows.results import export_run

    save_config(GenerateConfig(prompt="a red cone"), tmp_path / "config.yaml")
    with pytest.raises(ThreeDistillError, match="has no readable checkpoint"):
        export_run(tmp_path, "glb")


def test_an_empty_representation_gives_a_one_line_error():
    empty = Gaussians(GaussiansConfig(num_points=10, init_opacity=0.001))
    with pytest.raises(ThreeDistillError, match="empty"):
        extract_mesh(empty, **SMALL)
