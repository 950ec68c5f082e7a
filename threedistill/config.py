"""Typed dataclass configs loaded with OmegaConf: YAML file, then `key=value` overrides, validated by type.

Errors name the offending key and say what would be right (one line, no traceback). Also holds the
threestudio-style piecewise-linear scalar schedules used by trainers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from .errors import ConfigError
from .utils.files import atomic_path

T = TypeVar("T")


def _known_keys(schema, full_key: str = "") -> str:
    """The keys beside `full_key` (those of its parent section), for error messages."""
    import typing

    section, prefix = schema, ""
    for part in full_key.split(".")[:-1]:
        hints = typing.get_type_hints(section) if dataclasses.is_dataclass(section) else {}
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            break
        section, prefix = hints[part], f"{prefix}{part}."
    return ", ".join(prefix + f.name for f in dataclasses.fields(section))


def _same_leaf(schema, full_key: str) -> list[str]:
    """Every key of the (nested) schema whose last part is `full_key`'s, elsewhere than `full_key`: the key a user
    most likely meant when they put a setting in the wrong section (guidance.teacher for drag.teacher)."""
    import typing

    leaf, found = full_key.split(".")[-1], []

    def walk(section, prefix: str, depth: int) -> None:
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            name = prefix + f.name
            if f.name == leaf and name != full_key:
                found.append(name)
            if dataclasses.is_dataclass(hints.get(f.name)) and depth < 4:
                walk(hints[f.name], name + ".", depth + 1)

    if dataclasses.is_dataclass(schema):
        walk(schema, "", 0)
    return found


def _parse_overrides(overrides: Sequence[str]) -> list[str]:
    for item in overrides:
        key, sep, _ = item.partition("=")
        if item.startswith("-"):
            raise ConfigError(
                f"unknown option {key!r} (--help lists the options); config overrides are key=value, e.g. seed=1"
            )
        if not sep or not key.strip():
            raise ConfigError(f"bad override {item!r}: expected key=value, e.g. seed=1")
    return list(overrides)


def packaged_config(*parts: str) -> Path:
    """A file under configs/: the installed copy (threedistill/configs) or the source checkout's."""
    return _packaged("configs", *parts)


def packaged_asset(*parts: str) -> Path:
    """A file or folder under assets/ (priors, critics): the installed copy (threedistill/assets) or the source
    checkout's."""
    return _packaged("assets", *parts)


def _packaged(top: str, *parts: str) -> Path:
    here = Path(__file__).resolve()
    installed = here.parent.joinpath(top, *parts)
    return installed if installed.exists() else here.parents[1].joinpath(top, *parts)


def _apply_overrides(cfg, overrides: list[str]):
    """Merge `key=value` overrides in order; a key through a list item (stages.1.steps=300) updates that item in
    place, since a dotlist would turn the list into a mapping."""
    for item in overrides:
        key, _, raw = item.partition("=")
        key = key.strip()
        if not any(part.isdigit() for part in key.split(".")):
            try:
                value = OmegaConf.from_dotlist([item])
            except (OmegaConfBaseException, ValueError, yaml.YAMLError) as err:  # e.g. a YAML syntax error
                raise ConfigError(f"bad override {item!r}: {_first_line(err)}") from None
            try:
                cfg = OmegaConf.merge(cfg, value)
            except ValidationError as err:
                if err.full_key:
                    raise
                message = (err.msg or str(err) or type(err).__name__).splitlines()[0]
                raise ConfigError(f"bad value for config key {key!r} (command line): {message}") from None
            except TypeError:  # a mapping merged into a list
                raise ConfigError(
                    f"bad override {item!r}: address a list's items by index, e.g. stages.0.steps=100"
                ) from None
            continue
        _check_indices(cfg, key, item)
        try:
            OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"value={raw}"])["value"], merge=True)
        except (OmegaConfBaseException, AttributeError, KeyError, TypeError, ValueError, yaml.YAMLError) as err:
            raise ConfigError(f"bad override {item!r}: {_first_line(err)}") from None
    return cfg


