"""Multi-stage runs: each stage is the run's config under its own overrides, continues from the previous stage,
and a run interrupted anywhere resumes bit-identical."""

import pytest
import torch
from test_generate import FAST, final_tensors

from threedistill.errors import ConfigError
from threedistill.workflows.generate import generate, load_generate_config, stage_configs

STAGES = (
    'stages=[{name: coarse, steps: 3, overrides: ["trainer.resolution=16"]}, '
    '{name: fine, steps: 3, overrides: ["guidance_type=asd", "guidance.plus_ratio=0.2"]}]'
)


def staged(tmp_path, name, **kw):
    return generate(
        prompt="a red cone",
        representation="gaussians",
        seed=1,
        out=str(tmp_path / name),
        progress=False,
        log=lambda s: None,
        overrides=FAST["gaussians"] + ["trainer.preview_every=0", "trainer.checkpoint_every=2", STAGES],
        **kw,
    )


def test_stage_configs_apply_their_overrides():
    cfg = load_generate_config([], ["prompt=a red cone", "guidance.guidance_scale=12", STAGES])
    first, second = stage_configs(cfg)
    assert cfg.trainer.steps == 6 and first.trainer.steps == second.trainer.steps == 3
    assert first.guidance_type == "sds" and first.guidance.guidance_scale == 12 and first.trainer.resolution == 16
    # a new method starts from its own defaults: ASD's CFG and window, not the first stage's settings
    assert second.guidance_type == "asd" and second.guidance.plus_ratio == 0.2
    assert second.guidance.guidance_scale == 7.5 and second.guidance.min_step_percent == [0, 0.5, 0.02, 300]
    with pytest.raises(ConfigError, match=r"stage 1: guidance 'sds' has no parameter 'plus_ratio'"):
        stage_configs(
            load_generate_config(
                [], ["prompt=x", 'stages=[{steps: 1}, {steps: 1, overrides: ["guidance.plus_ratio=1"]}]']
            )
        )
    with pytest.raises(ConfigError, match="stage 0 .a.: unknown config key 'trainer.resolutoin'"):
        stage_configs(load_generate_config([], ["prompt=x", 'stages=[{name: a, overrides: ["trainer.resolutoin=3"]}]']))
    with pytest.raises(ConfigError, match="each stage needs >= 1 step"):
        load_generate_config([], ["prompt=x", "stages=[{steps: 0}]"])


