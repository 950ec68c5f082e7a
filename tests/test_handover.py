"""Stage hand-over between representations keeps the geometry (silhouette IoU before and after), and a
NeRF -> mesh run works end to end: resume inside the mesh stage, evaluation and export of the mesh stage."""

import pytest
import torch
from test_generate import FAST, final_tensors

from threedistill.cameras import orbit_cameras
from threedistill.errors import ConfigError
from threedistill.representations.gaussians import Gaussians, GaussiansConfig
from threedistill.representations.mesh import Mesh, MeshConfig
from threedistill.representations.nerf import NeRF
from threedistill.representations.triplane import Triplane, TriplaneConfig
from threedistill.workflows.generate import generate
from threedistill.workflows.handover import hand_over

VIEWS = orbit_cameras([0.0, 90.0, 180.0, 270.0], 15.0, 2.8)


def silhouette(model, size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return model.render(VIEWS, size, size, perturb=False)["alpha"] > 0.5


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def blob():
    """An untrained NeRF: its density blob is a ball of radius ~0.5, offset so that it is not centred."""
    nerf = NeRF(generator=torch.Generator().manual_seed(0))
    nerf.density_net[-1].bias.data[0] = -3.0  # a smaller ball: the hand-over must follow the field, not a default
    return nerf


def test_field_to_mesh_keeps_the_silhouette_and_the_colour(blob):
    mesh = Mesh(MeshConfig(handover_faces=2000))
    before = mesh.vertices.detach().clone()
    hand_over(blob, mesh, torch.Generator().manual_seed(0))
    assert len(mesh.faces) <= 2000 and not torch.equal(mesh.vertices.detach()[:10], before[:10])
    assert iou(silhouette(blob), silhouette(mesh)) > 0.9
    with torch.no_grad():  # the texture field took over the field's colours at the surface
        v = mesh.vertices
        _, feats = blob.density(v)
        assert (mesh.colour_at(v) - blob.color(feats, torch.zeros_like(v))).abs().mean() < 0.05


def test_field_to_gaussians_keeps_the_silhouette(blob):
    gaussians = Gaussians(GaussiansConfig(num_points=1500))
    hand_over(blob, gaussians, torch.Generator().manual_seed(0))
    assert len(gaussians) == 1500
    assert iou(silhouette(blob), silhouette(gaussians)) > 0.8


def test_gaussians_to_mesh_keeps_the_silhouette():
    points = torch.nn.functional.normalize(torch.randn(3000, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    gaussians = Gaussians.from_points(points * 0.45, torch.full((3000, 3), 0.8), GaussiansConfig(init_opacity=0.5))
    mesh = Mesh(MeshConfig(handover_faces=2000))
    hand_over(gaussians, mesh, torch.Generator().manual_seed(0))
    assert iou(silhouette(gaussians), silhouette(mesh)) > 0.85


def test_same_representation_carries_the_parameters_over():
    a, b = Triplane(TriplaneConfig(), generator=torch.Generator().manual_seed(0)), Triplane(TriplaneConfig())
    hand_over(a, b, torch.Generator())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_an_unsupported_hand_over_is_one_line(blob):
    with pytest.raises(ConfigError, match="no hand-over from mesh to nerf; supported: "):
        hand_over(Mesh(), blob, torch.Generator())


STAGES = (
    'stages=[{name: coarse, steps: 3}, {name: mesh, steps: 3, overrides: ["representation=mesh", '
    '"trainer.resolution=24"]}]'
)
MESH = [
    "mesh.handover_faces=600",
    "mesh.levels=4",
    "mesh.log2_table_size=10",
    "trainer.checkpoint_every=2",
    "trainer.preview_every=0",
]


def nerf_then_mesh(tmp_path, name, extra=(), **kw):
    return generate(
        prompt="a red cone",
        representation="nerf",
        seed=2,
        out=str(tmp_path / name),
        progress=False,
        log=lambda s: None,
        overrides=FAST["nerf"] + MESH + list(extra) + [STAGES],
        **kw,
    )


@pytest.mark.parametrize("extra", [[], ["mesh.large_steps=10", "mesh.lr_vertices=0.01"]])  # uniform Adam's state too
def test_nerf_then_mesh_resumes_inside_the_mesh_stage_bit_identical(tmp_path, extra):
    full = nerf_then_mesh(tmp_path, "full", extra)
    assert full.config.representation == "mesh" and isinstance(full.model, Mesh) and full.trainer.step == 3
    assert full.trainer.optimizer.param_groups[0]["uniform"] == bool(extra)
    cut = nerf_then_mesh(tmp_path, "cut", extra, stop_at=5)
    resumed = generate(resume=cut.dir, progress=False, log=lambda s: None)
    a, b = final_tensors(full), final_tensors(resumed)
    assert a.keys() == b.keys() and "model.offsets" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    logged = (full.dir / "log.jsonl").read_text()
    assert '"loss_laplacian"' in logged and '"stage": 1' in logged


def test_a_mesh_stage_is_evaluated_and_exported_as_its_own_mesh(tmp_path):
    from threedistill.workflows.loading import load_run
    from threedistill.workflows.results import evaluate_run, export_run

    run = nerf_then_mesh(tmp_path, "export")
    path = export_run(run.dir, "glb", faces=1000, texture_size=0)
    metrics = evaluate_run(run.dir)
    assert metrics["step"] == 3 and metrics["mesh_silhouette_iou"] > 0.8 * metrics["silhouette_iou"]
    coarse = load_run(run.dir, step=3)  # the coarse stage's last checkpoint is still there
    assert isinstance(coarse.model, NeRF) and coarse.trainer.step == 3
    assert '"field": "mesh"' in path.with_name(path.name + ".json").read_text()


def test_a_texture_stage_after_the_mesh_stage_keeps_the_geometry_and_changes_the_texture(tmp_path):
    """The staged configs' last stage: the same mesh, vertices frozen (lr 0, also under large steps), texture
    refined toward SDEdit targets."""
    from threedistill.workflows.loading import load_run

    mesh = '"representation=mesh", "trainer.resolution=24", "mesh.large_steps=10", "mesh.lr_vertices=0.01"'
    stages = (
        f"stages=[{{name: coarse, steps: 3}}, {{name: mesh, steps: 3, overrides: [{mesh}]}}, "
        f'{{name: texture, steps: 2, overrides: [{mesh}, "mesh.lr_vertices=0", "guidance_type=sdedit", '
        f'"guidance.denoise_steps=2"]}}]'
    )
    run = generate(
        prompt="a red cone",
        representation="nerf",
        seed=2,
        out=str(tmp_path / "tex"),
        progress=False,
        log=lambda s: None,
        overrides=FAST["nerf"] + MESH + [stages],
    )
    geometry = load_run(run.dir, step=6).model
    assert run.trainer.stage == 2 and run.config.guidance_type == "sdedit"
    assert torch.equal(run.model.vertices, geometry.vertices)
    texture = [k for k in run.model.state_dict() if k not in ("base_vertices", "offsets", "faces")]
    assert texture and any(not torch.equal(run.model.state_dict()[k], geometry.state_dict()[k]) for k in texture)
    assert '"loss_sdedit"' in (run.dir / "log.jsonl").read_text()
