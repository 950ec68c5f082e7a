"""The differentiable mesh rasterizer (coverage, depth, barycentrics and soft silhouettes against analytic values,
gradients by finite differences, a silhouette fit) and the Mesh representation built on it."""

import copy
import math

import pytest
import torch
import trimesh

from threedistill.cameras import focal_length, orbit_cameras, project_points
from threedistill.errors import ConfigError
from threedistill.lighting import light_intensity
from threedistill.renderers.mesh_raster import triangle_pixels
from threedistill.renderers.mesh_soft import rasterize_mesh_soft
from threedistill.representations.mesh import Mesh, MeshConfig, shade, vertex_normals
from threedistill.toyworld.catalogue import get_object
from threedistill.toyworld.render import part_colours, render_toy

DIST = 3.0  # the test camera sits on +Z at this distance, looking at the origin with an identity rotation


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors gain nothing from threads, and on a busy machine two OpenMP threads wait on each other at
    every operation (measured 20-60x slower); this module runs on one and restores the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def front_camera(dist=DIST, fovy=40.0):
    return orbit_cameras(0.0, 0.0, dist, fovy=fovy)


def pixel_rays(height, width, dist=DIST, fovy=40.0):
    """Per pixel centre: camera-space ray direction (u/f, -v/f, -1) of the front camera, as (H,W,3) doubles."""
    f = float(focal_length(torch.tensor(math.radians(fovy)), height))
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) + 0.5 - height / 2,
        torch.arange(width, dtype=torch.float64) + 0.5 - width / 2,
        indexing="ij",
    )
    return torch.stack([u / f, -v / f, -torch.ones_like(u)], -1), f


def unproject(xy, height, width, z_world=0.0, dist=DIST, fovy=40.0):
    """World points on the plane z = z_world that the front camera sees at pixel coordinates xy (N,2)."""
    f = float(focal_length(torch.tensor(math.radians(fovy)), height))
    depth = dist - z_world
    x = (xy[:, 0] - width / 2) * depth / f
    y = -(xy[:, 1] - height / 2) * depth / f
    return torch.stack([x, y, torch.full_like(x, z_world)], -1)


def inside_triangle(tri_xy, height, width):
    """Analytic point-in-triangle test of every pixel centre (either winding): (H,W) inside mask and the
    smallest |edge function| / |edge| (distance in pixels to the nearest edge line)."""
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    p = torch.stack([xx, yy], -1).double()
    signs, dists = [], []
    for k in range(3):
        a, b = tri_xy[k].double(), tri_xy[(k + 1) % 3].double()
        e = b - a
        s = e[0] * (p[..., 1] - a[1]) - e[1] * (p[..., 0] - a[0])
        signs.append(s)
        dists.append(s.abs() / e.norm())
    s = torch.stack(signs)
    return ((s >= 0).all(0) | (s <= 0).all(0)), torch.stack(dists).min(0).values


