"""Every diagnostic code is documented, and CompileError renders code, location and hint."""

from pathlib import Path

import pytest

from xbcompiler.diagnostics import CODES, CompileError, Location

DOC = Path(__file__).resolve().parents[1] / "docs" / "diagnostics.md"


def test_every_code_is_documented():
    text = DOC.read_text()
    missing = [code for code in CODES if f"`{code}`" not in text]
    assert not missing, f"docs/diagnostics.md lacks {missing}"


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
