"""Crossbar counts of the fully-folded mapping against an independent implementation of its formula.

The formula (background §2.2), written here from scratch and not imported from the compiler:

* ``m_c = ceil(wb / cb)`` physical columns per logical weight column for offset encoding,
  ``2 * ceil((wb - 1) / cb)`` for differential (sign + magnitude on a positive/negative pair);
* a crossbar holds ``R = rows`` matrix rows and ``C = floor(cols / m_c)`` logical columns;
* a dense layer (one group) of ``K x N`` takes ``ceil(K / R) * ceil(N / C)`` crossbars;
* a grouped/depthwise layer of ``G`` groups of ``K_g x N_g`` packs ``min(R // K_g, C // N_g)`` groups
  block-diagonally per crossbar when one group fits a crossbar, ``ceil(G / per)`` crossbars in all;
  otherwise each group is tiled alone: ``G * ceil(K_g / R) * ceil(N_g / C)``.
"""

from __future__ import annotations

from math import ceil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from torch import nn

import xbcompiler as xb
from tests.conftest import TARGETS, compile_quiet, zoo_compile
from tests.models import MODELS
from xbcompiler.netlist.placement import used_extent

# ------------------------------------------------------------------------------ independent formula


def physical_cols_per_weight(encoding: str, weight_bits: int, cell_bits: int) -> int:
    if encoding == "offset":
        return ceil(weight_bits / cell_bits)
    return 2 * ceil((weight_bits - 1) / cell_bits)


