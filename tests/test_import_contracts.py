"""Imports point down the data flow and never go round in a circle: the contracts in pyproject.toml
([tool.importlinter]) hold for the package, and the same kind of contracts fail on a package that breaks them."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(*args, cwd, pythonpath=None):
    env = dict(os.environ, PYTHONPATH=str(pythonpath or ROOT))
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_package_keeps_its_import_contracts():
    out = lint_imports(cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "scratch" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


CONTRACTS = """
[tool.importlinter]
root_package = "scratch"

[[tool.importlinter.contracts]]
name = "layers"
type = "layers"
layers = ["scratch.workflows", "scratch.trainer", "scratch.geometry"]

[[tool.importlinter.contracts]]
name = "no cycles"
type = "acyclic_siblings"
ancestors = ["scratch"]
"""


def test_an_upward_import_or_a_cycle_breaks_the_contracts(tmp_path):
    (tmp_path / "contracts.toml").write_text(CONTRACTS)
    clean = {
        "__init__.py": "",
        "workflows.py": "from . import trainer\n",
        "trainer.py": "from . import geometry\n",
        "geometry.py": "",
        "pieces/__init__.py": "",
        "pieces/a.py": "from . import b\n",
        "pieces/b.py": "",
    }
    write_package(tmp_path, clean)
    ok = lint_imports("--config", "contracts.toml", cwd=tmp_path, pythonpath=tmp_path)
    assert ok.returncode == 0, ok.stdout

    write_package(tmp_path, {"geometry.py": "def f():\n    from .trainer import x  # upward\n"})
    upward = lint_imports("--config", "contracts.toml", cwd=tmp_path, pythonpath=tmp_path)
    assert upward.returncode != 0 and "scratch.geometry is not allowed to import scratch.trainer" in upward.stdout

    write_package(tmp_path, {"geometry.py": "", "pieces/b.py": "from . import a\n"})
    cycle = lint_imports("--config", "contracts.toml", cwd=tmp_path, pythonpath=tmp_path)
    assert cycle.returncode != 0 and "No cycles are allowed in scratch.pieces" in cycle.stdout