def _first_line(err: BaseException) -> str:
    """What went wrong, in one line (a YAML error's problem rather than its context)."""
    text = getattr(err, "problem", None) or str(err).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(err).__name__


def _check_indices(cfg, key: str, item: str) -> None:
    """One-line error unless every list along `key` has the item it names."""
    node, path = cfg, []
    for part in key.split(".")[:-1]:
        if isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"bad override {item!r}: {'.'.join(path)} has {len(node)} items, indexed 0..{len(node) - 1}"
                )
            node = node[int(part)]
        elif isinstance(node, DictConfig) and part in node:
            node = node[part]
        else:
            return  # the update reports an unknown key
        path.append(part)


MAX_CONFIG_BYTES = 1 << 20  # a config file larger than this is not a config file


def read_yaml(path: str | Path, what: str = "config file") -> DictConfig:
    """The `key: value` mapping of a YAML file (a `--config` file, a run's config.yaml), or a one-line ConfigError
    naming the file and what is wrong: missing, too large, not UTF-8 text, not YAML (syntax, a Python or other
    unsafe tag, an alias bomb past OmegaConf's expansion limit) or not a mapping at its top."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path} is {path.stat().st_size} bytes: not a config (at most {MAX_CONFIG_BYTES})")
    try:
        loaded = OmegaConf.load(path)
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text (a YAML file of key: value lines is)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {_first_line(err)}") from None
    except OSError as err:
        if "Invalid loaded object type" in str(err):  # a bare scalar
            raise ConfigError(f"{what} {path} must hold key: value entries at its top level, not one value") from None
        raise ConfigError(f"{what} {path} cannot be read: {err.strerror or err}") from None
    except (OmegaConfBaseException, ValueError, TypeError, RecursionError) as err:
        raise ConfigError(f"{what} {path} cannot be read: {_first_line(err)}") from None
    if loaded is None:
        return OmegaConf.create({})
    if not isinstance(loaded, DictConfig):
        kind = "a list" if isinstance(loaded, ListConfig) else type(loaded).__name__
        raise ConfigError(f"{what} {path} must hold key: value entries at its top level, not {kind}")
    return loaded


def load_config(
    schema: type[T], path: str | Path | Sequence[str | Path] | None = None, overrides: Sequence[str] = ()
) -> T:
    """Build a `schema` dataclass from defaults, then the YAML file(s) (or dicts) at `path` (later ones win),
    then `key=value` overrides."""
    merged = OmegaConf.structured(schema)
    where = "command line"
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    try:
        for item in paths:
            if isinstance(item, dict):  # an already-resolved config (e.g. a run's, under a stage's overrides)
                where = "resolved config"
                merged = OmegaConf.merge(merged, item)
                continue
            where = str(item)
            merged = OmegaConf.merge(merged, read_yaml(item))
        where = "command line"
        merged = _apply_overrides(merged, _parse_overrides(overrides))
        result = OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        meant = _same_leaf(schema, err.full_key or "")
        hint = f"did you mean {' or '.join(meant)}? " if meant else ""
        raise ConfigError(
            f"unknown config key {err.full_key!r} ({where}); {hint}known keys: {_known_keys(schema, err.full_key)}"
        ) from None
    except ValidationError as err:
        message = (err.msg or str(err) or type(err).__name__).splitlines()[0]
        key = f"config key {err.full_key!r}" if err.full_key else "config"  # a merge error names no key
        raise ConfigError(f"bad value for {key} ({where}): {message}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot read config ({where}): {str(err).splitlines()[0]}") from None
    return result


def peek_key(key: str, paths: Sequence[str | Path], overrides: Sequence[str], default=None):
    """The value a top-level `key` will have after loading `paths` then `overrides` (the last setting wins),
    without validating anything else; used to pick a schema that depends on that key."""
    value = default
    for item in paths:
        if Path(item).is_file():
            try:
                loaded = read_yaml(item)
            except ConfigError:
                continue  # load_config reports the malformed file
            if isinstance(loaded, DictConfig) and key in loaded:
                value = loaded[key]
    for item in overrides:
        name, sep, raw = item.partition("=")
        if sep and name.strip() == key:
            value = raw.strip().strip("'\"")
    return value


def save_config(cfg, path: str | Path) -> None:
    """Write a resolved config as YAML (what a run directory keeps as config.yaml)."""
    with atomic_path(path) as tmp:
        OmegaConf.save(OmegaConf.structured(cfg), tmp)


def absolute_path(value):
    """`value` as an absolute path when it is a relative path (or ~) to a file or folder that exists, else as
    given: names (a registered prior, `auto`) and missing paths are for their own loaders to resolve or report."""
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    if value.startswith("~") or not path.is_absolute():
        return str(path.resolve()) if path.exists() else value
    return value


def absolute_paths(cfg, keys: Sequence[str]) -> None:
    """Make each dotted field of `cfg` in `keys` absolute where it names an existing file or folder by a relative
    path (in place; see `absolute_path`), so a run resumed, edited or exported from another folder finds it."""
    for key in keys:
        *parents, name = key.split(".")
        section = cfg
        for part in parents:
            section = getattr(section, part)
        setattr(section, name, absolute_path(getattr(section, name)))


def check_schedules(cfg, section: str, names: Sequence[str]) -> None:
    """One-line error unless each named field of `cfg` is a number or a schedule [k0, v0, v1, k1]."""
    for name in names:
        try:
            scheduled(getattr(cfg, name), 0)
        except (ConfigError, TypeError, ValueError):
            raise ConfigError(
                f'{section}.{name}: expected a number or a schedule [k0, v0, v1, k1] (or ["exp", k0, v0, v1, k1]), '
                f"got {getattr(cfg, name)!r}"
            ) from None


def schedule_field(*values: float):
    """A dataclass field whose default is the schedule [k0, v0, v1, k1] (a fresh list per instance)."""
    return dataclasses.field(default_factory=lambda: list(values))


def scheduled(value, step: int) -> float:
    """Evaluate a scalar schedule at `step`: a number, [v0, v1, k1] or [k0, v0, v1, k1] meaning v0 until k0,
    linear to v1 at k1, v1 afterwards (threestudio's convention); with "exp" first (["exp", v0, v1, k1] or
    ["exp", k0, v0, v1, k1]) the change is exponential (log-linear), as 3DGS decays its position learning rate."""
    if isinstance(value, (int, float)):
        return float(value)
    seq = list(value)
    exponential = bool(seq) and seq[0] == "exp"
    if exponential:
        seq = seq[1:]
    if len(seq) == 3:
        seq = [0] + seq
    if len(seq) != 4 or any(isinstance(v, str) for v in seq):
        raise ConfigError(
            f'bad schedule {value!r}: expected a number, [v0, v1, k1], [k0, v0, v1, k1] or ["exp", v0, v1, k1]'
        )
    k0, v0, v1, k1 = seq
    if exponential and not (v0 > 0 and v1 > 0):
        raise ConfigError(f"bad schedule {value!r}: an exponential schedule needs positive values")
    if step <= k0:
        return float(v0)
    if step >= k1:
        return float(v1)
    t = (step - k0) / (k1 - k0)
    if exponential:
        return float(v0 * (v1 / v0) ** t)
    return float(v0 + (v1 - v0) * t)


def schedule_values(value) -> list[float]:
    """The values a number or schedule takes (its v0 and v1), for range checks; `scheduled` checks the form."""
    if isinstance(value, (int, float)):
        return [float(value)]
    seq = [v for v in list(value) if v != "exp"]
    return [float(v) for v in seq[-3:-1]]


def scale_schedule(value, factor: float):
    """A number or schedule with its values (not its steps) multiplied by `factor`."""
    if isinstance(value, (int, float)):
        return value * factor
    seq = list(value)
    tag = seq[:1] if seq and seq[0] == "exp" else []
    seq = seq[len(tag) :]
    if len(seq) == 3:
        seq = [0] + seq
    return tag + [seq[0], seq[1] * factor, seq[2] * factor, seq[3]]