def expected_crossbars(groups: int, k_g: int, n_g: int, rows: int, cols: int, m_c: int) -> int:
    c = cols // m_c
    if groups == 1:
        return ceil(k_g / rows) * ceil(n_g / c)
    if k_g <= rows and n_g <= c:
        per = min(rows // k_g, c // n_g)
        return ceil(groups / per)
    return groups * ceil(k_g / rows) * ceil(n_g / c)


def target_params(target: xb.TargetSpec) -> tuple[int, int, int]:
    """(rows, physical cols, m_c) from the raw target description."""
    m_c = physical_cols_per_weight(target.encoding.signed, target.precision.weight_bits, target.crossbar.cell_bits)
    return target.crossbar.rows, target.crossbar.cols, m_c


def module_matrix_shape(mod: nn.Module) -> tuple[int, int, int]:
    """(groups, K per group, N per group) of a Conv1d/Conv2d/Linear module, from its weight tensor."""
    w = mod.weight
    if isinstance(mod, nn.Linear):
        return 1, w.shape[1], w.shape[0]
    groups = mod.groups
    return groups, int(np.prod(w.shape[1:])), w.shape[0] // groups


def module_im2col(mod: nn.Module) -> np.ndarray:
    """``[groups, K_g, N_g]`` with rows in (c, dy, dx) order: the matrix the crossbars must hold."""
    w = mod.weight.detach().numpy()
    if isinstance(mod, nn.Linear):
        return w.T[None]
    groups, k_g, n_g = module_matrix_shape(mod)
    return w.reshape(groups, n_g, k_g).transpose(0, 2, 1)


@pytest.mark.parametrize("name", TARGETS)
def test_builtin_targets_m_c(name):
    target = xb.load_target(name)
    _, cols, m_c = target_params(target)
    assert target.m_c == m_c
    assert target.logical_cols == cols // m_c
    # the documented values of the built-in targets (targets/*.toml comments)
    assert (m_c, cols // m_c) == {"isaac-like": (8, 16), "prime-like": (4, 64), "tiny": (4, 4)}[name]


@pytest.mark.parametrize("encoding,wb,cb,m_c", [
    ("offset", 16, 2, 8), ("offset", 8, 3, 3), ("offset", 2, 8, 1), ("offset", 16, 1, 16),
    ("differential", 8, 4, 4), ("differential", 4, 2, 4), ("differential", 2, 8, 2), ("differential", 16, 1, 30),
    ("differential", 9, 4, 4), ("differential", 10, 4, 6),
])
def test_m_c_examples(encoding, wb, cb, m_c):
    assert physical_cols_per_weight(encoding, wb, cb) == m_c
    target = xb.load_target("tiny", overrides={"encoding.signed": encoding, "precision.weight_bits": wb,
                                               "crossbar.cell_bits": cb, "crossbar.cols": 32})
    assert target.m_c == m_c and target.logical_cols == 32 // m_c


def test_formula_hand_examples():
    # dense: 400 x 120 on 128 rows x 16 logical columns -> 4 * 8
    assert expected_crossbars(1, 400, 120, 128, 128, 8) == 32
    # depthwise 3x3, 24 channels on 16 x 4: 16 // 9 = 1 group per crossbar
    assert expected_crossbars(24, 9, 1, 16, 16, 4) == 24
    # depthwise 3x3, 48 channels on 256 x 64: min(28, 64) = 28 per crossbar -> 2
    assert expected_crossbars(48, 9, 1, 256, 256, 4) == 2
    # grouped 1x1, 3 groups of 8 x 8 on 16 x 4: a group does not fit -> 3 * 1 * 2
    assert expected_crossbars(3, 8, 8, 16, 16, 4) == 6


# ------------------------------------------------------------------------------------ zoo x targets


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_layer_counts(name, target):
    zc = zoo_compile(name, target)
    netlist, tgt = zc.compiled.netlist, zc.compiled.target
    rows, cols, m_c = target_params(tgt)
    modules = dict(zc.model.named_modules())
    crossbar_modules = {path for path, m in modules.items() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}
    sources = set()
    total = 0
    for layer in netlist.layers:
        mod = modules.get(layer.source)
        if mod is not None:  # a module of the user's model: shape from its weight
            groups, k_g, n_g = module_matrix_shape(mod)
        else:  # a functional op turned into a layer by the front end: shape from the geometry
            assert layer.source.startswith("xb_"), layer.source
            g = layer.geometry
            groups = layer.groups
            k_g = g.in_channels // groups * g.kernel[0] * g.kernel[1]
            n_g = g.out_channels // groups
        sources.add(layer.source)
        assert (layer.groups, layer.matrix_rows, layer.matrix_cols) == (groups, k_g, n_g * groups)
        want = expected_crossbars(groups, k_g, n_g, rows, cols, m_c)
        assert layer.crossbars == want, (layer.name, groups, k_g, n_g)
        assert layer.strategy == "fully-folded"
        assert sum(1 for x in netlist.crossbars if x.layer == layer.name) == want
        total += want
    assert crossbar_modules <= sources, crossbar_modules - sources  # every Conv/Linear is on crossbars
    assert netlist.summary["crossbars"] == total == len(netlist.crossbars)
    assert netlist.summary["layers"] == len(netlist.layers)


# ------------------------------------------------------------------------------- placement checks


def check_placement(netlist: xb.Netlist, layer_name: str, weight: np.ndarray) -> None:
    """Every weight of ``weight`` [G, K_g, N_g] sits in exactly one cell; slices never overlap; no stray cells.

    The matrix is stored once (``netlist.weight``); each crossbar's cells are derived from its slices
    (``netlist.crossbar_cells``) and the matrix is rebuilt from those cells through the slices.
    """
    layer = netlist.layer(layer_name)
    target = netlist.doc.target
    rows = target["crossbar"]["rows"]
    m_c = physical_cols_per_weight(target["encoding"]["signed"], target["precision"]["weight_bits"],
                                   target["crossbar"]["cell_bits"])
    logical = target["crossbar"]["cols"] // m_c
    stored = netlist.weight(layer)
    assert stored.shape == weight.shape and stored.dtype == np.float32
    np.testing.assert_array_equal(stored, weight)
    first, n = layer.first_crossbar, layer.crossbars
    rebuilt = np.zeros(weight.shape, dtype=np.float64)
    placed = np.zeros(weight.shape, dtype=np.int64)
    xbars = netlist.layer_crossbars(layer)
    assert len(xbars) == n
    # the layer's crossbars are the run [first, first + n) of the crossbar list (a crossbar's index is its position)
    assert [k for k, x in enumerate(netlist.crossbars) if x.layer == layer_name] == list(range(first, first + n))
    for x in xbars:
        assert x.layer == layer_name and x.rows == rows and x.cols == logical
        assert x.physical_cols == x.cols * m_c
        assert not x.blocks
        cells = netlist.crossbar_cells(x.id)
        assert cells.shape == (rows, logical) and cells.dtype == np.float32
        occupied = np.zeros((rows, logical), dtype=np.int64)
        for s in x.slices:
            (r0, r1), (c0, c1), (ar, ac) = s.rows, s.cols, s.at
            h, w = r1 - r0, c1 - c0
            assert h > 0 and w > 0 and ar + h <= rows and ac + w <= logical, s
            occupied[ar:ar + h, ac:ac + w] += 1
            rebuilt[s.group, r0:r1, c0:c1] += cells[ar:ar + h, ac:ac + w]
            placed[s.group, r0:r1, c0:c1] += 1
        assert occupied.max(initial=0) <= 1, f"slices overlap on {x.id}"
        assert not cells[occupied == 0].any(), f"cells outside any slice are programmed on {x.id}"
        assert used_extent(layer, x) == (
            max((s.at[0] + s.rows[1] - s.rows[0] for s in x.slices), default=0),
            max((s.at[1] + s.cols[1] - s.cols[0] for s in x.slices), default=0))
    assert (placed == 1).all(), "a weight is placed zero or several times"
    np.testing.assert_array_equal(rebuilt.astype(np.float32), weight)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(MODELS))
def test_zoo_every_weight_placed_once(name, target):
    """Rebuild each layer's im2col matrix from the cells and slices of the netlist.

    A layer with no BatchNorm folded into it (``reference == name``) must hold exactly its module's
    weight; a folded layer must hold the compiler's (folded) logical matrix.
    """
    zc = zoo_compile(name, target)
    netlist, program = zc.compiled.netlist, zc.compiled.program
    modules = dict(zc.model.named_modules())
    for layer in netlist.layers:
        mod = modules.get(layer.source)
        if mod is not None and layer.reference == layer.name:
            weight = module_im2col(mod)
        else:
            weight = program.matrices[layer.name].weight
        check_placement(netlist, layer.name, weight)


# ------------------------------------------------------------------------------------- property test


@st.composite
def targets(draw):
    encoding = draw(st.sampled_from(["offset", "differential"]))
    weight_bits = draw(st.integers(2, 16))
    cell_bits = draw(st.integers(1, 8))
    small_or_any = st.one_of(st.integers(8, 24), st.integers(8, 256))  # small arrays tile more often
    rows = draw(small_or_any)
    cols = draw(small_or_any)
    assume(physical_cols_per_weight(encoding, weight_bits, cell_bits) <= cols)
    return {"crossbar.rows": rows, "crossbar.cols": cols, "crossbar.cell_bits": cell_bits,
            "precision.weight_bits": weight_bits, "encoding.signed": encoding}


@st.composite
def layers(draw):
    """(module, example input) for a random Conv2d, Conv1d or Linear."""
    kind = draw(st.sampled_from(["conv2d", "conv2d", "conv1d", "linear"]))
    seed = draw(st.integers(0, 2 ** 16))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    bias = draw(st.booleans())
    if kind == "linear":
        cin, cout = draw(st.integers(1, 80)), draw(st.integers(1, 80))
        lead = draw(st.sampled_from([(), (3,)]))
        return nn.Linear(cin, cout, bias=bias), torch.randn(2, *lead, cin, generator=gen)
    if draw(st.booleans()):  # depthwise (optionally with a channel multiplier)
        groups = draw(st.integers(1, 12))
        cin, cout = groups, groups * draw(st.integers(1, 2))
    else:
        groups = draw(st.integers(1, 4))
        cin, cout = groups * draw(st.integers(1, 10)), groups * draw(st.integers(1, 10))
    nd = 2 if kind == "conv2d" else 1
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, 1)) for _ in range(nd))
    size = tuple(d * (k - 1) + 1 + draw(st.integers(0, 4)) for k, d in zip(kernel, dilation))
    cls = nn.Conv2d if nd == 2 else nn.Conv1d
    mod = cls(cin, cout, kernel, stride, padding, dilation, groups, bias=bias)
    return mod, torch.randn(2, cin, *size, generator=gen)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=layers(), overrides=targets())
