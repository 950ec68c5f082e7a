"""Drag-SDS (guidance_spec.md 9): the teacher's input, the gradient's identities, the schedules, the Gaussian groups
and the estimator's loss."""

from __future__ import annotations

import math

import pytest
import torch

from threedistill.cameras import orbit_cameras
from threedistill.editing.drag_model import DeformationField, DragFieldConfig, DragModel, knn_ring, phase_switch
from threedistill.editing.drag_sds import DragSDSConfig, DragSDSGuidance
from threedistill.editing.region import EditRegion
from threedistill.errors import ConfigError, PriorLoadError
from threedistill.priors.drag_teacher import DragTeacher, drag_condition, guidance_scale


@pytest.fixture(scope="module")
def tiny_teacher(tiny_drag_teacher):
    return DragTeacher(tiny_drag_teacher)


def views(b: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(b, 3, size, size, generator=g)
    part = torch.zeros(b, 1, size, size)
    part[:, :, 10:16, 12:20] = 1.0
    handles = torch.tensor([[[15.0, 13.0]]]).expand(b, 1, 2).clone()
    return reference, part, handles


def test_with_handles_on_their_targets_the_point_hint_is_the_reference_itself():
    reference, part, handles = views()
    ref = reference * 2 - 1
    cond, uncond, m = drag_condition(ref, part, handles, handles.clone())
    assert torch.allclose(cond[:, 7:10], ref, atol=1e-5)  # nothing moved
    assert torch.equal(uncond[:, 7:10], ref) and not uncond[:, 10:].any()  # the unconditional input has no points
    assert cond[:, 10:].amax() > 0.5  # ... while the conditional one marks them
    moved, _, m_moved = drag_condition(ref, part, handles, handles + torch.tensor([6.0, 0.0]))
    assert torch.allclose(moved[:, 7:10, 12, 20], ref[:, :, 12, 14], atol=1e-5)  # the part pasted 6 px to the right
    assert m_moved.sum() > m.sum()  # the mask covers where the part goes


def test_the_decaying_point_cfg_and_the_phase_switch_follow_the_spec():
    assert guidance_scale(0, 1500) == 4.0 and guidance_scale(1500, 1500) == 1.0
    assert guidance_scale(750, 1500) == pytest.approx(3 * 0.25 + 1)
    assert phase_switch(1500) == 544  # spec 9.5's k_tri for K = 1500


def test_drag_sds_gradient_is_zero_when_the_estimator_agrees_with_the_teacher(toy_prior, tiny_teacher):
    guidance = DragSDSGuidance(toy_prior, DragSDSConfig(trainer_max_steps=100), teacher=tiny_teacher)
    reference, part, handles = views()
    targets = handles.clone()  # handle = target
    x = toy_prior.to_diffusion_space(reference)
    t = guidance.sample_timesteps(2, 10)
    noise = torch.randn_like(x)
    args = (x, orbit_cameras([0, 90], 0, 2.0), None, 10, t, noise)
    kwargs = dict(reference=reference, part=part, handles=handles, targets=targets)
    guidance.estimator_eps = lambda x_t, t: guidance.teacher_eps(x_t, t, 10, reference, part, handles, targets)
    assert torch.equal(guidance.gradient(*args, **kwargs), torch.zeros_like(x))


def test_drag_sds_gradient_is_two_w_times_the_difference_and_t_decreases(toy_prior, tiny_teacher):
    guidance = DragSDSGuidance(toy_prior, DragSDSConfig(trainer_max_steps=100), teacher=tiny_teacher)
    ts = [int(guidance.sample_timesteps(4, k)[0]) for k in (0, 50, 100)]
    assert ts == [980, int(980 - 0.5 * (980 - 20)), 20] and guidance.sample_timesteps(4, 7).unique().numel() == 1
    reference, part, handles = views()
    rgb = reference.clone().requires_grad_(True)
    cams = orbit_cameras([0, 90], 0, 2.0)
    kwargs = dict(reference=reference, part=part, handles=handles, targets=handles + 3)
    g = torch.Generator().manual_seed(3)
    out = guidance(rgb, cams, None, 30, g, **kwargs)
    x = toy_prior.to_diffusion_space(rgb)
    t = guidance.sample_timesteps(2, 30)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    x_t = toy_prior.add_noise(x.detach(), noise, t)
    delta = guidance.teacher_eps(x_t, t, 30, **kwargs) - guidance.estimator_eps(x_t, t)
    _, sigma = toy_prior.alpha_sigma(t)
    (grad,) = torch.autograd.grad(out["loss_drag"], rgb, retain_graph=True)
    # dL/dx = (2/B) w (eps_drag - eps_psi) with B = 2, w = sigma^2; x = 2 rgb - 1 at the prior's 32 px
    assert torch.allclose(grad, 2 * (2 / 2) * sigma**2 * delta, atol=1e-5)
    # the estimator's own loss reaches only the LoRA and the embedding, never the render
    assert (
        not out["loss_estimator"].requires_grad
        or torch.autograd.grad(out["loss_estimator"], rgb, allow_unused=True)[0] is None
    )
    grads = torch.autograd.grad(out["loss_estimator"], [guidance.embedding])
    assert grads[0].abs().sum() > 0


def test_a_teacher_directory_of_another_kind_is_a_one_line_error(tmp_path):
    with pytest.raises(PriorLoadError, match="not a drag teacher directory"):
        DragTeacher(tmp_path)
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(PriorLoadError, match="needs its own loader"):
        DragTeacher(tmp_path)


def gaussians_fixture(n: int = 300):
    from threedistill.representations.gaussians import Gaussians, GaussiansConfig

    torch.manual_seed(0)
    g = Gaussians(GaussiansConfig(num_points=n, sh_degree=1))
    return g


def test_the_field_starts_at_zero_and_the_rest_group_stays_bit_identical():
    g = gaussians_fixture()
    means = g.means.detach()
    mask = means[:, 0] > 0.3
    ring = knn_ring(means, mask, k=5)
    assert ring.any() and not (ring & mask).any()
    model = DragModel(g, mask, EditRegion("sphere", torch.zeros(3), torch.ones(1)), steps=20, ring_k=5)
    for name, value in model.tensors().items():
        assert torch.equal(value, getattr(g, name).detach())  # zero-initialised last layers: nothing moved yet
    opt = torch.optim.Adam([p for group in model.param_groups() for p in group["params"]], lr=0.05)
    cams = orbit_cameras([0, 120, 240], 20, 3.0)
    for _ in range(5):
        out = model.render(cams, 16, 16)
        loss = ((out["rgb"] - torch.tensor([0.0, 0.0, 1.0])[:, None, None]) ** 2).mean()
        opt.zero_grad()
        (loss + model.training_losses(out, {"reg": 1.0})["loss_reg"]).backward()
        opt.step()
    baked = model.baked()
    rest = ~(mask | ring)
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh"):
        assert torch.equal(getattr(baked, name)[rest], getattr(g, name).detach()[rest])  # bit-identical
    assert not torch.equal(baked.means[mask], g.means.detach()[mask])  # the mask moved through the field
    assert torch.equal(g.means.detach(), means)  # the source itself is untouched


def test_the_deformation_field_heads_see_where_points_are():
    field = DeformationField(DragFieldConfig(channels=4, resolutions=[8]), torch.zeros(3), 1.0)
    with torch.no_grad():
        for head in field.heads:
            head[-1].weight.normal_()
    a, _ = field(torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.3, 0.1]]))
    assert not torch.allclose(a[0], a[1]) and math.isfinite(float(a.detach().sum()))


