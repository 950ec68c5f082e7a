"""The `t3d` command: one typer app, one module per command group (generate, scenes: fit and edit, results:
export and eval of any run, render: images and a video of any run, toyworld, prior, bench). Each command is a thin
layer over the Python API, which checks its own arguments; user errors print one line (`main`)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Callable, List, Optional

import typer
from typer.core import TyperCommand

from ..errors import ThreeDistillError

OVERRIDES_EXAMPLE = "trainer.steps=300 guidance.guidance_scale=20"
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="threedistill: text to 3D by score distillation, on CPU, measured against ground truth.\n\n"
    "Commands that optimise or train (generate, fit, edit, prior train, bench fidelity / guidance / "
    "stages / edit) take trailing KEY=VALUE config overrides after their options, e.g. "
    f"`t3d generate --prompt 'a red duck' {OVERRIDES_EXAMPLE}`.",
)

EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


# ---------------------------------------------------------------- choices named in help texts
def _representations() -> tuple[list[str], str]:
    from ..representations import REPRESENTATIONS
    from ..workflows.generate import GenerateConfig

    return REPRESENTATIONS.names(), GenerateConfig.representation


def _guidance() -> tuple[list[str], str]:
    from ..guidance import GUIDANCE
    from ..workflows.generate import GenerateConfig

    return GUIDANCE.names(), GenerateConfig.guidance_type


def _fit_representations() -> tuple[list[str], str]:
    from ..workflows.fit import FIT_REPRESENTATIONS, FitConfig

    return list(FIT_REPRESENTATIONS), FitConfig.representation


def _edit_methods() -> tuple[list[str], str]:
    from ..editing import EDIT_METHODS
    from ..workflows.edit import EditConfig

    return EDIT_METHODS.names(), EditConfig.method


def _priors() -> tuple[list[str], str]:
    from ..priors import EMBEDDED, PRIORS, default_prior_path

    plugins = [n for n in PRIORS.names() if n != "diffusers" and n not in EMBEDDED]  # diffusers: a directory's loader
    return [*EMBEDDED, *plugins], default_prior_path().name


def _mesh_formats() -> tuple[list[str], None]:
    from ..export.run_export import FORMATS, MESH_FORMATS

    return [f for f in FORMATS if f in MESH_FORMATS], None


def _splat_formats() -> tuple[list[str], None]:
    from ..export.run_export import FORMATS, SPLAT_FORMATS

    return [f for f in FORMATS if f in SPLAT_FORMATS], None


def shipped_configs() -> list[Path]:
    """configs/generate/*.yaml (the installed copy or the checkout's), sorted by name."""
    from ..config import packaged_config

    return sorted(packaged_config("generate").glob("*.yaml"), key=lambda p: p.stem)


def _shipped_configs() -> tuple[list[str], None]:
    return [p.stem for p in shipped_configs()], None


def _staged_configs() -> tuple[list[str], None]:
    from omegaconf import OmegaConf

    return [p.stem for p in shipped_configs() if len(OmegaConf.load(p).get("stages") or []) >= 2], None


def _rewards() -> tuple[list[str], None]:
    from ..rewards import REWARDS

    return REWARDS.names(), None


def _drags() -> tuple[list[str], None]:
    from ..toyworld.drags import DRAGS

    return list(DRAGS), None


# What a help text may name: {NAME} becomes "a, b, c"; {NAME|default} becomes "a (default), b or c". The names
# come from the registries (plugins included) and the package when the help is shown, never from a list here.
CHOICES: dict[str, Callable[[], tuple[list[str], str | None]]] = {
    "representations": _representations,
    "guidance": _guidance,
    "fit_representations": _fit_representations,
    "edit_methods": _edit_methods,
    "priors": _priors,
    "mesh_formats": _mesh_formats,
    "splat_formats": _splat_formats,
    "configs": _shipped_configs,
    "staged_configs": _staged_configs,
    "drags": _drags,
    "rewards": _rewards,
}


def _phrase(names: list[str], default: str | None) -> str:
    names = [f"{n} (default)" if n == default else n for n in names]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def fill_choices(text: str | None) -> str | None:
    """`text` with its {placeholders} (`CHOICES`) replaced by the names registered now."""
    for key, choices in CHOICES.items():
        if text and "{" + key in text:
            names, default = choices()
            text = text.replace(f"{{{key}|default}}", _phrase(names, default))
            text = text.replace(f"{{{key}}}", ", ".join(names))
    return text


class Command(TyperCommand):
    """A command whose help texts may name registered choices as {placeholders}: they are filled in from the
    registries when the help is shown (plugins included), and only then: the registries import torch, which
    the command's own start need not wait for."""

    def format_help(self, ctx, formatter) -> None:
        saved = [(p, p.help) for p in self.params if getattr(p, "help", None)]
        texts = (self.help, self.epilog)
        try:
            for p, text in saved:
                p.help = fill_choices(text)
            self.help, self.epilog = (fill_choices(t) for t in texts)
            super().format_help(ctx, formatter)
        finally:
            for p, text in saved:
                p.help = text
            self.help, self.epilog = texts


def command(group: typer.Typer, name: str, overrides: str | None = None, **kwargs):
    """group.command(name) with {choices} in its help (`Command`); with `overrides` (an example such as
    "trainer.steps=300") it takes trailing key=value config overrides (in ctx.args) and its help says so."""
    if overrides is not None:
        kwargs |= {
            "context_settings": EXTRA_ARGS,
            "options_metavar": "[OPTIONS] [KEY=VALUE]...",
            "epilog": f"Trailing KEY=VALUE arguments override config entries (dotted keys reach nested "
            f"sections), e.g. {overrides}",
        }
    return group.command(name, cls=Command, **kwargs)


# ---------------------------------------------------------------- shared options and helpers
PriorOption = typer.Option(None, "--prior", help="Local diffusers directory or prior name: {priors|default}.")
# The options every optimising command (generate, fit, edit) shares.
StepsOption = typer.Option(None, help="Optimisation steps.")
SeedOption = typer.Option(None, help="Random seed (same seed, same result on CPU).")
OutOption = typer.Option(None, help="Root of run directories (default outputs/).")


# The engine options of `t3d batch` and the benchmarks that run many runs (threedistill.engines).
EngineOption = typer.Option(
    "local", "--engine", help="local (one run at a time, in this process) or ray (a local Ray instance, or --address)."
)
JobsOption = typer.Option(1, "--jobs", help="Runs at once (--engine ray; a local Ray instance gets jobs x cpus).")
AddressOption = typer.Option(
    None, "--address", help="Join this Ray cluster (auto, HOST:PORT or ray://HOST:PORT) instead of starting one."
)
CpusPerRunOption = typer.Option(
    None, "--cpus-per-run", help="CPUs (and torch threads) of each run; default: this machine's cores / --jobs."
)
GpusPerRunOption = typer.Option(0.0, "--gpus-per-run", help="GPUs of each run on Ray; fractions share a GPU.")
MaxRetriesOption = typer.Option(3, "--max-retries", help="Times a run whose worker died is run again (Ray).")


def engine_config(engine: str, jobs: int, address, cpus_per_run, gpus_per_run: float, max_retries: int, work_dir=None):
    """The EngineConfig of the engine options (a one-line error for a bad value)."""
    from ..engines import EngineConfig

    return EngineConfig(
        engine, jobs, address, cpus_per_run, gpus_per_run, max_retries, str(work_dir) if work_dir else None
    )


# The live viewer's options of generate, fit and edit (threedistill.workflows.live_view).
ViewerOption = typer.Option(
    False, "--viewer", help="Show the run live in a browser (viser) while it optimises; results do not change."
)
ViewerPortOption = typer.Option(8080, "--viewer-port", help="The live viewer's port.")
ViewerEveryOption = typer.Option(10, "--viewer-every", help="Steps between the live viewer's scene updates.")
ViewerHostOption = typer.Option(
    "127.0.0.1", "--viewer-host", help="The live viewer's address (0.0.0.0: every interface, only if you mean it)."
)


def viewer_options(viewer: bool, port: int, every: int, host: str):
    """The LiveViewerOptions of the viewer options, or None without --viewer (a one-line error for a bad one)."""
    from ..workflows.live_view import LiveViewerOptions

    options = LiveViewerOptions(port, every, host)  # checked even without --viewer
    return options if viewer else None


def console():
    from rich.console import Console

    return Console(stderr=True)


def log(message: str) -> None:
    """Progress lines of the Python API, on stderr."""
    console().print(message)


def config_path(name: str) -> Path:
    """A config given by name (configs/generate/NAME.yaml) or path, or a one-line error listing the shipped ones."""
    from ..config import packaged_config

    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ThreeDistillError(f"config file not found: {path}")
        return path
    shipped = packaged_config("generate", f"{name}.yaml")
    if not shipped.is_file():
        known = ", ".join(p.stem for p in shipped_configs())
        raise ThreeDistillError(f"unknown config {name!r}; shipped: {known} (or give a YAML path)")
    return shipped


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run the app and turn user errors into one line on stderr with exit code 2."""
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        app(args=argv, standalone_mode=True)
    except ThreeDistillError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    finally:
        warnings.formatwarning = previous


def entry() -> None:
    """`t3d` and `python -m threedistill.cli`: `main`, then the process ends without the interpreter's teardown
    (`utils.exiting.exit_now`: 1.3-1.5 s saved on every command that loaded the prior)."""
    from ..utils.exiting import exit_now

    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    exit_now(code)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Our warnings (UserWarning) as `warning: ...`; a library's keep their category for searching."""
    kind = "" if category is UserWarning else f" ({category.__name__})"
    return f"warning: {message}{kind}\n"


# The command groups register their commands on `app` (in this order in `t3d --help`).
from . import generate, batch, scenes, results, view, render, toyworld, prior, critic, bench  # noqa: E402,F401,I001

__all__ = ["app", "main", "entry", "command", "Command", "fill_choices", "config_path"]
