"""Every diagnostic code is documented with a next step, and CompileError renders code, location and hint.

``XB_UPDATE_GOLDEN=1 python -m pytest tests/test_diagnostics.py`` regenerates the code tables of
docs/diagnostics.md from ``xbcompiler.diagnostics.REGISTRY``.
"""

import os
from pathlib import Path

import pytest

from xbcompiler.diagnostics import CODES, DOC, REGISTRY, CompileError, Location

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "diagnostics.md"
GROUPS = {"XB0": "Command line and files", "XB1": "Front end", "XB2": "Graph passes",
          "XB3": "Mapping and placement", "XB4": "Target descriptions", "XB5": "Netlist and emulator",
          "XB6": "Pass framework and pipelines", "XB7": "Sweeps"}
INTRO = """# Diagnostics

Every error the compiler reports on bad input is a `CompileError` with a stable code; tests match codes,
never prose. The CLI prints `error[XBnnn]: message`, the location (file and key, fx node and the user's
source line, crossbar id), a `hint:` line saying what to do next and a `see:` line naming this page, and
exits with status 2 (no traceback unless `--debug`). The hint is the raise site's own when it has one
(it names the value or key at fault), else the code's "what to do" below. Verification mismatches exit
with status 1. Warnings (`XBWarning`) carry a code in brackets. A usage error reported by argparse (a
missing argument, an unknown flag) ends with `(try xbc COMMAND --help)`, whose examples section shows
working command lines.

The tables are generated from `xbcompiler.diagnostics.REGISTRY` by `tests/test_diagnostics.py`
(`XB_UPDATE_GOLDEN=1` rewrites them).
"""


def render_doc() -> str:
    lines = [INTRO]
    for prefix, title in GROUPS.items():
        lines += [f"## {title} ({prefix}xx)", "", "| code | meaning | what to do |", "| --- | --- | --- |"]
        lines += [f"| `{c}` | {e.title} | {e.next_step} |" for c, e in REGISTRY.items() if c.startswith(prefix)]
        lines.append("")
    return "\n".join(lines)


def test_every_code_is_documented():
    if os.environ.get("XB_UPDATE_GOLDEN") == "1":
        DOC_PATH.write_text(render_doc())
    assert DOC_PATH.read_text() == render_doc(), "docs/diagnostics.md is stale (XB_UPDATE_GOLDEN=1 regenerates it)"
    assert DOC_PATH.relative_to(DOC_PATH.parents[1]).as_posix() == DOC  # the page errors point at


def test_codes_is_the_title_of_every_registered_code():
    assert CODES == {code: entry.title for code, entry in REGISTRY.items()}
    assert all(code[:2] == "XB" and code[2:].isdigit() and len(code) == 5 for code in CODES)
    assert all(any(code.startswith(prefix) for prefix in GROUPS) for code in CODES)


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_every_code_has_a_specific_next_step(code):
    step = REGISTRY[code].next_step
    assert REGISTRY[code].title and step.strip() == step and len(step) >= 20
    assert step[0].islower() and not step.endswith(".")  # one style: a clause after "hint: "
    assert "|" not in step and "<" not in step  # safe in the generated markdown table


def test_next_steps_are_not_shared():
    """Each code says what to do about that code: no advice pasted onto two codes."""
    steps = [entry.next_step for entry in REGISTRY.values()]
    assert len(set(steps)) == len(steps)


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_every_code_renders_a_hint_and_the_docs(code):
    lines = CompileError(code, "x").render().splitlines()
    assert lines[0] == f"error[{code}]: x"
    assert f"  hint: {REGISTRY[code].next_step}" in lines
    assert lines[-1] == f"  see: {DOC}, {code}"


def test_raise_site_hint_wins_over_the_default():
    err = CompileError("XB001", "model file m.py not found", hint="did you mean 'models.py'?")
    text = err.render()
    assert "  hint: did you mean 'models.py'?" in text and REGISTRY["XB001"].next_step not in text
    assert err.hint == "did you mean 'models.py'?" and err.next_step == err.hint
    assert CompileError("XB001", "x").hint is None  # the default is rendered, not stored as the site's hint


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
