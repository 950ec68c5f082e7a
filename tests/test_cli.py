import importlib.util
import json
import subprocess
import sys

import imageio.v3 as iio
import pytest
import trimesh


def t3d(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "threedistill.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_subcommands():
    result = t3d("--help")
    assert result.returncode == 0 and "toyworld" in result.stdout and "prior" in result.stdout


def test_toyworld_render_writes_image(tmp_path):
    out = tmp_path / "duck.png"
    result = t3d(
        "toyworld",
        "render",
        "--object",
        "red duck",
        "--azimuth",
        "30",
        "--elevation",
        "15",
        "--resolution",
        "48",
        "--what",
        "all",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    image = iio.imread(out)
    assert image.shape == (48, 4 * 48, 3)
    assert image[0, 0].tolist() == [255, 255, 255] and image[24, 24].tolist() != [255, 255, 255]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["toyworld", "render", "--object", "red duk"], "unknown toy object 'duk'"),
        (["toyworld", "render", "--object", "pink duck"], "unknown toy colour 'pink'"),
        (["toyworld", "render", "--object", "red duck", "--resolution", "0"], "--resolution must be between"),
        (["toyworld", "render", "--object", "red duck", "--out", "x.txt"], "cannot write image"),
        (["prior", "sample", "--prompt", "  "], "--prompt is empty"),
        (["prior", "info", "--prior", "/nonexistent/prior"], "prior directory not found"),
        (["prior", "train", "stepz=3"], "unknown config key 'stepz'"),
        (["prior", "train", "--config", "/nonexistent.yaml"], "config file not found"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, args, fragment):
    assert_one_line_error(t3d(*args, cwd=tmp_path), fragment)


def test_prior_sample_and_info(tmp_path):
    out = tmp_path / "grid.png"
    result = t3d("prior", "sample", "--prompt", "a blue cone, side view", "--n", "4", "--steps", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert iio.imread(out).shape == (2 * 32 + 2, 2 * 32 + 2, 3)
    info = t3d("prior", "info")
    assert info.returncode == 0 and "pixel, 32px, epsilon" in info.stdout


def test_prior_eval_writes_report(tmp_path):
    out = tmp_path / "gate.json"
    result = t3d("prior", "eval", "--n", "1", "--steps", "4", "--objects", "cone,duck", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert len(report["per_prompt"]) == 12 and 0.0 <= report["accuracy"]["all"] <= 1.0  # 6 colours x 2 objects
    assert ("PASS" in result.stdout) == report["passed"]
    assert out.with_suffix(".png").is_file()


def test_prior_train_smoke(tmp_path):
    """A few steps of the real training command produce a loadable diffusers directory."""
    result = t3d(
        "prior",
        "train",
        f"out={tmp_path}/p",
        f"dataset_cache={tmp_path}/d.npz",
        "views_per_subject=1",
        "resolution=16",
        "steps=2",
        "batch_size=4",
        "channels=[16,16]",
        "layers_per_block=1",
        "text_width=16",
    )
    assert result.returncode == 0, result.stderr
    from threedistill.priors import load_prior

    prior = load_prior(tmp_path / "p")
    assert prior.native_resolution == 16 and prior.info["trained_steps"] == 2


FAST_GAUSSIANS = [
    "gaussians.num_points=200",
    "trainer.batch_size=1",
    "trainer.resolution=16",
    "trainer.checkpoint_every=0",
    "trainer.preview_every=0",
]


def test_generate_then_eval_from_the_command_line(tmp_path):
    result = t3d(
        "generate", "--prompt", "a red cone", "--steps", "2", "--seed", "1", "--out", str(tmp_path), *FAST_GAUSSIANS
    )
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "a-red-cone").iterdir())
    assert run_dir.name.startswith("sds-gaussians@")
    for part in (
        "config.yaml",
        "metrics.json",
        "log.jsonl",
        "renders/views.png",
        "checkpoints/latest.json",
        "renders/eval_vs_ground_truth.png",
        "export/viewer.html",
    ):
        assert (run_dir / part).exists(), part
    assert "silhouette_iou" in (run_dir / "export/viewer.html").read_text()  # the page has the evaluation too
    # result and ground truth, two rows per evaluation elevation, 8 azimuths of 64 px (+2 px padding)
    assert iio.imread(run_dir / "renders/eval_vs_ground_truth.png").shape == (4 * 66 - 2, 8 * 66 - 2, 3)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["silhouette_iou"] <= 1.0 and metrics["wall_seconds"] > 0
    again = t3d("eval", str(run_dir))
    assert again.returncode == 0 and "silhouette_iou" in again.stdout
    # a Gaussians run also leaves a glb and the standard 3DGS point cloud; `t3d export` writes .splat on demand
    from threedistill.export.splats import read_ply, read_splat

    assert trimesh.load(run_dir / "export/model.glb", force="mesh").faces.shape[0] > 0
    params = read_ply(run_dir / "export/point_cloud.ply")
    exported = t3d("export", str(run_dir), "--format", "splat", "--out", str(tmp_path / "m.splat"))
    assert exported.returncode == 0, exported.stderr
    assert len(read_splat(tmp_path / "m.splat").means) == len(params.means) > 0
    # the exported glb is evaluated too, and `t3d bench export` tabulates it
    again = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= again["mesh_silhouette_iou"] <= 1.0 and again["mesh_chamfer"] > 0
    table = tmp_path / "export.md"
    bench = t3d(
        "bench", "export", "--runs-dir", str(tmp_path), "--faces", "2000", "--texture-size", "128", "--out", str(table)
    )
    assert bench.returncode == 0, bench.stderr
    assert "| gaussians | a red cone |" in table.read_text()
    wrong = t3d("export", str(run_dir), "--format", "fbx")
    assert wrong.returncode == 2 and "unknown export format 'fbx'; known: glb, obj, ply, splat, spz" in wrong.stderr
    budget = t3d("export", str(run_dir), "--faces", "10")
    assert budget.returncode == 2 and "--faces 10 is too small" in budget.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["generate", "--prompt", ""], "--prompt is empty"),
        (["generate", "--prompt", "a red cube", "--representation", "voxels"], "unknown representation 'voxels'"),
        (["generate", "--prompt", "a red cube", "--guidance", "magic"], "unknown guidance 'magic'"),
        (["generate", "--prompt", "a red cube", "trainer.stepz=3"], "unknown config key 'trainer.stepz'"),
        (["generate", "--resume", "/nonexistent/run"], "not a run directory"),
        (["eval", "/nonexistent/run"], "not a run directory"),
        (["export", "/nonexistent/run"], "not a run directory"),
        (["bench", "fidelity", "--prompts", "/nonexistent.txt"], "prompt file not found"),
        (["bench", "fidelity", "--jobs", "0"], "--jobs must be positive"),
        (["bench", "perf", "--repeats", "0"], "--repeats must be positive"),
        (["bench", "guidance", "--methods", "sds,magic"], "unknown guidance 'magic'; known: asd"),
        (
            ["bench", "guidance", "--representation", "voxels"],
            "--representation must be both (gaussians and nerf) or a comma-separated list",
        ),
        (["bench", "guidance", "--steps", "0"], "--steps must be positive"),
        (["bench", "guidance", "--rewards", "none,magic"], "--rewards: unknown reward 'magic'; known: none, clip"),
        (["bench", "guidance", "--rewards", "vlm"], "reward vlm needs reward.model=DIR"),
        (["bench", "guidance", "--rewards", ","], "--rewards is empty"),
        (["bench", "stages", "--configs", "nerf-then-mseh"], "unknown config 'nerf-then-mseh'; shipped: gaussians, "),
        (["bench", "stages", "--configs", "gaussians"], "has fewer than two stages"),
        (["bench", "stages", "--configs", "/nonexistent.yaml"], "config file not found: /nonexistent.yaml"),
        (["bench", "stages", "--jobs", "0"], "--jobs must be positive, got 0"),
        (["bench", "stages", "--seeds", "0"], "--seeds must be positive, got 0"),
        (["bench", "fidelity", "--jobs", "2"], "--engine local runs one run at a time; --jobs 2 needs --engine ray"),
        (["bench", "guidance", "--engine", "slurm"], "unknown engine 'slurm'; known: local, ray"),
        (["bench", "guidance", "--engine", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be positive, got 0"),
        (["bench", "fidelity", "--address", "auto"], "--address joins a Ray cluster: use it with --engine ray"),
        (["batch", "--prompts", "/nonexistent.txt"], "prompt file not found: /nonexistent.txt"),
        (["batch"], "a new batch needs --prompts FILE"),
        (["batch", "--resume", "--out", "nothing"], "nothing holds no batch (batch.json is missing)"),
        (["batch", "--engine", "ray", "--max-retries", "-1"], "--max-retries must be 0 or more, got -1"),
        (["generate", "--prompt", "a red cone", "--config", "stabledreamr"], "unknown config 'stabledreamr'; shipped:"),
        (["generate", "--prompt", "a red cone", "--representation", "voxels"], "unknown representation 'voxels'"),
        (["generate", "--prompt", "a red cube", "native=fast"], "native must be one of auto, native, torch"),
        (["generate", "--prompt", "a red cube", "--device", "gpu"], "device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_generate_bad_input(tmp_path, args, fragment):
    assert_one_line_error(t3d(*args, cwd=tmp_path), fragment)


RAY = importlib.util.find_spec("ray") is not None  # the cluster extra (.ci/run installs it)


@pytest.mark.xdist_group("ray")  # one Ray instance at a time (tests/test_batch.py)
def test_bench_fidelity_writes_a_table(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two toy prompts\na red cone\na blue duck\n")
    out = tmp_path / "fidelity.md"
    result = t3d(
        "bench",
        "fidelity",
        "--prompts",
        str(prompts),
        "--seeds",
        "1",
        "--representation",
        "gaussians",
        "--steps",
        "1",
        "--out",
        str(out),
        "--runs-dir",
        str(tmp_path / "runs"),
        *(["--engine", "ray", "--jobs", "2"] if RAY else []),
        *FAST_GAUSSIANS,
    )
    assert result.returncode == 0, result.stderr
    table = out.read_text()
    assert "| gaussians | a red cone | 1 |" in table and "| **gaussians** | **mean** | 2 |" in table
    assert table.index("a red cone") < table.index("a blue duck")  # prompt-file order, whichever finished first


def test_bench_guidance_writes_the_method_table(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cone\n")
    out = tmp_path / "guidance.md"
    out.write_text("old tables\n\n## Reading\n\nkept by hand\n")
    result = t3d(
        "bench",
        "guidance",
        "--methods",
        "sds,cds",
        "--prompts",
        str(prompts),
        "--seeds",
        "2",
        "--representation",
        "gaussians",
        "--steps",
        "1",
        "--out",
        str(out),
        "--runs-dir",
        "runs",
        *FAST_GAUSSIANS,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| gaussians |")]
    assert [r.split(" | ")[1] for r in rows[:2]] == ["sds", "cds"] and all(" | 2 | " in r for r in rows[:2])
    assert "| gaussians | cds | 2 | " in table and "old tables" not in table and "kept by hand" in table
    diversity = float(rows[0].split(" | ")[7])
    assert diversity > 0  # two seeds differ
    elsewhere = tmp_path / "elsewhere"  # resumed from another directory: the report still finds the runs
    elsewhere.mkdir()
    again = t3d(
        "bench",
        "guidance",
        "--methods",
        "sds,cds",
        "--prompts",
        str(prompts),
        "--seeds",
        "2",
        "--resume",
        "--representation",
        "gaussians",
        "--steps",
        "1",
        "--out",
        str(out),
        "--runs-dir",
        str(tmp_path / "runs"),
        *FAST_GAUSSIANS,
        cwd=elsewhere,
    )
    assert again.returncode == 0, again.stderr
    assert out.read_text() == table and len(list((tmp_path / "runs").glob("*/seed*/*/*/bench_row.json"))) == 4


def test_toy_scene_fit_and_edit_from_the_command_line(tmp_path):
    """The README's captured-scene walk-through at toy size: write a scene, fit it, edit it, bench it (smoke)."""
    scene = tmp_path / "three"
    result = t3d("toyworld", "scene", "three", "--out", str(scene), "--views", "10", "--width", "24", "--height", "18")
    assert result.returncode == 0, result.stderr
    assert (scene / "transforms.json").is_file() and (scene / "sparse" / "0" / "images.txt").is_file()
    result = t3d(
        "fit",
        "--scene",
        str(scene),
        "--steps",
        "20",
        "--out",
        str(tmp_path / "runs"),
        "resolution=18",
        "trainer.preview_every=0",
    )
    assert result.returncode == 0, result.stderr
    assert "held-out views: 2, PSNR" in result.stdout
    fit_dir = result.stdout.split("run directory: ")[1].split()[0]
    assert (tmp_path / "runs" / "three").is_dir() and fit_dir.startswith(str(tmp_path / "runs" / "three"))
    result = t3d(
        "edit",
        "--scene",
        fit_dir,
        "--prompt",
        "a blue cube",
        "--source-prompt",
        "a red cube",
        "--region",
        "sphere:-2.05,-0.3,2.26,1.2",
        "--steps",
        "4",
        "--out",
        str(tmp_path / "runs"),
        "trainer.resolution=16",
    )
    assert result.returncode == 0, result.stderr
    edit_dir = result.stdout.split("run directory: ")[1].split()[0]
    assert (tmp_path / "runs" / "three").is_dir() and "edit-dds@" in edit_dir
    assert (tmp_path / edit_dir / "export" / "point_cloud.ply").is_file()
    for run_dir, kind in ((fit_dir, "fit"), (edit_dir, "edit")):  # `t3d eval` takes any run
        evaluated = t3d("eval", run_dir)
        assert evaluated.returncode == 0, evaluated.stderr
        assert f"{kind} run: held-out views" in evaluated.stdout and "PSNR dB (mean)" in evaluated.stdout
        assert "renders against the held-out" in evaluated.stdout
    report = tmp_path / "editing.md"
    (tmp_path / "bench" / "scenes").mkdir(parents=True)
    scene.rename(tmp_path / "bench" / "scenes" / "three")  # the benchmark reuses a written scene (a small one here)
    result = t3d(
        "bench",
        "edit",
        "--quick",
        "--methods",
        "dds",
        "--fit-steps",
        "10",
        "--steps",
        "2",
        "--runs-dir",
        str(tmp_path / "bench"),
        "--out",
        str(report),
        "trainer.resolution=16",
    )
    assert result.returncode == 0, result.stderr
    text = report.read_text()
    assert "| three |" in text and text.count("| dds |") == 3 and "preservation" in text  # 2 edits + the summary


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["toyworld", "scene", "five", "--out", "x"], "unknown toy scene 'five'"),
        (["fit"], "--scene is missing"),
        (["fit", "--scene", "no/such/folder"], "no/such/folder"),
        (["fit", "--scene", "no/such/folder", "representation=mesh"], "gaussians or nerf"),
        (
            ["edit", "--scene", "no/such/run", "--prompt", "a blue cube", "--source-prompt", "a red cube"],
            "does not exist",
        ),
        (["edit", "--scene", "x", "--prompt", "a blue cube", "--region", "box:1,2"], "bad edit region"),
        (["edit", "--scene", "x", "--prompt", "a blue cube", "--method", "magic"], "unknown edit_method 'magic'"),
        (["bench", "edit", "--methods", "magic"], "unknown edit_method 'magic'"),
    ],
)
def test_scene_commands_bad_input(tmp_path, args, fragment):
    assert_one_line_error(t3d(*args, cwd=tmp_path), fragment)


def test_benchmark_headers_name_an_overridden_prior():
    from threedistill.bench.harness import prior_phrase

    assert prior_phrase([]) == "embedded toy prior"
    assert prior_phrase(["seed=1", "prior=toyworld-oracle"]) == "prior toyworld-oracle"
    assert prior_phrase(["prior=a", "prior_x=1", "prior=b"]) == "prior b"


def help_text(*args) -> str:
    """`t3d ARGS --help` in this process (so registrations made here show), whitespace collapsed."""
    from typer.testing import CliRunner

    from threedistill.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_help_lists_come_from_the_registries():
    """Every registered name shows in the help that lists the choices, a plugin's too (registered here)."""
    from threedistill.editing import EDIT_METHODS
    from threedistill.export.run_export import FORMATS
    from threedistill.guidance import GUIDANCE
    from threedistill.priors import EMBEDDED, PRIORS
    from threedistill.representations import REPRESENTATIONS
    from threedistill.workflows.fit import FIT_REPRESENTATIONS

    class PluginGuidance:
        pass

    GUIDANCE.register("zzplugin-guidance")(PluginGuidance)
    EDIT_METHODS.register("zzplugin-edit")(PluginGuidance)
    try:
        generate = help_text("generate")
        for name in [*GUIDANCE.names(), *REPRESENTATIONS.names(), *EMBEDDED]:
            assert name in generate, name
        assert "zzplugin-guidance" in generate and "sdedit" in generate
        assert all(name in generate for name in PRIORS.names() if name != "diffusers")
        assert "zzplugin-guidance" in help_text("bench", "guidance")
        edit = help_text("edit")
        assert all(name in edit for name in EDIT_METHODS.names()) and "zzplugin-edit" in edit
        assert "zzplugin-edit" in help_text("bench", "edit")
    finally:
        GUIDANCE._entries.pop("zzplugin-guidance", None)
        EDIT_METHODS._entries.pop("zzplugin-edit", None)
    assert "zzplugin-guidance" not in help_text("generate")  # filled in when shown, not once at import
    export = help_text("export")
    assert all(fmt in export for fmt in FORMATS)
    fit = help_text("fit")
    assert f"{FIT_REPRESENTATIONS[0]} (default) or {FIT_REPRESENTATIONS[1]}" in fit


@pytest.mark.parametrize(
    "args",
    [
        ("generate",),
        ("fit",),
        ("edit",),
        ("prior", "train"),
        ("bench", "fidelity"),
        ("bench", "guidance"),
        ("bench", "stages"),
        ("bench", "edit"),
    ],
)
def test_help_of_commands_taking_overrides_says_so(args):
    text = help_text(*args)
    assert "[KEY=VALUE]..." in text and "Trailing KEY=VALUE arguments override config entries" in text
    assert "=" in text.split("e.g.")[-1]  # an example follows


def test_top_level_help_mentions_the_override_syntax_once():
    text = help_text()
    assert text.count("KEY=VALUE") == 1 and "trainer.steps=300 guidance.guidance_scale=20" in text
    assert "KEY=VALUE" not in help_text("export") and "KEY=VALUE" not in help_text("bench", "perf")
    assert "generate, fit or edit" in help_text("export") and "generate, fit or edit" in help_text("eval")


def test_range_checks_live_in_the_python_api(tmp_path):
    """The checks the commands relied on raise the same one-line errors when Python calls the API."""
    from threedistill.bench.fidelity_bench import run_fidelity
    from threedistill.bench.guidance_bench import run_guidance_bench
    from threedistill.bench.perf_bench import run_perf_bench
    from threedistill.bench.stage_bench import run_stage_bench
    from threedistill.config import packaged_config
    from threedistill.errors import ConfigError, ThreeDistillError
    from threedistill.evaluation.prior_gate import evaluate_prior
    from threedistill.priors.sampling import sample_images
    from threedistill.toyworld.capture import write_captured_scene
    from threedistill.toyworld.dataset import generate_dataset
    from threedistill.toyworld.render import render_toy_view
    from threedistill.workflows.fit import fit
    from threedistill.workflows.generate import generate

    staged = packaged_config("generate", "nerf-then-mesh.yaml")
    cases = [
        (lambda: render_toy_view("red duck", resolution=4), "--resolution must be between 8 and 2048, got 4"),
        (lambda: render_toy_view("red duck", fov=180), "--fov must be between 0 and 180"),
        (lambda: render_toy_view("red duck", radius=0.5), "--radius must exceed 1"),
        (lambda: render_toy_view("red duck", what="x"), "--what must be one of"),
        (lambda: write_captured_scene("three", tmp_path / "s", n_views=1), "at least 2 views"),
        (lambda: write_captured_scene("five", tmp_path / "s"), "unknown toy scene 'five'"),
        (lambda: generate_dataset(0, 32, progress=False), "--views must be >= 1"),
        (lambda: sample_images(None, ["a red cone"], steps=0), "--n and --steps must be positive, got 1 and 0"),
        (lambda: evaluate_prior(None, samples_per_prompt=0), "--n and --steps must be positive, got 0 and 100"),
        (lambda: generate(prompt="  ", out=str(tmp_path / "g"), progress=False), "--prompt is empty"),
        (lambda: fit(out=str(tmp_path / "f"), progress=False), "--scene is missing"),
        (lambda: run_fidelity(["a red cone"], 0, ["gaussians"], tmp_path / "b", []), "--seeds must be positive"),
        (lambda: run_fidelity(["a red cone"], 1, ["voxels"], tmp_path / "b", []), "unknown representation 'voxels'"),
        (
            lambda: run_guidance_bench(["sds"], ["a red cone"], 1, ["gaussians"], tmp_path / "b", steps=0),
            "--steps must be positive, got 0",
        ),
        (lambda: run_guidance_bench(["magic"], ["a red cone"], 1, ["gaussians"], tmp_path / "b"), "unknown guidance"),
        (lambda: run_stage_bench([staged], ["a red cone"], 0, tmp_path / "b", []), "--seeds must be positive, got 0"),
        (
            lambda: run_stage_bench([packaged_config("generate", "nerf.yaml")], ["a red cone"], 1, tmp_path / "b", []),
            "has fewer than two stages",
        ),
        (lambda: run_perf_bench(repeats=0), "--repeats must be positive"),
    ]
    for call, fragment in cases:
        with pytest.raises(ThreeDistillError) as err:
            call()
        assert fragment in str(err.value) and "\n" not in str(err.value), (fragment, str(err.value))
    with pytest.raises(ConfigError):
        fit(out=str(tmp_path / "f"), progress=False)
    assert not any(tmp_path.rglob("*.json")) and not (tmp_path / "g").exists()  # nothing ran, nothing was written


def test_eval_of_a_fit_or_edit_run_prints_the_held_out_views():
    from rich.console import Console

    from threedistill.cli.results import view_table

    console = Console(record=True, width=120)
    console.print(
        view_table(
            {
                "kind": "fit",
                "against": "held-out captures",
                "eval_resolution": "train",
                "size": [72, 96],
                "views": 6,
                "psnr": 27.5,
                "ssim": 0.9123,
                "psnr_min": 25.25,
                "masked_psnr": 31.25,
                "masked_ssim": 0.95,
            }
        )
    )
    text = " ".join(console.export_text().split())
    assert "fit run: held-out views" in text
    assert "| PSNR dB (mean) | 27.50 |" in text.replace("│", "|") and "25.25" in text and "0.9123" in text
    assert "96x72 px (train)" in text and "| held-out views | 6 |" in text.replace("│", "|")
    assert "| PSNR dB inside the masks | 31.25 |" in text.replace("│", "|") and "0.9500" in text