@pytest.mark.slow
def test_random_layers_on_random_targets(layer, overrides):
    mod, x = layer
    mod.eval()
    target = xb.load_target("tiny", overrides=overrides)
    rows, cols, m_c = target_params(target)
    groups, k_g, n_g = module_matrix_shape(mod)
    want = expected_crossbars(groups, k_g, n_g, rows, cols, m_c)
    assume(want <= 4000)  # keep each example fast
    if groups > 1:
        event("grouped, packed" if k_g <= rows and n_g <= cols // m_c else "grouped, tiled alone")
    event("several row tiles" if k_g > rows else "one row tile")
    event("several column tiles" if n_g > cols // m_c else "one column tile")

    compiled = compile_quiet(nn.Sequential(mod), (x,), target, pipeline="fully-folded")
    compiled.program.verify(target)  # the program verifier passes (raises CompileError XB303 otherwise)
    netlist = compiled.netlist
    assert len(netlist.layers) == 1
    layer_doc = netlist.layers[0]
    assert layer_doc.crossbars == want == netlist.summary["crossbars"] == len(netlist.crossbars)
    assert netlist.doc.target["crossbar"]["cols"] == cols
    check_placement(netlist, layer_doc.name, module_im2col(mod))
    if groups > 1 and k_g <= rows and n_g <= cols // m_c:
        assert layer_doc.groups_per_crossbar == min(rows // k_g, (cols // m_c) // n_g)
    # the emulated layer computes the module
    report = xb.verify(netlist, nn.Sequential(mod), (x,))
    assert report.ok, report.to_dict()
