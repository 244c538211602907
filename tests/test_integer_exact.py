"""The exact product of lossless columns: float32, radix-256 digits in float32, float64 (integer mode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from xbcompiler.emulator.integer_exact import RADIX, ExactProduct, balanced_digits


def conv(x, w, groups):
    return F.conv2d(x, w, None, 1, 1, 1, groups)


@given(st.integers(-(2**40), 2**40))
def test_balanced_digits_recompose(v):
    hi, lo = balanced_digits(np.array([v], dtype=np.int64))
    assert -RADIX // 2 <= lo[0] < RADIX // 2 and RADIX * hi[0] + lo[0] == v
    small = v % 2**23 - 2**22  # float32 tensors: exact while |v| + 128 stays below 2**24
    thi, tlo = balanced_digits(torch.tensor([float(small)]))
    assert float(RADIX * thi[0] + tlo[0]) == float(small) and -128 <= float(tlo[0]) < 128


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 16), x_bits=st.integers(2, 16), groups=st.sampled_from([1, 2]),
       c_g=st.integers(1, 24), n_g=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_every_way_equals_the_float64_product(bits, x_bits, groups, c_g, n_g, seed):
    rng = np.random.default_rng(seed)
    w_top, x_top = 2 ** (bits - 1), 2 ** (x_bits - 1)
    w = rng.integers(-w_top, w_top, size=(groups * n_g, c_g, 3, 3))
    x = torch.from_numpy(rng.integers(-x_top, x_top, size=(2, groups * c_g, 5, 4)).astype(np.float32))
    x[0, :, 0, 0] = -x_top  # the extremes of the range
    x[1, :, 0, 0] = x_top - 1
    expected = conv(x.double(), torch.from_numpy(w.astype(np.float64)), groups)
    product = ExactProduct.build(w, groups, x_top, torch.device("cpu"))
    got = product(x, conv)
    assert got.shape == expected.shape and torch.equal(got.double(), expected)


def test_sixteen_bit_operands_use_the_digit_split_and_stay_exact():
    rng = np.random.default_rng(0)
    w = rng.integers(-(2**15), 2**15, size=(16, 64, 3, 3))  # 576 rows of full-range 16-bit weights
    product = ExactProduct.build(w, 1, 2**15, torch.device("cpu"))
    assert product.how == "split"
    x = torch.from_numpy(rng.integers(-(2**15), 2**15, size=(3, 64, 6, 6)).astype(np.float32))
    x[:, :, 2, 2] = -(2**15)
    expected = conv(x.double(), torch.from_numpy(w.astype(np.float64)), 1)
    assert torch.equal(product(x, conv), expected)


@pytest.mark.parametrize(("w_bits", "x_max", "how"), [(8, 2**7, "float32"), (16, 2**15, "split"),
                                                      (24, 2**23, "float64")])
def test_the_cheapest_exact_way_is_chosen(w_bits, x_max, how):
    w = np.full((4, 64, 3, 3), 2 ** (w_bits - 1) - 1, dtype=np.int64)
    assert ExactProduct.build(w, 1, x_max, torch.device("cpu")).how == how
