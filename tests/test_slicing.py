"""Property tests of the integer encodings, slicing, flipping and ADC (xbcompiler.quant.slicing).

Every encoding, every (cell bits k, DAC bits d, ADC bits B) in the supported ranges, random integer
matrices and inputs: the per-read datapath with a lossless ADC equals ``X @ W`` exactly, and with a
lossy ADC it equals an independent pure-Python reference that drops, rounds and saturates the same LSBs.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xbcompiler.quant.scheme import int_range, round_shift, weight_range
from xbcompiler.quant.slicing import (
    Encoding,
    adc_codes,
    block_mvm,
    flip_flags,
    input_digits,
    inputs_from_digits,
    lossless_bits,
    shift_add_folded,
    weight_levels,
    weights_from_levels,
)


@st.composite
def encodings(draw, max_weight_bits: int = 16, max_input_bits: int = 16) -> Encoding:
    k = draw(st.integers(1, 8))
    b_x = draw(st.integers(1, max_input_bits))
    return Encoding(signed=draw(st.sampled_from(["differential", "offset"])),
                    weight_bits=draw(st.integers(2, max_weight_bits)), cell_bits=k, input_bits=b_x,
                    dac_bits=draw(st.integers(1, min(8, b_x))), input_signed=draw(st.booleans()),
                    input_scheme=draw(st.sampled_from(["twos-complement", "offset"])),
                    flip_columns=draw(st.booleans()))


def _tensor(draw, shape, lo, hi) -> torch.Tensor:
    seed = draw(st.integers(0, 2 ** 31))
    return torch.randint(lo, hi + 1, shape, generator=torch.Generator().manual_seed(seed))


@st.composite
def problems(draw, max_bits: int = 12):
    enc = draw(encodings(max_bits, max_bits))
    rows, cols, batch = draw(st.integers(1, 40)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    w = _tensor(draw, (rows, cols), *weight_range(enc.weight_bits))
    x = _tensor(draw, (batch, rows), *int_range(enc.input_bits, enc.input_signed))
    if draw(st.booleans()):  # extreme values reach every saturation corner
        w = torch.where(w > 0, weight_range(enc.weight_bits)[1], weight_range(enc.weight_bits)[0])
    return enc, w, x


@settings(max_examples=200, deadline=None)
@given(encodings(), st.data())
def test_weight_levels_round_trip(enc, data):
    w = _tensor(data.draw, (17, 3), *weight_range(enc.weight_bits))
    levels = weight_levels(w, enc)
    assert levels.shape == (enc.planes, 17, 3)
    assert levels.min() >= 0 and levels.max() <= enc.max_level
    assert torch.equal(weights_from_levels(levels, enc), w)
    assert enc.planes == enc.slices * (2 if enc.signed == "differential" else 1)


@settings(max_examples=200, deadline=None)
@given(encodings(), st.data())
def test_input_digits_round_trip(enc, data):
    x = _tensor(data.draw, (5, 9), *int_range(enc.input_bits, enc.input_signed))
    digits = input_digits(x, enc)
    assert len(enc.cycles) == digits.shape[0]
    for t, (_, _, bits) in enumerate(enc.cycles):
        assert digits[t].min() >= 0 and digits[t].max() < (1 << bits) and bits <= enc.dac_bits
    assert torch.equal(inputs_from_digits(digits, enc), x)


@settings(max_examples=300, deadline=None)
@given(problems(max_bits=16))
def test_lossless_datapath_is_exact(problem):
    enc, w, x = problem
    flips = flip_flags(weight_levels(w, enc), torch.ones(w.shape, dtype=torch.bool), enc)
    assert torch.equal(block_mvm(x, w, enc, flips=flips), x @ w)


@settings(max_examples=300, deadline=None)
@given(problems(max_bits=12))
def test_flipping_saves_one_adc_bit(problem):
    enc, w, _ = problem
    levels = weight_levels(w, enc)
    flips = flip_flags(levels, torch.ones(w.shape, dtype=torch.bool), enc)
    stored = torch.where(flips[:, None, :], enc.max_level - levels, levels)
    worst = int(stored.sum(1).max()) * enc.max_digit
    full = w.shape[0] * enc.max_digit * enc.max_level
    bits = lossless_bits(full)
    assert lossless_bits(worst) <= (bits - 1 if enc.flip_columns else bits)


def _python_reference(x, w, enc: Encoding, flips, step: int, bits: int, rounding: str) -> np.ndarray:
    """background §0.4 with Python integers: per read ADC(I) = clamp(R(I / 2**step), 0, 2**B - 1) * 2**step."""
    x, w = x.tolist(), w.tolist()
    rows, cols = len(w), len(w[0])
    levels = weight_levels(torch.tensor(w), enc).tolist()
    out = np.zeros((len(x), cols), dtype=object)
    for m, xr in enumerate(x):
        digits = input_digits(torch.tensor([xr]), enc)[:, 0].tolist()
        driven = [v + enc.input_offset for v in xr]
        for j in range(cols):
            y = 0
            for t, (w_t, _, _) in enumerate(enc.cycles):
                for p, (sign, shift) in enumerate(zip(enc.plane_signs, enc.plane_shifts)):
                    flip = bool(flips[p][j])
                    col = [(enc.max_level - levels[p][i][j]) if flip else levels[p][i][j] for i in range(rows)]
                    read = sum(digits[t][i] * col[i] for i in range(rows))
                    q = read / 2 ** step
                    code = min(round(q) if rounding == "nearest-even" else int(np.floor(q)), 2 ** bits - 1)
                    value = code * 2 ** step
                    if flip:
                        value = enc.max_level * sum(digits[t]) - value
                    y += sign * w_t * value * 2 ** shift
            y -= enc.weight_offset * sum(driven)
            y -= enc.input_offset * sum(w[i][j] for i in range(rows))
            out[m, j] = y
    return out


@settings(max_examples=150, deadline=None)
@given(problems(max_bits=8), st.integers(1, 16), st.integers(0, 6), st.sampled_from(["nearest-even", "floor"]))
def test_lossy_adc_matches_python_reference(problem, bits, step, rounding):
    enc, w, x = problem
    flips = flip_flags(weight_levels(w, enc), torch.ones(w.shape, dtype=torch.bool), enc)
    got = block_mvm(x, w, enc, flips=flips, step_bits=step, bits=bits, rounding=rounding)
    want = _python_reference(x, w, enc, flips.tolist(), step, bits, rounding)
    assert got.tolist() == want.tolist()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 1 << 20), st.integers(0, 10), st.integers(1, 16))
def test_adc_codes(read, step, bits):
    top = (1 << bits) - 1
    even = adc_codes(torch.tensor([read]), step, bits, "nearest-even").item()
    floor = adc_codes(torch.tensor([read]), step, bits, "floor").item()
    assert even == min(round(read / 2 ** step), top)  # Python rounds half to even
    assert floor == min(read >> step, top)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 40), 1 << 40), st.integers(-12, 30))
def test_round_shift_is_round_half_up(v, n):
    got = round_shift(torch.tensor([float(v)], dtype=torch.float64), n).item()
    want = v * 2 ** -n if n <= 0 else (v + (1 << (n - 1))) >> n
    assert got == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(-(1 << 12), 1 << 12), st.integers(0, 24)), min_size=1, max_size=12),
       st.integers(-(1 << 20), 1 << 20), st.integers(-8, 20))
def test_output_shift_folds_into_the_shift_and_add(reads, constant, n):
    values, amounts = [v for v, _ in reads], [a for _, a in reads]
    total = sum(v << a for v, a in reads) + constant
    want = total * 2 ** -n if n <= 0 else total >> n
    assert shift_add_folded(values, amounts, constant, n) == want
