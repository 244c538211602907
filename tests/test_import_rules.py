"""The core never imports the built-in ``passes`` or ``targets`` (docs/passes.md, layering).

Two independent checks: import-linter with the repository's ``[tool.importlinter]`` contract (the
one CI runs), and a direct walk over every module's syntax tree that also catches dynamic imports
by literal name (``importlib.import_module("passes...")``), which import-linter cannot see.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "xbcompiler"
FORBIDDEN = {"passes", "targets"}

#: Runs import-linter's command line in-process of a fresh interpreter: ``python -m importlinter.cli``
#: would import the module and exit 0 without checking anything (it has no ``__main__`` block).
LINT_IMPORTS = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]


def lint_imports(cwd: Path, *args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([*LINT_IMPORTS, "--no-cache", "--no-logo", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_pyproject_declares_the_contract():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert {"xbcompiler", "passes", "targets"} <= set(config["root_packages"])
    forbidden = [c for c in config["contracts"] if c["type"] == "forbidden"
                 and "xbcompiler" in c["source_modules"]]
    assert forbidden and FORBIDDEN <= set(forbidden[0]["forbidden_modules"])


def test_import_linter_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout, result.stdout


def test_import_linter_would_catch_a_violation(tmp_path):
    """The same contract on a copy of the layout whose core imports ``passes``: lint-imports fails.

    The copy's packages are renamed (``xbcompiler`` -> ``fake_xbcompiler``, ...) in the tree and in the
    contract alike, so an installed xbcompiler (an editable install's import finder) cannot shadow them.
    """
    rename = lambda text: re.sub(r"\b(xbcompiler|passes|targets)\b", r"fake_\1", text)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["[tool.importlinter]"] + [f"{k} = {rename(json.dumps(v))}" for k, v in config.items() if k != "contracts"]
    for contract in config["contracts"]:  # strings and lists of strings: JSON spells them as TOML does
        lines += ["[[tool.importlinter.contracts]]"] + [f"{k} = {rename(json.dumps(v))}" for k, v in contract.items()]
    (tmp_path / "pyproject.toml").write_text("\n".join(lines) + "\n")
    named = {m.strip() for contract in config["contracts"]
             for key in ("layers", "source_modules", "forbidden_modules")
             for entry in contract.get(key, []) for m in re.split(r"[:|]", entry)}
    for module in sorted({"xbcompiler", "passes", "targets", *named}):  # every module a contract names exists
        folder = tmp_path.joinpath(*rename(module).split("."))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
    (tmp_path / "fake_xbcompiler" / "driver.py").write_text("from fake_passes import fold_batchnorm  # the violation\n")
    (tmp_path / "fake_passes" / "fold_batchnorm.py").write_text("import fake_xbcompiler\n")
    result = lint_imports(tmp_path, pythonpath=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "BROKEN" in result.stdout and "fake_xbcompiler.driver" in result.stdout, result.stdout


def _forbidden_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: what`` for each import of ``passes``/``targets`` in a core module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            names = [node.args[0].value]
        found += [f"{path.relative_to(root)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    return found


def test_no_core_module_imports_passes_or_targets():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 10 and CORE / "driver.py" in files
    violations = [v for f in files for v in _forbidden_imports(f)]
    assert violations == [], "the core must discover passes/targets through entry points:\n" + "\n".join(violations)


@pytest.mark.parametrize("source,caught", [
    ("import passes", True),
    ("import passes.fold_batchnorm as f", True),
    ("from targets import catalog", True),
    ("from passes.lower_im2col import LowerIm2colPass", True),
    ("import importlib\nimportlib.import_module('passes.place_tiles')", True),
    ("__import__('targets')", True),
    ("from . import passes", False),  # xbcompiler.passes would be a core subpackage, not the built-ins
    ("from .pipeline import passes_of", False),
    ("import passesx\nimport xbcompiler.targets_util", False),
    ("text = 'import passes'", False),
])
def test_the_ast_check_itself(tmp_path, source, caught):
    path = tmp_path / "module.py"
    path.write_text(textwrap.dedent(source) + "\n")
    found = _forbidden_imports(path, root=tmp_path)
    assert bool(found) == caught, found


def test_lint_imports_console_script_agrees():
    script = shutil.which("lint-imports") or shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert script, "lint-imports (import-linter, in the [dev] extra) is not installed next to this Python"
    result = subprocess.run([script, "--no-cache"], check=False, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
