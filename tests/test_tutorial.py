"""docs/tutorial.md works as written: every code block, in order, in an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial.md"
#: A fenced block, also one indented inside a list item: indent, language, body, closing fence.
FENCE = re.compile(r"^([ \t]*)```(\w+)[^\n]*\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
FILE_MARK = re.compile(r"# file: (\S+)\n")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown page: its language, its text and the line it starts on."""

    language: str
    code: str
    line: int

    @property
    def file_name(self) -> str | None:
        """A Python block whose first line is ``# file: NAME`` is a file to save, not code to run."""
        m = FILE_MARK.match(self.code)
        return m.group(1) if m else None


def code_blocks(path: Path, languages: tuple[str, ...]) -> list[Block]:
    """The blocks of ``path`` in these languages, in order, their fence's indentation removed."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        indent, language, body = m.groups()
        if language in languages:
            code = "".join(line.removeprefix(indent) for line in body.splitlines(keepends=True))
            blocks.append(Block(language, code, text.count("\n", 0, m.start()) + 1))
    return blocks


def xbc_on_path(folder: Path) -> dict[str, str]:
    """An environment whose ``xbc`` and ``python`` are this interpreter running this working tree."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "xbc").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m xbcompiler.cli "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_the_tutorial_has_every_step():
    blocks = code_blocks(TUTORIAL, ("python", "bash"))
    assert {b.language for b in blocks} == {"python", "bash"}
    assert [b.file_name for b in blocks if b.file_name] == ["mynet.py"]
    text = "\n".join(b.code for b in blocks)
    for step in ("xb.compile(", "calibration=", "xbc prune", "xb.verify(", "xbc verify", "xbc inspect",
                 "crossbar_cells(", "xbc report", "CompileError", '"fully-folded"'):
        assert step in text, step


@pytest.mark.slow
def test_every_block_of_the_tutorial_runs(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    env = xbc_on_path(tmp_path)
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    modules = set(sys.modules)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": "__tutorial__"}
    try:
        for block in code_blocks(TUTORIAL, ("python", "bash")):
            where = f"docs/tutorial.md:{block.line} ({block.language})"
            print(f"--- {where}\n{block.code}", flush=True)
            if block.file_name:
                (work / block.file_name).write_text(block.code, encoding="utf-8")
            elif block.language == "python":
                exec(compile(block.code, where, "exec"), namespace)  # noqa: S102 -- the page's own code; errors name it
            else:
                run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=work, env=env,
                                     capture_output=True, text=True, timeout=600, check=False)
                print(run.stdout[-3000:], run.stderr[-3000:], sep="\n")
                assert run.returncode == 0, f"{where} exited {run.returncode}:\n{run.stderr[-3000:]}"
    finally:
        torch.set_num_threads(threads)
        for name in set(sys.modules) - modules:
            if name == "mynet":
                del sys.modules[name]
    assert (work / "pruned" / "netlist.json").is_file()
    assert (work / "t0.x1.npy").is_file()
