"""Property tests of the block-Toeplitz placement (hypothesis over layer shapes and crossbar sizes).

The expected cell of every weight copy is computed here from the background §2.2 formula, independently of
``xbcompiler.mapping.placement``::

    row = xrow + ((c - c_lo) * n_dy + (dy - dy_lo)) * w_i + x_out * s_w + dx * d_w
    col = xcol + (o - o_lo) * w_o + x_out

Checked: every weight sits exactly there, ``w_o * n_w`` times (times ``H'`` row copies when
fully-unfolded) and nowhere else; no two weights share a cell; every block fits its crossbar; the
inverse placement gives the weight tensor back; the program verifier accepts the placement and
rejects a broken one.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from xbcompiler.diagnostics import CompileError
from xbcompiler.ir.matrix import Geometry, LogicalMatrix
from xbcompiler.ir.program import XbarProgram
from xbcompiler.mapping.placement import layer_blocks, place, reconstruct
from xbcompiler.mapping.plan import ArraySpec, toeplitz_plan
from xbcompiler.mapping.shape import layer_shape


@st.composite
def layers(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and groups > 1
    c_in = groups * (1 if depthwise else draw(st.integers(1, 5)))
    c_out = groups * draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 12))
    geo = Geometry("conv2d", c_in, c_out, groups, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    h_out, w_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows, cols = draw(st.integers(8, 64)), draw(st.integers(4, 40))
    strategy = draw(st.sampled_from(["semi-folded", "fully-unfolded"]))
    w_o = draw(st.integers(1, w_out))
    seed = draw(st.integers(0, 2**16))
    return geo, (c_in, h, w), (c_out, h_out, w_out), rows, cols, strategy, w_o, seed


def program_of(geo, in_shape, out_shape, rows, cols, strategy, w_o, seed):
    shape = layer_shape(geo, in_shape, out_shape)
    plan = toeplitz_plan(strategy, shape, ArraySpec(rows, cols), w_o, "conv")
    assume(plan is not None)
    rng = np.random.default_rng(seed)
    w4 = rng.uniform(0.5, 1.5, (geo.out_channels, geo.in_channels // geo.groups, *geo.kernel)) \
        * rng.choice([-1.0, 1.0], (geo.out_channels, geo.in_channels // geo.groups, *geo.kernel))
    w4 = w4.astype(np.float32)
    n_g = geo.out_channels // geo.groups
    matrix = np.stack([w4[g * n_g:(g + 1) * n_g].reshape(n_g, -1).T for g in range(geo.groups)])
    m = LogicalMatrix("conv", "conv", "conv2d", geo, matrix, None, in_shape, out_shape, "conv")
    xs, blocks = layer_blocks("conv", shape, plan, 0, rows, cols)
    program = XbarProgram((), (), None, {"conv": m}, {}, {"conv": plan}, tuple(xs), (), tuple(blocks))
    return program, shape, plan, w4


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_every_weight_sits_exactly_where_the_placement_function_puts_it(case):
    geo, _, _, rows, cols, strategy, _, _ = case
    program, shape, plan, w4 = program_of(*case)
    assert plan.crossbars == len(program.crossbars)
    program.verify()  # plan, capacity, overlap and coverage (raises XB303)

    cells = np.zeros((len(program.crossbars), rows, cols), dtype=np.float32)
    hits = np.zeros(cells.shape, dtype=np.int64)
    copies = np.zeros(w4.shape, dtype=np.int64)
    kw = geo.kernel[1]
    c_g = geo.in_channels // geo.groups
    n_g = geo.out_channels // geo.groups
    for b in program.blocks:
        place(cells[b.crossbar], b, program.matrices["conv"].weight, shape, plan.w_o, plan.w_i)
        (c_lo, c_hi), (dy_lo, dy_hi), (o_lo, o_hi) = b.channels, b.kernel_rows, b.out_channels
        c, dy, dx, xo, o = np.meshgrid(np.arange(c_lo, c_hi), np.arange(dy_lo, dy_hi), np.arange(kw),
                                       np.arange(plan.w_o), np.arange(o_lo, o_hi), indexing="ij")
        row = b.xrow + ((c - c_lo) * (dy_hi - dy_lo) + (dy - dy_lo)) * plan.w_i + xo * geo.stride[1] + dx * geo.dilation[1]
        col = b.xcol + (o - o_lo) * plan.w_o + xo
        assert row.max() < rows and col.max() < cols  # capacity
        np.add.at(hits[b.crossbar], (row.ravel(), col.ravel()), 1)
        np.add.at(copies, ((b.group * n_g + o).ravel(), c.ravel(), dy.ravel(), dx.ravel()), 1)
        assert b.group * c_g + c_hi <= geo.in_channels
    for b in program.blocks:  # after every block is placed: each expected cell holds its weight
        (c_lo, c_hi), (dy_lo, dy_hi), (o_lo, o_hi) = b.channels, b.kernel_rows, b.out_channels
        c, dy, dx, xo, o = np.meshgrid(np.arange(c_lo, c_hi), np.arange(dy_lo, dy_hi), np.arange(kw),
                                       np.arange(plan.w_o), np.arange(o_lo, o_hi), indexing="ij")
        row = b.xrow + ((c - c_lo) * (dy_hi - dy_lo) + (dy - dy_lo)) * plan.w_i + xo * geo.stride[1] + dx * geo.dilation[1]
        col = b.xcol + (o - o_lo) * plan.w_o + xo
        np.testing.assert_array_equal(cells[b.crossbar][row, col], w4[b.group * n_g + o, c, dy, dx])
    assert hits.max() == 1  # no two weights in one cell
    assert not cells[hits == 0].any()  # nowhere else
    expected = plan.w_o * plan.n_w * (shape.out_hw[0] if strategy == "fully-unfolded" else 1)
    assert plan.copies == expected and (copies == expected).all()
    weight, seen = reconstruct(lambda b: cells[b.crossbar], program.blocks, shape, plan.w_o, plan.w_i)
    np.testing.assert_array_equal(weight, program.matrices["conv"].weight)
    assert (seen == expected).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers(), st.integers(0, 4))
def test_the_verifier_rejects_a_broken_placement(case, how):
    program, shape, plan, _ = program_of(*case)
    blocks = list(program.blocks)
    b = blocks[len(blocks) // 2]
    key = (blocks[0].group, blocks[0].channels, blocks[0].kernel_rows, blocks[0].out_channels)
    assume(how != 4 or key != (blocks[-1].group, blocks[-1].channels, blocks[-1].kernel_rows, blocks[-1].out_channels))
    if how == 0:  # a missing block
        broken = blocks[:len(blocks) // 2] + blocks[len(blocks) // 2 + 1:]
    elif how == 1:  # a block held twice
        broken = blocks + [b]
    elif how == 2:  # a block moved off its crossbar
        broken = blocks[:-1] + [blocks[-1]._replace(xrow=shape.c_in * 64 * plan.w_i + 1)]
    elif how == 3:  # a block claiming a slice that does not exist
        broken = blocks[:-1] + [blocks[-1]._replace(slice=plan.n_w)]
    else:  # the last slice holds the first block's weights twice and the last block's not at all
        broken = blocks[:-1] + [blocks[-1]._replace(group=key[0], channels=key[1], kernel_rows=key[2],
                                                    out_channels=key[3])]
    with pytest.raises(CompileError) as err:
        program.replace(blocks=tuple(broken)).verify()
    assert err.value.code == "XB303"
