from dataclasses import dataclass, field

import pytest

from threedistill.config import load_config, save_config, scheduled
from threedistill.errors import ConfigError, UnknownNameError
from threedistill.registry import Registry


@dataclass
class Demo:
    steps: int = 10
    lr: float = 0.1
    name: str = "x"
    sizes: list[int] = field(default_factory=lambda: [1, 2])


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\nname: y\n")
    cfg = load_config(Demo, path, ["lr=0.5", "sizes=[3,4,5]"])
    assert (cfg.steps, cfg.lr, cfg.name, cfg.sizes) == (20, 0.5, "y", [3, 4, 5])
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(Demo, tmp_path / "out.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["stepz=3"], "unknown config key 'stepz'"),
        (["steps=abc"], "bad value for config key 'steps'"),
        (["steps"], "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(Demo, None, overrides)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@dataclass
class Inner:
    teacher: str = "a"


@dataclass
class Outer:
    guidance: Demo = field(default_factory=Demo)
    drag: Inner = field(default_factory=Inner)


def test_a_key_in_the_wrong_section_names_where_it_lives():
    with pytest.raises(ConfigError) as err:
        load_config(Outer, None, ["guidance.teacher=b"])
    message = str(err.value)
    assert "unknown config key 'guidance.teacher'" in message and "did you mean drag.teacher?" in message
    with pytest.raises(ConfigError) as err:  # a leaf that lives nowhere: no guess
        load_config(Outer, None, ["guidance.teachr=b"])
    assert "did you mean" not in str(err.value)
    assert load_config(Outer, None, ["drag.teacher=b"]).drag.teacher == "b"


def test_unknown_key_in_yaml_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stpes: 3\n")
    with pytest.raises(ConfigError, match="stpes"):
        load_config(Demo, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Demo, tmp_path / "missing.yaml")


def test_schedules():
    assert scheduled(0.5, 100) == 0.5
    assert scheduled([0.98, 0.5, 100], 50) == pytest.approx(0.74)
    assert scheduled([10, 1.0, 0.0, 20], 5) == 1.0
    assert scheduled([10, 1.0, 0.0, 20], 15) == pytest.approx(0.5)
    assert scheduled([10, 1.0, 0.0, 20], 25) == 0.0
    with pytest.raises(ConfigError):
        scheduled([1, 2], 0)


def test_registry_builds_and_lists_known_names():
    reg = Registry("widget")

    @reg.register("round")
    class Round:
        def __init__(self, r):
            self.r = r

    assert reg.build("round", 3).r == 3 and "round" in reg and reg.names() == ["round"]
    with pytest.raises(UnknownNameError, match="unknown widget 'square'; known: round"):
        reg.get("square")
    with pytest.raises(ValueError):
        reg.register("round")(type("Other", (), {}))


def test_registry_finds_plugins_through_entry_points(tmp_path, monkeypatch):
    """A package installed with a `threedistill.widget` entry point adds a name without code changes here."""
    import sys

    (tmp_path / "widget_plugin.py").write_text("class Square:\n    def __init__(self, a):\n        self.a = a\n")
    (tmp_path / "widget_plugin-1.0.dist-info").mkdir()
    (tmp_path / "widget_plugin-1.0.dist-info" / "METADATA").write_text("Name: widget-plugin\nVersion: 1.0\n")
    (tmp_path / "widget_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[threedistill.widget]\nsquare = widget_plugin:Square\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("widget")
    assert reg.build("square", 2).a == 2 and "square" in reg.names()
    sys.modules.pop("widget_plugin", None)