def test_a_stage_is_overridden_by_index_and_bad_indices_give_one_line_errors():
    cfg = load_generate_config(
        [], ["prompt=x", STAGES, "stages.1.steps=5", 'stages.0.overrides=["trainer.resolution=24"]']
    )
    first, second = stage_configs(cfg)
    assert (first.trainer.steps, second.trainer.steps, cfg.trainer.steps) == (3, 5, 8)
    assert first.trainer.resolution == 24 and second.guidance_type == "asd"  # the other stage keeps its overrides
    for bad, message in (
        ("stages.2.steps=1", "stages has 2 items, indexed 0..1"),
        ("stages.1.stepz=1", "stepz"),
        ("stages.one.steps=1", "address a list's items by index"),
        ("stages.1.steps=many", "many"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            load_generate_config([], ["prompt=x", STAGES, bad])
        assert bad in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("stop_at", [3, 5])  # at the stage boundary, and inside the second stage
def test_interrupted_multi_stage_run_resumes_bit_identical(tmp_path, stop_at):
    full = staged(tmp_path, "full")
    assert full.trainer.stage == 1 and full.config.guidance_type == "asd" and full.trainer.step == 3
    cut = staged(tmp_path, "cut", stop_at=stop_at)
    resumed = generate(resume=cut.dir, progress=False, log=lambda s: None)
    a, b = final_tensors(full), final_tensors(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    logged = (full.dir / "log.jsonl").read_text()
    assert '"loss_asd"' in logged and '"loss_sds"' in logged and '"stage": 1' in logged


def test_a_multi_stage_run_is_evaluated_at_its_last_stage(tmp_path):
    from threedistill.workflows.results import evaluate_run

    run = staged(tmp_path, "eval")
    metrics = evaluate_run(run.dir)
    assert metrics["step"] == 3 and 0.0 <= metrics["silhouette_iou"] <= 1.0


def test_schedule_steps_stretch_every_schedule(tmp_path):
    """Schedules written for 6 steps, run in 3 with trainer.schedule_steps=6, equal the same schedules written for 3."""

    def run(name, extra):
        return generate(
            prompt="a blue cube",
            representation="gaussians",
            seed=0,
            steps=3,
            out=str(tmp_path / name),
            progress=False,
            log=lambda s: None,
            overrides=FAST["gaussians"]
            + ["trainer.checkpoint_every=0", "trainer.preview_every=0", "gaussians.densify_from=100"]
            + extra,
        ).model

    native = run("a", ["gaussians.lr_means=[0,0.01,0.0,3]", "guidance.max_step_percent=[0,0.98,0.5,3]"])
    stretched = run(
        "b",
        ["gaussians.lr_means=[0,0.01,0.0,6]", "guidance.max_step_percent=[0,0.98,0.5,6]", "trainer.schedule_steps=6"],
    )
    absolute = run("c", ["gaussians.lr_means=[0,0.01,0.0,6]", "guidance.max_step_percent=[0,0.98,0.5,6]"])
    assert torch.equal(native.means, stretched.means) and not torch.equal(native.means, absolute.means)


def test_stabledreamer_config_switches_to_the_latent_prior(tmp_path):
    """configs/generate/stabledreamer.yaml: the pixel prior, then the latent prior (renders through the VAE)."""
    import json

    from omegaconf import OmegaConf

    from threedistill.config import packaged_config

    path = packaged_config("generate", "stabledreamer.yaml")
    first, second = stage_configs(load_generate_config([path], ["prompt=a red cone"]))
    assert first.prior is None and second.prior == "toyworld-latent" and first.trainer.steps == 150
    short = [{"name": s.name, "steps": 2, "overrides": list(s.overrides)} for s in OmegaConf.load(path).stages]
    run = generate(
        prompt="a red cone",
        seed=0,
        out=str(tmp_path),
        progress=False,
        log=lambda s: None,
        config=path,
        overrides=FAST["gaussians"]
        + ["trainer.preview_every=0", "trainer.checkpoint_every=0", f"stages={json.dumps(short)}"],
    )
    assert run.trainer.stage == 1 and run.trainer.step == 2 and run.trainer.guidance.prior.latent
    assert run.config.prior == "toyworld-latent" and run.config.trainer.resolution == 16
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_a_methods_settings_for_one_representation_apply_only_there():
    """configs/guidance/sds-nerf.yaml lies over sds.yaml for NeRF runs only (a mesh run, which has no such file,
    keeps sds.yaml's settings), under the user's settings, and a stage that switches to SDS in a NeRF run gets it
    too."""
    from omegaconf import OmegaConf

    from threedistill.config import packaged_config
    from threedistill.workflows.generate import default_config_path

    shared = OmegaConf.load(packaged_config("guidance", "sds.yaml")).guidance
    for_nerf = OmegaConf.load(packaged_config("guidance", "sds-nerf.yaml")).guidance
    assert for_nerf.guidance_scale != shared.guidance_scale

    def load(rep, *extra):
        return load_generate_config([default_config_path(rep)], ["prompt=x", f"representation={rep}", *extra])

    assert load("nerf", "guidance_type=sds").guidance.guidance_scale == for_nerf.guidance_scale
    assert load("nerf", "guidance_type=sds").guidance.max_step_percent == for_nerf.max_step_percent
    assert load("mesh", "guidance_type=sds").guidance.guidance_scale == shared.guidance_scale
    assert load("mesh", "guidance_type=sds").guidance.max_step_percent == list(shared.max_step_percent)
    for rep in ("triplane", "gaussians"):  # sds-triplane.yaml, sds-gaussians.yaml
        assert load(rep, "guidance_type=sds").guidance.guidance_scale == for_nerf.guidance_scale
    assert load("nerf", "guidance_type=sds", "guidance.guidance_scale=3").guidance.guidance_scale == 3
    switched = stage_configs(
        load(
            "nerf",
            "guidance_type=nfsd",
            "guidance.guidance_scale=5",
            'stages=[{steps: 1}, {steps: 1, overrides: ["guidance_type=sds"]}]',
        )
    )
    assert switched[0].guidance_type == "nfsd" and switched[0].guidance.guidance_scale == 5
    assert switched[1].guidance.guidance_scale == for_nerf.guidance_scale


def test_a_method_file_for_a_representation_overrides_its_defaults_and_the_user_overrides_both(tmp_path):
    """configs/guidance/sds-gaussians.yaml (SDS's 200-step recipe) comes after configs/generate/gaussians.yaml (300
    steps, shared by every method), and a user's YAML after both; nfsd-gaussians.yaml gives NFSD the same recipe
    without its annealed timestep window; another method, the multi-view prior and the staged configs keep the
    Gaussians' 300-step settings."""
    from threedistill.config import packaged_config
    from threedistill.workflows.generate import new_run_config

    def pick(cfg):
        g = cfg.gaussians
        return cfg.trainer.steps, g.densify_from, g.densify_until, g.densify_every, g.lr_sh

    shared = (300, 100, 250, 50, 0.01)
    assert pick(new_run_config(prompt="x")) == (200, 67, 167, 33, 0.02)
    assert pick(new_run_config(prompt="x", guidance="nfsd")) == (200, 67, 167, 33, 0.02)
    assert new_run_config(prompt="x", guidance="nfsd").guidance.max_step_percent == 0.98
    assert new_run_config(prompt="x", guidance="nfsd", representation="nerf").guidance.max_step_percent != 0.98
    assert pick(new_run_config(prompt="x", guidance="csd")) == shared
    assert pick(new_run_config(prompt="x", prior="toyworld-mv")) == shared
    assert pick(new_run_config(prompt="x", steps=250)) == (250, 67, 167, 33, 0.02)
    mine = tmp_path / "mine.yaml"
    mine.write_text("trainer:\n  steps: 120\ngaussians:\n  lr_sh: 0.005\n")
    assert pick(new_run_config(prompt="x", config=mine)) == (120, 67, 167, 33, 0.005)
    for name in ("gaussians-then-mesh", "gaussians-then-mesh-oracle", "stabledreamer"):
        coarse = stage_configs(new_run_config(prompt="x", config=packaged_config("generate", f"{name}.yaml")))[0]
        assert coarse.representation == "gaussians" and pick(coarse)[1:] == shared[1:], name


@pytest.mark.xdist_group("ray")  # one Ray instance at a time (tests/test_batch.py)
def test_stage_bench_on_ray_measures_what_it_measures_locally(tmp_path):
    """Two staged runs (a NeRF coarse stage, then a mesh stage) through `t3d bench stages`' runner, once on a
    local Ray instance two at a time and once on the local engine: the same rows in task order, the metrics of
    seeded runs bit-identical at the same thread count; with
    --resume the finished rows come back as they were."""
    from test_handover import MESH

    from threedistill.bench.stage_bench import run_stage_bench
    from threedistill.engines import EngineConfig

    pytest.importorskip("ray")
    config = tmp_path / "tiny-then-mesh.yaml"
    config.write_text(
        "representation: nerf\nstages:\n  - {name: coarse, steps: 2}\n"
        "  - {name: mesh, steps: 2, overrides: ['representation=mesh', 'trainer.resolution=16']}\n"
    )
    prompts, overrides = ["a red cone", "a blue cube"], FAST["nerf"] + MESH
    ray = EngineConfig("ray", jobs=2, cpus_per_run=1, work_dir=str(tmp_path))
    parallel = run_stage_bench([config], prompts, 1, tmp_path / "p", overrides, log=lambda s: None, engine=ray)
    local = EngineConfig("local", cpus_per_run=1)  # the same thread count: the same floating-point order
    series = run_stage_bench([config], prompts, 1, tmp_path / "s", overrides, log=lambda s: None, engine=local)
    assert [r["prompt"] for r in parallel] == [r["prompt"] for r in series] == prompts
    for a, b in zip(parallel, series):
        assert a["config"] == "tiny-then-mesh" and a["final_representation"] == "mesh"
        for key in ("coarse_mesh_chamfer", "final_mesh_chamfer", "final_mesh_colour_error", "final_silhouette_iou"):
            assert a[key] == b[key], key
    resumed = run_stage_bench([config], prompts, 1, tmp_path / "p", overrides, log=lambda s: None, reuse=True)
    assert [{k: v for k, v in r.items() if k != "task"} for r in resumed] == parallel  # read back, not run again


@pytest.mark.parametrize("name", ["gaussians-then-mesh-oracle", "nerf-then-mesh-oracle"])
def test_oracle_configs_refine_with_the_exact_prior(tmp_path, monkeypatch, name):
    """The -oracle configs keep the coarse stage on the trained prior and distil the mesh and texture stages from
    toyworld-oracle at CFG 1 (here the oracle reads a tiny stand-in for the rendered training set)."""
    import json

    from omegaconf import OmegaConf
    from test_empirical_prior import tiny_dataset

    from threedistill.config import packaged_config
    from threedistill.toyworld import oracle as empirical

    path = packaged_config("generate", f"{name}.yaml")
    stages = stage_configs(load_generate_config([path], ["prompt=a red cone"]))
    assert stages[0].prior is None and [s.prior for s in stages[1:]] == ["toyworld-oracle"] * 2
    assert all(s.guidance.guidance_scale == 1 and not s.guidance.perp_neg for s in stages[1:])
    if name.startswith("nerf"):
        return  # the run below is the same for both after the coarse stage
    tiny_dataset(40, size=32).save(tmp_path / "toyworld_500v_32px_seed3.npz")
    monkeypatch.setattr(empirical, "cache_dir", lambda kind: tmp_path)
    short = [
        {"name": s.name, "steps": 2, "overrides": list(s.get("overrides", []))} for s in OmegaConf.load(path).stages
    ]
    run = generate(
        prompt="a red cone",
        seed=0,
        out=str(tmp_path / "run"),
        progress=False,
        log=lambda s: None,
        config=path,
        overrides=FAST["gaussians"]
        + ["trainer.preview_every=0", "trainer.checkpoint_every=0", f"stages={json.dumps(short)}"],
    )
    assert run.trainer.stage == 2 and run.config.representation == "mesh"
    assert isinstance(run.trainer.guidance.prior, empirical.EmpiricalPrior)
    assert all(torch.isfinite(p).all() for p in run.model.parameters())