def test_max_move_bounds_every_displacement():
    g = gaussians_fixture()
    mask = g.means.detach()[:, 0] > 0.3
    model = DragModel(g, mask, EditRegion("sphere", torch.zeros(3), torch.ones(1)), steps=4, ring_k=5, max_move=0.01)
    with torch.no_grad():
        for head in model.field.heads:
            head[-1].bias.fill_(1.0)  # a field that wants to move everything by sqrt(3)
    d_mask, d_ring = model.displacements()
    assert d_mask.norm(dim=-1).max() <= 0.01 + 1e-6 and d_ring.norm(dim=-1).max() <= 0.01 + 1e-6
    model.max_move = None
    assert model.displacements()[0].norm(dim=-1).min() > 1.0


def test_edits_bound_the_drag_field_by_default_and_null_unbounds_it():
    from threedistill.workflows.edit_config import DragEditConfig

    assert DragEditConfig().max_move == 2.0
    assert DragEditConfig(max_move=None).max_move is None
    with pytest.raises(ConfigError, match="drag.max_move must be positive"):
        DragEditConfig(max_move=0)


def test_a_warp_start_puts_the_mask_where_the_geometric_drag_does_and_nothing_else():
    from threedistill.editing.drag_points import DragPoints, default_falloff, warp_gaussians, warp_offsets
    from threedistill.workflows.edit_config import DragEditConfig

    g = gaussians_fixture()
    means = g.means.detach()
    mask = means[:, 0] > 0.3
    points = DragPoints(torch.tensor([[0.6, 0.0, 0.0]]), torch.tensor([[0.6, 0.4, 0.0]]))
    falloff = default_falloff(points)
    start = warp_offsets(means, mask, points, falloff)
    region = EditRegion("sphere", torch.zeros(3), torch.ones(1))
    model = DragModel(g, mask, region, steps=4, ring_k=5, start=start)
    after = model.tensors()["means"]  # the field's last layers start at zero: the start alone
    assert torch.allclose(after, warp_gaussians(means, mask, points, falloff), atol=1e-6)
    assert torch.equal(after[~mask], means[~mask])  # ring and rest where they were
    assert start.norm(dim=-1).max() > 0.1  # it did move something
    cold = DragModel(g, mask, region, steps=4, ring_k=5)  # the default (DYG): the scene as it was
    assert torch.equal(cold.tensors()["means"], means)
    assert "mask_start" not in model.state_dict() and "drag.mask_start" not in model.state_dict()
    assert DragEditConfig().start == "source" and DragEditConfig(start="warp").start == "warp"
    with pytest.raises(ConfigError, match="drag.start must be source, warp or joint"):
        DragEditConfig(start="warped")


