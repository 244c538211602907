"""``examples/plugin/``: an out-of-tree package publishing a pass and a target through entry points (issue 15).

It is installed into a fresh virtual environment that sees this one's packages (torch, xbcompiler), never
into this one, offline; the venv's ``xbc`` then lists the pass and the target and compiles with both by name.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xbcompiler.pipeline import NAMED_PIPELINES, registered_passes
from xbcompiler.target import list_targets

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "examples" / "plugin"
MODEL = f"{ROOT / 'examples' / 'custom_pass.py'}:make_model"
DEFAULT = ",".join(NAMED_PIPELINES["default"])


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv (``--system-site-packages``) with the plugin installed; returns its python."""
    tmp = tmp_path_factory.mktemp("plugin")
    source = tmp / "plugin"
    shutil.copytree(PLUGIN, source)  # the build writes build/ and *.egg-info beside the sources: not into the tree
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)],
                   check=True, timeout=300)
    python = env_dir / "bin" / "python"
    # this environment's pip installs into the venv (--python), built with this environment's setuptools
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
                           "--no-build-isolation", "--no-deps", "--disable-pip-version-check", str(source)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return python


def xbc(python: Path, *args: str) -> subprocess.CompletedProcess:
    """``xbc ARGS`` run by the venv's interpreter (the repository first on its path, as in this checkout)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(python), "-m", "xbcompiler.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False, cwd=ROOT)


@pytest.mark.slow
def test_plugin_pass_and_target_are_used_by_name(venv, tmp_path):
    listed = xbc(venv, "passes")
    assert listed.returncode == 0, listed.stderr
    assert "crossbar-budget" in listed.stdout and "max-crossbars" in listed.stdout
    targets = xbc(venv, "targets")
    assert targets.returncode == 0 and "my-chip" in targets.stdout and "32x32" in targets.stdout

    out = tmp_path / "net"
    pipeline = DEFAULT + ",crossbar-budget{max-crossbars=64}"
    proc = xbc(venv, "compile", MODEL, "--input-shape", "1,1,8,8", "--target", "my-chip", "--pipeline", pipeline,
               "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "netlist.json").read_text())
    assert doc["target"]["name"] == "my-chip" and doc["target"]["crossbar"]["rows"] == 32
    assert doc["pipeline"] == pipeline
    used = doc["summary"]["crossbars"]
    assert doc["provenance"]["crossbar-budget"] == {"crossbars": used, "max_crossbars": 64, "left": 64 - used}

    refused = xbc(venv, "compile", MODEL, "--input-shape", "1,1,8,8", "--target", "my-chip", "--pipeline",
                  DEFAULT + f",crossbar-budget{{max-crossbars={used - 1}}}", "-o", str(tmp_path / "over"))
    assert refused.returncode == 2 and "error[XB302]" in refused.stderr and "Traceback" not in refused.stderr
    assert "in pass 'crossbar-budget'" in refused.stderr and not (tmp_path / "over").exists()


@pytest.mark.slow
def test_this_environment_is_left_without_the_plugin(venv):
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("xbc-plugin-demo")
    assert "crossbar-budget" not in registered_passes() and "my-chip" not in list_targets()
    assert not (PLUGIN / "build").exists() and not list(PLUGIN.glob("*.egg-info"))
