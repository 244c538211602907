"""Every diagnostic code is documented, and CompileError renders code, location and hint.

``XB_UPDATE_GOLDEN=1 python -m pytest tests/test_diagnostics.py`` regenerates the code tables of
docs/diagnostics.md from ``xbcompiler.diagnostics.CODES``.
"""

import os
from pathlib import Path

import pytest

from xbcompiler.diagnostics import CODES, CompileError, Location

DOC = Path(__file__).resolve().parents[1] / "docs" / "diagnostics.md"
GROUPS = {"XB0": "Command line and files", "XB1": "Front end", "XB2": "Graph passes",
          "XB3": "Mapping and placement", "XB4": "Target descriptions", "XB5": "Netlist and emulator",
          "XB6": "Pass framework and pipelines", "XB7": "Sweeps"}
INTRO = """# Diagnostics

Every error the compiler reports on bad input is a `CompileError` with a stable code; tests match codes,
never prose. The CLI prints `error[XBnnn]: message`, the location (file and key, fx node and the user's
source line, crossbar id) and a hint, and exits with status 2 (no traceback unless `--debug`).
Verification mismatches exit with status 1. Warnings (`XBWarning`) carry a code in brackets.

The tables are kept in step with `xbcompiler.diagnostics.CODES` by `tests/test_diagnostics.py`.
"""


def render_doc() -> str:
    lines = [INTRO]
    for prefix, title in GROUPS.items():
        lines += [f"## {title} ({prefix}xx)", "", "| code | meaning |", "| --- | --- |"]
        lines += [f"| `{c}` | {t} |" for c, t in CODES.items() if c.startswith(prefix)]
        lines.append("")
    return "\n".join(lines)


def test_every_code_is_documented():
    if os.environ.get("XB_UPDATE_GOLDEN") == "1":
        DOC.write_text(render_doc())
    text = DOC.read_text()
    missing = [code for code in CODES if f"`{code}`" not in text]
    assert not missing, f"docs/diagnostics.md lacks {missing} (XB_UPDATE_GOLDEN=1 regenerates it)"


def test_render_has_code_location_and_hint():
    err = CompileError("XB401", "unknown key", hint="did you mean 'crossbar.rows'?",
                       location=Location(file="t.toml", key="crossbar.rowz"), details=["one", "two"])
    text = str(err)
    assert text.startswith("error[XB401]: unknown key")
    assert "t.toml" in text and "crossbar.rowz" in text and "did you mean" in text and "- two" in text
    assert err.exit_status == 2


def test_unregistered_code_is_refused():
    with pytest.raises(ValueError):
        CompileError("XB999", "nope")