# ------------------------------------------------------------ hard coverage, depth, barycentrics
def test_single_tilted_triangle_matches_analytic_coverage_depth_and_barycentrics():
    h, w = 32, 40
    a, b = 0.3, -0.2  # the plane z = a x + b y
    xy = torch.tensor([[-0.8, -0.6], [0.9, -0.5], [0.1, 0.8]])
    verts = torch.cat([xy, (a * xy[:, 0] + b * xy[:, 1])[:, None]], -1)
    faces = torch.tensor([[0, 1, 2]])
    out = rasterize_mesh_soft(verts, faces, front_camera(), h, w)
    covered = out["face"][0] >= 0

    proj, _ = project_points(verts, front_camera(), h, w)
    inside, edge_dist = inside_triangle(proj[0], h, w)
    clear = edge_dist > 1e-3
    assert covered.sum() > 200 and torch.equal(covered[clear], inside[clear])
    _, pix, _ = triangle_pixels(proj[0][faces], h, w)  # the non-differentiable rasterizer's pixel set
    assert torch.equal(covered.flatten().nonzero().squeeze(-1).sort().values, pix.sort().values)

    rays, f = pixel_rays(h, w)
    t = DIST / (1 + a * rays[..., 0] + b * rays[..., 1])  # view depth where each pixel's ray meets the plane
    assert torch.allclose(out["depth"][0, 0][covered].double(), t[covered], rtol=1e-4)
    assert (out["depth"][0, 0][~covered] == 0).all()
    expected_points = torch.stack([t * rays[..., 0], t * rays[..., 1], DIST - t], -1)
    assert torch.allclose(out["points"][0][covered].double(), expected_points[covered], atol=1e-4)

    bary = out["bary"][0][covered].double()
    assert torch.allclose(bary.sum(-1), torch.ones(len(bary), dtype=torch.float64), atol=1e-5)
    # Perspective-correct -> screen-space weights (proportional to bary * depth) interpolate the pixel centre.
    z = (DIST - verts[:, 2]).double()
    screen = bary * z / (bary * z).sum(-1, keepdim=True)
    centres = torch.stack(torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")[::-1], -1)
    assert torch.allclose(screen @ proj[0].double(), centres[covered].double(), atol=1e-3)

    normal = torch.nn.functional.normalize(torch.tensor([-a, -b, 1.0]), dim=0)  # counter-clockwise from +Z
    assert torch.allclose(out["normal"][0].permute(1, 2, 0)[covered], normal.expand(int(covered.sum()), 3), atol=1e-5)


def test_quad_facing_the_camera_covers_its_rectangle_at_constant_depth():
    h = w = 48
    s, z0 = 0.43, -0.5  # a square of half-size s at z = z0, split along its (-,-) -> (+,+) diagonal
    verts = torch.tensor([[-s, -s, z0], [s, -s, z0], [s, s, z0], [-s, s, z0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    out = rasterize_mesh_soft(verts, faces, front_camera(), h, w)
    face = out["face"][0]

    f = float(focal_length(torch.tensor(math.radians(40.0)), h))
    half = f * s / (DIST - z0)
    c = torch.arange(w) + 0.5 - w / 2
    in_x = c.abs() < half
    expected = in_x[:, None] & in_x[None, :]
    assert torch.equal(face >= 0, expected)
    assert torch.allclose(out["depth"][0, 0][expected], torch.tensor(DIST - z0), atol=1e-5)
    u, v = c[None, :].expand(h, w), -c[:, None].expand(h, w)  # screen offsets, y up
    lower = expected & (u > v + 0.01)  # below the diagonal: triangle 0 (vertices 0, 1, 2)
    upper = expected & (u < v - 0.01)
    assert (face[lower] == 0).all() and (face[upper] == 1).all() and lower.any() and upper.any()


@pytest.mark.parametrize("near_first", [True, False])
def test_the_nearer_of_two_overlapping_triangles_wins(near_first):
    h = w = 32
    far = torch.tensor([[-0.9, -0.9, 0.0], [0.5, -0.9, 0.0], [-0.9, 0.5, 0.0]])
    near = torch.tensor([[-0.4, -0.4, 0.5], [0.8, -0.4, 0.5], [-0.4, 0.8, 0.5]])
    verts = torch.cat([near, far]) if near_first else torch.cat([far, near])
    near_id = 0 if near_first else 1
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    out = rasterize_mesh_soft(verts, faces, front_camera(), h, w)
    proj, _ = project_points(verts, front_camera(), h, w)
    in_near, d_near = inside_triangle(proj[0][3 * near_id : 3 * near_id + 3], h, w)
    in_far, d_far = inside_triangle(proj[0][3 * (1 - near_id) : 3 * (1 - near_id) + 3], h, w)
    clear = (d_near > 1e-3) & (d_far > 1e-3)
    both = in_near & in_far & clear
    assert both.sum() > 20
    assert (out["face"][0][both] == near_id).all()
    assert torch.allclose(out["depth"][0, 0][both], torch.tensor(DIST - 0.5), atol=1e-5)
    assert (out["face"][0][in_far & ~in_near & clear] == 1 - near_id).all()


# ------------------------------------------------------------ soft coverage
def test_soft_alpha_follows_the_sigmoid_of_the_distance_to_the_edge():
    h = w = 48
    sigma = 0.5
    tri = torch.tensor([[10.5, 6.3], [10.5, 42.7], [40.9, 24.1]], dtype=torch.float64)  # left edge: x = 10.5
    verts = unproject(tri, h, w).float()
    alpha = rasterize_mesh_soft(verts, torch.tensor([[0, 1, 2]]), front_camera(), h, w, sigma)["alpha"][0, 0]
    row = 24  # pixel centres (x + 0.5, 24.5): the nearest edge is the vertical one for x near 10
    assert alpha[row, 10] == pytest.approx(0.5, abs=0.05)  # exactly on the edge
    assert alpha[row, 9] == pytest.approx(1 / (1 + math.exp(1 / sigma)), abs=0.01)  # 1 pixel outside
    assert alpha[row, 11] == pytest.approx(1 / (1 + math.exp(-1 / sigma)), abs=0.01)  # 1 pixel inside
    assert alpha[row, 20] > 0.99  # well inside
    assert alpha[row, :8].max() < 1e-3  # more than 4 sigma outside
    assert alpha[0:3].max() < 1e-3 and alpha[:, 45:].max() < 1e-3


def _tiny_mesh(dtype=torch.float64):
    verts = torch.tensor(
        [[-0.52, -0.47, 0.11], [0.61, -0.33, -0.07], [0.07, 0.58, 0.23], [0.49, 0.44, -0.31]], dtype=dtype
    )
    return verts, torch.tensor([[0, 1, 2], [1, 3, 2]])


def test_alpha_and_rgb_gradients_match_finite_differences():
    verts, faces = _tiny_mesh()
    cams = orbit_cameras([0.0, 35.0], [10.0, -20.0], 1.9, fovy=50.0)
    h, w = 10, 12
    mix = torch.tensor([[0.8, -0.3, 0.5], [0.2, 1.1, -0.4], [-0.6, 0.3, 0.9]], dtype=torch.float64)

    def alpha(v):
        return rasterize_mesh_soft(v, faces, cams, h, w, sigma=0.6)["alpha"]

    def rgb(v):
        raster = rasterize_mesh_soft(v, faces, cams, h, w, sigma=0.6)
        return shade(raster, lambda p: torch.sigmoid(p @ mix), torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64), 3)

    v = verts.clone().requires_grad_()
    assert alpha(v).min() < 0.05 and alpha(v).max() > 0.9  # the image holds both a silhouette and its inside
    assert torch.autograd.gradcheck(alpha, (v,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(rgb, (v,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(
        lambda x: rasterize_mesh_soft(x, faces, cams, h, w)["depth"], (v,), eps=1e-6, atol=1e-5
    )


def test_silhouette_fitting_grows_a_small_sphere_to_the_target():
    torch.manual_seed(0)
    cams = orbit_cameras([0, 60, 120, 180, 240, 300, 30, 210], [0, 0, 0, 0, 0, 0, 60, -60], 2.5, fovy=40.0)
    res = 32
    target_mesh = trimesh.creation.icosphere(3, 0.6)
    target = rasterize_mesh_soft(
        torch.tensor(target_mesh.vertices, dtype=torch.float32), torch.tensor(target_mesh.faces), cams, res, res
    )
    model = Mesh(MeshConfig(subdivisions=2, init_radius=0.4))

    def iou() -> float:
        with torch.no_grad():
            mask = rasterize_mesh_soft(model.vertices, model.faces, cams, res, res)["face"] >= 0
        return float((mask & (target["face"] >= 0)).sum() / (mask | (target["face"] >= 0)).sum())

    start = iou()
    optimizer = torch.optim.Adam([model.offsets], lr=1e-2)
    for _ in range(50):
        optimizer.zero_grad()
        alpha = rasterize_mesh_soft(model.vertices, model.faces, cams, res, res)["alpha"]
        loss = (alpha - target["alpha"]).square().mean() + sum(weighted_terms(model).values())
        loss.backward()
        optimizer.step()
    radius = float(model.vertices.detach().norm(dim=-1).mean())
    assert start < 0.5 and iou() > 0.85
    assert abs(radius - 0.6) < 0.06


# ------------------------------------------------------------ the Mesh representation
def test_mesh_render_shapes_ranges_background_and_gradients():
    torch.manual_seed(0)
    model = Mesh(MeshConfig(subdivisions=2))
    cams = orbit_cameras([0.0, 90.0], 15.0, 2.8)
    out = model.render(cams, 24, 24)
    assert set(out) == {"rgb", "alpha", "depth", "normal"}
    for key, channels in (("rgb", 3), ("alpha", 1), ("depth", 1), ("normal", 3)):
        assert out[key].shape == (2, channels, 24, 24) and torch.isfinite(out[key]).all()
    assert out["rgb"].min() >= 0 and out["rgb"].max() <= 1 and out["alpha"].min() >= 0 and out["alpha"].max() <= 1
    assert out["alpha"][:, 0, 12, 12].min() > 0.99 and out["alpha"][:, 0, 0, 0].max() == 0
    assert torch.allclose(out["rgb"][:, :, 0, 0], torch.ones(2, 3))  # white background by default
    normal_norm = out["normal"].norm(dim=1)
    assert torch.allclose(normal_norm[out["depth"][:, 0] > 0], torch.tensor(1.0), atol=1e-5)
    dark = model.render(cams, 24, 24, background=torch.zeros(3))["rgb"]
    assert dark[:, :, 0, 0].abs().max() == 0

    (out["rgb"].mean() + out["depth"].mean()).backward()
    for name, p in (("offsets", model.offsets), ("texture", model.encoding.table), ("mlp", model.colour_net[0].weight)):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert [g["name"] for g in model.param_groups()] == ["vertices", "texture", "mlp"]
    assert not hasattr(model, "__len__")


def weighted_terms(model: Mesh) -> dict:
    """The mesh's smoothness terms as the Trainer adds them: each times its weight (the config's lambdas)."""
    weights = model.loss_weights()
    return {k: weights[k[len("loss_") :]] * v for k, v in model.training_losses().items()}


def test_regularisers_grow_with_noise_and_respect_their_lambdas():
    model = Mesh(MeshConfig(subdivisions=2))
    smooth = {k: float(v.detach()) for k, v in model.training_losses().items()}
    assert set(smooth) == {"loss_laplacian", "loss_normal_consistency"}
    with torch.no_grad():
        model.offsets += 0.02 * torch.randn(model.offsets.shape, generator=torch.Generator().manual_seed(0))
    noisy = model.training_losses()
    assert noisy["loss_laplacian"] > 3 * smooth["loss_laplacian"]
    assert noisy["loss_normal_consistency"] > 3 * smooth["loss_normal_consistency"]
    noisy["loss_laplacian"].backward()
    assert model.offsets.grad.abs().sum() > 0
    quiet = Mesh(MeshConfig(subdivisions=1, lambda_laplacian=0.0, lambda_normal_consistency=0.5))
    assert quiet.loss_weights() == {"laplacian": 0.0, "normal_consistency": 0.5}
    assert set(quiet.training_losses()) == {"loss_normal_consistency"}  # a term with weight 0 is not computed
    terms, weighted = quiet.training_losses(), weighted_terms(quiet)
    value = float(terms["loss_normal_consistency"].detach())
    assert float(weighted["loss_normal_consistency"].detach()) == pytest.approx(0.5 * value)


def test_normal_consistency_of_a_folded_pair_is_one_minus_cos():
    model = Mesh(MeshConfig(subdivisions=0, lambda_laplacian=0.0, lambda_normal_consistency=1.0))
    angle = 0.7  # two triangles sharing the edge (0,0,0)-(1,0,0), folded by this angle
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -math.cos(angle), -math.sin(angle)]])
    model.set_mesh(verts, torch.tensor([[0, 1, 2], [1, 0, 3]]))
    value = float(model.training_losses()["loss_normal_consistency"].detach())
    assert value == pytest.approx(1 - math.cos(angle), abs=1e-5)


def test_load_tensors_round_trips_a_mesh_with_another_vertex_count():
    torch.manual_seed(1)
    source = Mesh(MeshConfig(subdivisions=1))
    with torch.no_grad():
        source.offsets += 0.03 * torch.randn(source.offsets.shape)
        source.encoding.table.normal_(0, 0.5)
    target = Mesh(MeshConfig(subdivisions=2))
    assert len(target.faces) != len(source.faces)
    target.load_tensors({k: v.clone() for k, v in source.state_dict().items()})
    assert torch.equal(target.vertices, source.vertices) and torch.equal(target.faces, source.faces)
    cams = orbit_cameras([20.0], 10.0, 2.8)
    assert torch.allclose(target.render(cams, 16, 16)["rgb"], source.render(cams, 16, 16)["rgb"])
    for key, value in source.training_losses().items():
        assert float(target.training_losses()[key].detach()) == pytest.approx(float(value.detach()))
    assert [len(g["params"][0]) for g in target.param_groups()[:1]] == [len(source.base_vertices)]


# ------------------------------------------------------------ large steps (Laplacian-preconditioned offsets)
def test_large_steps_offsets_solve_the_smoothing_system_and_start_at_the_base_mesh():
    weight = 15.0
    model = Mesh(MeshConfig(subdivisions=2, large_steps=weight))
    assert torch.equal(model.vertices, model.base_vertices)  # a hand-over keeps its geometry
    with torch.no_grad():
        model.offsets.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    offsets = (model.vertices - model.base_vertices).detach().double()
    both = torch.cat([model.edges, model.edges.flip(-1)])  # (I + w (D - A)) offsets, from the edge list
    neighbour_sum = torch.zeros_like(offsets).index_add(0, both[:, 0], offsets[both[:, 1]])
    rebuilt = offsets + weight * (model.degree.double()[:, None] * offsets - neighbour_sum)
    assert torch.allclose(rebuilt, model.offsets.detach().double(), atol=1e-5)
    assert offsets.square().sum(-1).mean() < 0.05 * model.offsets.detach().square().sum(-1).mean()  # noise damped
    assert torch.equal(copy.deepcopy(model).vertices, model.vertices)  # the factor is rebuilt in a copy
    with torch.no_grad():  # a uniform parameter passes unchanged: the system keeps translations
        model.offsets.copy_(torch.tensor([0.1, -0.2, 0.3]).expand_as(model.offsets))
    assert torch.allclose(model.vertices - model.base_vertices, model.offsets.detach(), atol=1e-5)


def test_large_steps_spread_a_one_vertex_gradient_over_its_neighbourhood():
    moved = {}
    for weight in (0.0, 10.0):
        model = Mesh(MeshConfig(subdivisions=2, large_steps=weight))
        model.vertices[0, 1].backward()
        step = model.offsets.grad  # a gradient step on the parameters, seen in vertex space
        with torch.no_grad():
            model.offsets -= step
        shift = (model.vertices - model.base_vertices).detach().norm(dim=-1)
        neighbours = model.edges[(model.edges == 0).any(-1)].flatten().unique()
        moved[weight] = (float(shift[0]), float(shift[neighbours[neighbours != 0]].min()))
    assert moved[0.0][1] == 0 and moved[0.0][0] > 0  # plain offsets: one vertex moves
    assert moved[10.0][1] > 0.5 * moved[10.0][0] > 0  # large steps: its neighbours move almost as far


def test_large_steps_fit_a_silhouette_at_a_learning_rate_that_crumples_plain_offsets():
    cams = orbit_cameras([0, 60, 120, 180, 240, 300, 30, 210], [0, 0, 0, 0, 0, 0, 60, -60], 2.5, fovy=40.0)
    res = 32
    target_mesh = trimesh.creation.icosphere(3, 0.6)
    target = rasterize_mesh_soft(
        torch.tensor(target_mesh.vertices, dtype=torch.float32), torch.tensor(target_mesh.faces), cams, res, res
    )["alpha"]
    rough = {}
    for weight in (0.0, 20.0):
        model = Mesh(
            MeshConfig(
                subdivisions=2, init_radius=0.4, large_steps=weight, lambda_laplacian=0.0, lambda_normal_consistency=0.0
            )
        )
        optimizer = torch.optim.Adam([model.offsets], lr=5e-2)
        for _ in range(30):
            optimizer.zero_grad()
            alpha = rasterize_mesh_soft(model.vertices, model.faces, cams, res, res)["alpha"]
            (alpha - target).square().mean().backward()
            optimizer.step()
        with torch.no_grad():
            radius = model.vertices.norm(dim=-1)
            rough[weight] = (float(radius.std()), float(radius.mean()))
    assert abs(rough[20.0][1] - 0.6) < 0.06  # reached the target
    assert rough[20.0][0] < 0.5 * rough[0.0][0]  # and stayed round where plain offsets did not


@pytest.mark.parametrize("shading", ["albedo", "lambert"])
def test_fit_texture_learns_a_two_colour_target_and_export_mesh_reports_it(shading):
    torch.manual_seed(0)
    model = Mesh(MeshConfig(subdivisions=3, shading=shading))
    points = model.vertices.detach()
    colours = torch.where(points[:, 1:2] > 0, torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.2, 0.9]))
    normals = vertex_normals(points, model.faces)
    if shading == "lambert":  # what a coarse stage's export holds: the albedo under the toy light rig
        colours = colours * light_intensity(normals)
    before = float((model.surface_colour(points, normals) - colours).square().mean().sqrt().detach())
    error = model.fit_texture(points, colours, normals, steps=150)
    assert before > 0.2 and error < 0.08
    vertices, faces, vertex_colours = model.export_mesh()
    assert vertices.shape == (642, 3) and faces.shape == (1280, 3) and vertex_colours.shape == (642, 3)
    assert vertex_colours.min() >= 0 and vertex_colours.max() <= 1
    assert abs(vertex_colours - colours.numpy()).mean() < 0.08  # lambert: the light is baked into the export


def test_lambert_mesh_sphere_matches_the_toy_worlds_shaded_sphere_whatever_the_winding():
    """A sphere mesh of the toy sphere's radius, its albedo fitted to the toy colour, rendered with lambert shading
    looks like the toy world's render (same light rig, smooth normals); unlit it does not; reversed faces shade the
    same (normals turn toward the camera)."""
    torch.manual_seed(0)
    cams = orbit_cameras([30.0, 200.0], [20.0, -5.0], 2.8)
    truth = render_toy("sphere", "green", cams, 32, 32, supersample=1)
    inside = (truth["alpha"] > 0.99)[:, 0]
    errors = {}
    for shading, flip in (("lambert", False), ("lambert", True), ("albedo", False)):
        model = Mesh(MeshConfig(subdivisions=4, init_radius=0.68, shading=shading))
        if flip:
            model.set_mesh(model.base_vertices, model.faces.flip(-1))
        with torch.no_grad():  # the albedo: the toy green, lit by nothing
            model.colour_net[-1].weight.zero_()
            model.colour_net[-1].bias.copy_(torch.logit(part_colours(get_object("sphere"), "green")[0]))
        out = model.render(cams, 32, 32)
        mask = inside & (out["alpha"][:, 0] > 0.99)
        errors[(shading, flip)] = float((out["rgb"] - truth["rgb"]).detach().abs().permute(0, 2, 3, 1)[mask].mean())
    assert errors[("lambert", False)] < 0.01 and errors[("lambert", True)] < 0.01
    assert errors[("albedo", False)] > 0.1


def test_lambert_shading_moves_vertices_from_inside_the_silhouette():
    """Interior pixels' brightness depends on the normals, so a loss on them alone moves the vertices; unlit, with
    a constant colour, it does not."""
    cams = front_camera()
    grads = {}
    for shading in ("lambert", "albedo"):
        torch.manual_seed(0)
        model = Mesh(MeshConfig(subdivisions=2, init_radius=0.6, shading=shading))
        with torch.no_grad():
            model.colour_net[-1].weight.zero_()
        out = model.render(cams, 24, 24)
        interior = (out["alpha"] > 0.999).float()
        (out["rgb"] * interior).sum().backward()
        grads[shading] = float(model.offsets.grad.norm())
    assert grads["lambert"] > 1e-3 and grads["albedo"] < 1e-6


@pytest.mark.parametrize(
    "field, value",
    [
        ("sigma", 0.0),
        ("sigma", -1.0),
        ("subdivisions", 7),
        ("subdivisions", -1),
        ("init_radius", 0.0),
        ("init_radius", 1.5),
        ("lambda_laplacian", -1.0),
        ("lambda_normal_consistency", -0.1),
        ("lr_vertices", "fast"),
        ("max_resolution", 4),
        ("hidden", 0),
        ("handover_faces", 0),
        ("shading", "phong"),
        ("large_steps", -1.0),
    ],
)
def test_bad_mesh_config_values_raise_one_line_config_errors(field, value):
    with pytest.raises(ConfigError, match=field) as err:
        MeshConfig(**{field: value})
    assert "\n" not in str(err.value)
