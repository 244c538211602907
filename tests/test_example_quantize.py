"""``examples/quantize_digits.py`` runs end to end: 8-bit power-of-two quantisation loses at most one
percentage point on the held-out digits, and the ADC bias compensation helps floor rounding."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quantize_digits.py"


@pytest.mark.slow
def test_quantize_digits_example(capsys):
    spec = importlib.util.spec_from_file_location("quantize_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--epochs", "12"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads(json.dumps(result, sort_keys=True))
    rows = {r["config"]: r for r in result["rows"]}
    assert result["float_accuracy"] > 95.0
    assert result["eight_bit_drop_pp"] <= 1.0
    floor = [r for name, r in rows.items() if "floor" in name]
    compensated = next(r for r in floor if "+ bias compensation" in r["config"])
    uncompensated = next(r for r in floor if "no compensation" in r["config"])
    assert compensated["accuracy"] > uncompensated["accuracy"]
