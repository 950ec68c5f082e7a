"""`t3d critic ...`: the embedded toy critic of the `critic` reward: train it on toy-world ground truth, evaluate
it on held-out views."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import app, command, log

critic_app = typer.Typer(no_args_is_help=True, help="The embedded toy critic (reward=critic): train, evaluate.")
app.add_typer(critic_app, name="critic")


def _config(config: Optional[Path], overrides: list[str]):
    from ..config import load_config, packaged_config
    from ..toyworld.training.critic import CriticTrainConfig

    return load_config(CriticTrainConfig, config or packaged_config("critic", "toyworld.yaml"), overrides)


@command(critic_app, "train", overrides="t3d critic train steps=1000 out=data/critic")
def critic_train(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, help="YAML config (default configs/critic/toyworld.yaml); key=value overrides follow."
    ),
):
    """Train the toy critic on rendered toy-world groups of 4 views (seeded: same config, same weights on CPU),
    evaluate it on held-out groups and save it (default assets/critics/toyworld-critic)."""
    from ..toyworld.training.critic import report_table, train_critic

    out = train_critic(_config(config, ctx.args), log=log)
    report = json.loads((out / "config.json").read_text())["eval"]
    typer.echo(report_table(report))


@command(critic_app, "eval", overrides="t3d critic eval eval_seed=2000 eval_groups_per_subject=4")
def critic_eval(
    ctx: typer.Context,
    model: Optional[Path] = typer.Option(None, "--model", help="Critic directory (default: the shipped one)."),
    config: Optional[Path] = typer.Option(
        None, help="YAML config of the held-out groups (default: the one the critic was trained with)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the report as JSON."),
):
    """Held-out accuracy and AUC of a critic, overall and per negative type, on groups rendered with eval_seed
    (cameras and colour instances it never saw)."""
    from ..errors import ConfigError
    from ..rewards.critic import default_critic_path, load_critic
    from ..toyworld.training.critic import CriticTrainConfig, evaluate_critic, report_table
    from ..utils.files import write_json

    critic = load_critic(model)
    if config is None:
        saved = json.loads(((model or default_critic_path()) / "config.json").read_text()).get("train")
        if saved:
            from ..config import load_config

            known = set(CriticTrainConfig.__dataclass_fields__)
            cfg = load_config(CriticTrainConfig, [{k: v for k, v in saved.items() if k in known}], ctx.args)
        else:
            cfg = _config(None, ctx.args)
    else:
        cfg = _config(config, ctx.args)
    if cfg.views != critic.views:
        raise ConfigError(f"the critic judges {critic.views} views, the config renders {cfg.views}")
    report = evaluate_critic(critic, cfg, log=log)
    typer.echo(report_table(report))
    if "holdout_subjects" in report:
        typer.echo(f"\nsubjects never trained on ({', '.join(cfg.holdout_subjects)}):")
        typer.echo(report_table(report["holdout_subjects"]))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, report)
        typer.echo(f"wrote {out}")


@command(critic_app, "train-clip", overrides="t3d critic train-clip steps=500 out=data/toy-clip")
def critic_train_clip(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, help="YAML config (default configs/critic/toyworld_clip.yaml); key=value overrides follow."
    ),
):
    """Train the toy CLIP (a transformers CLIPModel directory for reward=clip, default assets/critics/toyworld-clip)
    on single views of the critic's rendered groups, and report its held-out zero-shot accuracy."""
    from ..config import load_config, packaged_config
    from ..toyworld.training.clip import ClipTrainConfig, train_clip

    cfg = load_config(ClipTrainConfig, config or packaged_config("critic", "toyworld_clip.yaml"), ctx.args)
    out = train_clip(cfg, log=log)
    typer.echo(json.dumps(json.loads((out / "toyworld_clip.json").read_text())["eval"], indent=2))


@command(critic_app, "train-orient", overrides="t3d critic train-orient steps=500 out=data/toy-orient")
def critic_train_orient(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, help="YAML config (default configs/critic/toyworld_orient.yaml); key=value overrides follow."
    ),
):
    """Train the orientation check's judge (orientation.check_at=[...]; default assets/critics/toyworld-orient) on
    toy views of the objects with a front, and report its held-out accuracy."""
    from ..config import load_config, packaged_config
    from ..toyworld.training.orientation import OrientTrainConfig, train_judge

    cfg = load_config(OrientTrainConfig, config or packaged_config("critic", "toyworld_orient.yaml"), ctx.args)
    out = train_judge(cfg, log=log)
    typer.echo(json.dumps(json.loads((out / "config.json").read_text())["eval"], indent=2))
