"""``examples/polarize_digits.py`` end to end with a tiny budget (issue 12, FORMS polarization)."""

from __future__ import annotations

import pytest

from tests.test_example_faults import run_quick


@pytest.mark.slow
def test_polarize_example_quick(tmp_path):
    out = tmp_path / "polarize"
    result = run_quick("polarize_digits.py", out)
    differential, polarized = result["rows"]
    assert (differential["encoding"], polarized["encoding"]) == ("differential", "polarized F=8")
    assert differential["adc_bits"] == 9 and polarized["adc_bits"] == 5  # 128 rows against 8-row fragments
    assert result["adc_bits_saved"] == {"8": 4}
    assert (differential["m_c"], polarized["m_c"]) == (8, 4)  # 7 magnitude bits on 2-bit cells, pair or one column
    assert differential["verify_ok"] and polarized["verify_ok"]
    # 8-bit quantisation with a lossless ADC: within two of the 450 test images of the float model (the last
    # bits of the float inputs' arithmetic can flip one rounding, so not always equal)
    assert abs(polarized["integer_accuracy_lossless"] - polarized["float_accuracy"]) <= 200 / 450
    assert polarized["float_accuracy"] > 50
    assert 0 < polarized["zero_skipped"] < 1 and differential["zero_skipped"] is None
    table = (out / "polarize.md").read_text()
    assert "| differential |" in table and "| polarized F=8 |" in table
