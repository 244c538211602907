"""Every shell block of README.md works, run as a user of a fresh clone would run it.

Each block runs in its own fresh copy of the working tree (tracked and untracked files, no build
outputs), so relative paths such as ``examples/models.py`` resolve as they do in a clone. The install
blocks (``pip install ... && pip install -e ".[dev]" && ...``) run in a new virtual environment that
sees this interpreter's packages (``--system-site-packages``), offline: pip must find every requirement
already installed, and the editable install of the copy goes into the virtual environment only. The
test command gets ``--collect-only`` so the suite is collected, not run again from inside itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_tutorial import Block, code_blocks, xbc_on_path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = code_blocks(README, ("bash",))
#: pip's words for "I would have to download something": a requirement the install did not bring.
OFFLINE = ("No matching distribution found", "Could not find a version", "NewConnectionError",
           "Failed to establish a new connection", "Temporary failure in name resolution")
BUILD_OUTPUTS = ("build", "dist", "__pycache__", "*.egg-info", ".venv", ".pytest_cache", ".ruff_cache")


def fresh_copy(destination: Path) -> Path:
    """The working tree as a fresh clone would have it, uncommitted work included."""
    listed = None
    if (ROOT / ".git").exists() and shutil.which("git"):
        run = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=False)
        if run.returncode == 0:
            listed = [name for name in run.stdout.decode().split("\0") if name]
    if listed is None:
        shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(".git", *BUILD_OUTPUTS))
        return destination
    for name in listed:
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def is_install(block: Block) -> bool:
    return "pip install" in block.code


def as_run_here(code: str) -> str:
    """The block with the test suite only collected (running it here would run this test again)."""
    lines = []
    for line in code.splitlines():
        if "python -m pytest" in line:
            line = line.split("#", 1)[0].rstrip() + " --collect-only -q"
        lines.append(line)
    return "\n".join(lines) + "\n"


def offline_venv(folder: Path) -> dict[str, str]:
    """A virtual environment over this interpreter's packages whose ``pip`` installs into it, offline."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True)
    python = venv / "bin" / "python"
    # No pip of its own (the bundled one would shadow this interpreter's newer setuptools): a `pip` that
    # runs this interpreter's pip module under the environment's python, so it installs there.
    (venv / "bin" / "pip").write_text(f'#!/bin/sh\nexec "{python}" -m pip "$@"\n')
    (venv / "bin" / "pip").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               PIP_NO_INDEX="1", PIP_FIND_LINKS="", PIP_NO_BUILD_ISOLATION="0", OMP_NUM_THREADS="1")
    return env


def test_the_readme_has_install_and_usage_blocks():
    assert [is_install(b) for b in BLOCKS[:2]] == [True, True]
    assert any("examples/models.py:" in b.code for b in BLOCKS)
    assert as_run_here("python -m pytest -q -n 2\n") == "python -m pytest -q -n 2 --collect-only -q\n"


def test_the_models_the_readme_names_exist():
    """Every ``FILE.py:factory`` a block names is in the repository, unless the block writes it (``-o DIR``)."""
    for block in BLOCKS:
        words = block.code.split()
        written = {words[i + 1].rstrip("/") for i, w in enumerate(words[:-1]) if w in ("-o", "--output")}
        for word in words:
            if ".py:" in word and word.split("/")[0] not in written:
                assert (ROOT / word.split(":")[0]).is_file(), f"README.md:{block.line} names {word}"


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_shell_block_runs(block, tmp_path):
    repo = fresh_copy(tmp_path / "clone")
    env = offline_venv(tmp_path) if is_install(block) else xbc_on_path(tmp_path)
    if not is_install(block):
        env["PYTHONPATH"] = str(repo)  # the copy, as an installed clone would import it
    code = as_run_here(block.code)
    print(f"--- README.md:{block.line}, in {repo}:\n{code}", flush=True)
    run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=1800, check=False)
    print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
    # the README's own install ran first (CI installs exactly as it says), so an offline install that
    # wants the network means a requirement the README does not install: a failure, never a skip
    needs_network = is_install(block) and any(word in run.stderr for word in OFFLINE)
    assert not needs_network, f"README.md:{block.line} wants a package its install did not bring:\n{run.stderr[-4000:]}"
    assert run.returncode == 0, f"README.md:{block.line} exited {run.returncode}:\n{run.stderr[-4000:]}"
    if "python -m pytest" in code:
        assert "test_readme.py" in run.stdout  # the suite was collected, this file included
    if is_install(block):  # the console script and the package are the copy's, installed in the venv
        assert (tmp_path / "venv" / "bin" / "xbc").is_file()
        where = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                                "import xbcompiler; print(xbcompiler.__file__)"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=True).stdout
        assert Path(where.strip()).is_relative_to(repo), where
