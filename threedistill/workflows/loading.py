"""Loading any run directory (generate, fit or edit; the kind comes from its run.json, see
`session.read_run_kind`): its config and the model of its latest checkpoint, and for fit and edit runs the
captured scene they work in."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ..config import load_config
from ..errors import ThreeDistillError
from ..session import Run, read_run_kind
from ..trainer import latest_checkpoint, model_tensors, read_checkpoint
from .edit_config import EditConfig
from .fit import FitConfig, load_fit_model


def load_run(run_dir: Path, step: int | None = None) -> Run:
    """Rebuild a run's model on the CPU from its config and latest checkpoint (or, for a generate run, the one at
    run step `step`, e.g. the end of a coarse stage). Generate runs come with their Trainer; fit and edit runs with
    None in its place."""
    run_dir = Path(run_dir)
    kind = read_run_kind(run_dir)
    if kind == "generate":
        return load_generate_run(run_dir, step=step)
    if step is not None:
        raise ThreeDistillError(f"{run_dir} is a {kind} run; only generate runs load an earlier checkpoint")
    if kind == "fit":
        cfg = load_config(FitConfig, run_dir / "config.yaml")
        return Run(run_dir, cfg, load_fit_model(run_dir, cfg), None, kind="fit")
    if kind == "edit":
        return Run(
            run_dir, load_config(EditConfig, run_dir / "config.yaml"), load_gaussians(run_dir), None, kind="edit"
        )
    raise ThreeDistillError(
        f"{run_dir} holds a {kind!r} run, which this version cannot load (known: generate, fit, edit)"
    )


def load_generate_run(run_dir: Path, cfg=None, step: int | None = None) -> Run:
    """A generate run (config read from config.yaml unless given) at its latest checkpoint or run step `step`."""
    from .generate import build, read_run_config, stage_configs

    cfg = cfg or read_run_config(run_dir)
    cfg = stage_configs(cfg)[int(latest_checkpoint(run_dir, step)[1].get("stage", 0))]  # that checkpoint's stage
    model, trainer = build(cfg, None, log=lambda s: None, device="cpu")
    trainer.load_checkpoint(run_dir, step)
    return Run(run_dir, cfg, model, trainer)


def load_gaussians(run_dir: Path):
    """The Gaussians in a run's latest checkpoint, at the SH degree the checkpoint holds."""
    from ..representations.gaussians import Gaussians, GaussiansConfig

    state = model_tensors(read_checkpoint(run_dir)[0])
    degree = int(math.isqrt(state["sh"].shape[1])) - 1
    model = Gaussians(dataclasses.replace(GaussiansConfig(), sh_degree=degree, num_points=1))
    model.load_tensors(state)
    return model


def scene_source(run: Run) -> tuple[FitConfig | None, Path]:
    """(the fit config at the root of a fit or edit run's chain of sources, the captured scene it works in). An
    edit's source is followed back, edit by edit, to its fit run; an edit of a 3DGS file or folder has no fit
    config (None) and that file or folder as its scene."""
    while run.kind == "edit":
        source = Path(run.config.source)
        if not (source / "config.yaml").is_file():
            return None, source  # a 3DGS file or folder, edited as it was
        run = load_run_config_only(source)
    return run.config, Path(run.config.scene)


def load_run_config_only(run_dir: Path) -> Run:
    """A fit or edit run with its config only (no model), to follow an edit's source."""
    kind = read_run_kind(run_dir)
    if kind not in ("fit", "edit"):
        raise ThreeDistillError(f"{run_dir} is a {kind} run, not the fit or edit run an edit starts from")
    schema = FitConfig if kind == "fit" else EditConfig
    return Run(Path(run_dir), load_config(schema, Path(run_dir) / "config.yaml"), None, None, kind=kind)


def representation_of(run: Run) -> str:
    return "gaussians" if run.kind == "edit" else run.config.representation