def test_a_joint_start_turns_the_mask_and_the_hint_can_come_from_it():
    from threedistill.editing.drag_points import DragPoints, joint_motion
    from threedistill.workflows.edit_config import DragEditConfig

    g = gaussians_fixture()
    means = g.means.detach()
    mask = means[:, 0] > 0.3
    points = DragPoints(torch.tensor([[0.9, 0.0, 0.0]]), torch.tensor([[0.7, 0.55, 0.0]]))
    motion = joint_motion(means, mask, points)
    start = motion.apply(means[mask]) - means[mask]
    region = EditRegion("sphere", torch.zeros(3), torch.ones(1))
    model = DragModel(g, mask, region, steps=4, ring_k=5, start=start, start_quats=motion.turn_quats(g.quats[mask]))
    moved = motion.moved(g, mask)
    t = model.tensors()
    assert torch.allclose(t["means"], moved.means, atol=1e-6) and torch.allclose(t["quats"], moved.quats)
    assert torch.equal(t["quats"][~mask], g.quats.detach()[~mask])  # the others keep their orientation
    assert DragEditConfig(start="joint", hint="start").hint == "start"
    with pytest.raises(ConfigError, match="drag.hint=start renders the part where drag.start puts it"):
        DragEditConfig(hint="start")
    with pytest.raises(ConfigError, match="drag.hint must be 2d or start"):
        DragEditConfig(start="joint", hint="3d")
