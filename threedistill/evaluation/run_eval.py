"""`t3d eval RUN_DIR`: load a run's latest checkpoint, render the fixed evaluation views, compare with
ground truth and merge the numbers into the run's metrics.json."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ThreeDistillError
from .ground_truth import compare, eval_cameras, subject_of

EVAL_RESOLUTION = 64


def load_run(run_dir: Path):
    """Rebuild a run's model from config.yaml and its latest checkpoint."""
    from ..config import load_config
    from ..runs import GenerateConfig, Run, build

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ThreeDistillError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(GenerateConfig, run_dir / "config.yaml")
    model, trainer = build(cfg, None, log=lambda s: None)
    trainer.load_checkpoint(run_dir)
    return Run(run_dir, cfg, model, trainer)


def evaluate_run(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    from ..config import load_config
    from ..runs import GenerateConfig

    if not (run_dir / "config.yaml").is_file():
        raise ThreeDistillError(f"{run_dir} is not a run directory (no config.yaml)")
    prompt = load_config(GenerateConfig, run_dir / "config.yaml").prompt
    colour, obj = subject_of(prompt)
    run = load_run(run_dir)
    cams = eval_cameras()
    renders = [run.render(cams[i:i + 4], EVAL_RESOLUTION) for i in range(0, len(cams), 4)]
    render = {k: torch.cat([r[k] for r in renders]) for k in ("rgb", "alpha")}
    metrics = {"prompt": prompt, "object": obj, "colour": colour, "step": run.trainer.step}
    metrics |= compare(render, colour, obj, EVAL_RESOLUTION)
    path = run_dir / "metrics.json"
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing.update(metrics)
    path.write_text(json.dumps(existing, indent=2))
    return existing
