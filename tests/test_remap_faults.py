"""``remap-faults`` (issue 12, item 5): crossbar permutations in the netlist, their readers, the solver, the pass."""

from __future__ import annotations

import itertools
import json
import warnings
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace
from torch import nn

import xbcompiler as xb
from tests.models import MODELS
from xbcompiler.emulator.fault_maps import chip_faults, save_fault_map
from xbcompiler.emulator.programming import SA0, SA1, load_fault_map
from xbcompiler.mapping.remap_solve import RemapProblem, assign, lower_bound, solve
from xbcompiler.netlist import Netlist, load_netlist, validate
from xbcompiler.netlist.placement import physical_extent, row_classes
from xbcompiler.pipeline import parse_pipeline
from xbcompiler.quant.pipeline import with_quantization

RATES = {"device.sa1_rate": 0.02, "device.sa0_rate": 0.02 / 5.2}


def _compile(model, x, target, pipeline, overrides=None, quantised: bool = True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, (x,), target, pipeline, calibration=x if quantised else None,
                          overrides={"precision.weight_bits": 8, "precision.input_bits": 8, **(overrides or {})})


def overrides(encoding: str) -> dict:
    return {"encoding.signed": encoding, "encoding.flip_columns": encoding != "differential-zero-high"}


@cache
def lenet(encoding: str = "differential-zero-high"):
    case = MODELS["lenet"]
    model, x = case.build(), case.example_input()[:2]
    return model, x, _compile(model, x, "isaac-like", "default", overrides(encoding))


@cache
def grouped(quantised: bool = True):
    """A grouped conv packed block-diagonally (four row blocks on one crossbar), fully-folded, flipped columns."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    x = torch.randn(2, 8, 6, 6)
    return model, x, _compile(model, x, "isaac-like", "fully-folded", {"encoding.flip_columns": True}, quantised)


@cache
def float_lenet():
    case = MODELS["lenet"]
    model, x = case.build(), case.example_input()[:2]
    return model, x, _compile(model, x, "isaac-like", "default", quantised=False)


def with_permutations(net: Netlist, perms: dict) -> Netlist:
    """``net`` with ``{crossbar id: (rows, cols)}`` permutations, checked like a loaded netlist."""
    crossbars = [replace(x, row_permutation=[int(v) for v in perms[x.id][0]],
                         column_permutation=[int(v) for v in perms[x.id][1]]) if x.id in perms else x
                 for x in net.crossbars]
    out = Netlist(replace(net.doc, crossbars=crossbars), dict(net.arrays))
    validate(out)
    return out


def random_permutations(net: Netlist, rng: np.random.Generator) -> dict:
    """Random valid permutations of every crossbar: each row block's rows onto its own or spare word lines."""
    perms = {}
    for x in net.crossbars:
        classes = row_classes(net.layer(x.layer), x)
        rows = np.empty(x.rows, dtype=np.int64)
        spare = set(np.flatnonzero(classes < 0).tolist())
        taken: set[int] = set()
        for k in rng.permutation(np.unique(classes[classes >= 0])):
            own = np.flatnonzero(classes == k)
            pool = sorted((set(own.tolist()) | spare) - taken)
            rows[own] = rng.choice(pool, size=len(own), replace=False)
            taken |= set(rows[own].tolist())
        left = sorted(set(range(x.rows)) - taken)
        rows[classes < 0] = rng.permutation(left)
        perms[x.id] = (rows, rng.permutation(x.cols))
    return perms


# --- the netlist fields ----------------------------------------------------------------------------

def test_netlists_without_the_pass_have_no_permutation_fields():
    _, _, cm = lenet()
    text = cm.netlist.json_bytes().decode()
    assert "row_permutation" not in text and "column_permutation" not in text


def test_the_loader_refuses_bad_permutations():
    _, _, cm = grouped()
    net = cm.netlist
    x = net.crossbars[0]
    classes = row_classes(net.layer(x.layer), x)
    assert len(set(classes[classes >= 0].tolist())) == 4  # four row blocks share the crossbar
    identity_rows, identity_cols = list(range(x.rows)), list(range(x.cols))
    a, b = (int(np.flatnonzero(classes == k)[0]) for k in (0, 1))
    across = identity_rows.copy()
    across[a], across[b] = b, a  # a row onto another row block's word line
    spare = int(np.flatnonzero(classes < 0)[0])
    onto_spare = identity_rows.copy()
    onto_spare[a], onto_spare[spare] = spare, a
    with_permutations(net, {x.id: (onto_spare, identity_cols[::-1])})  # allowed
    for rows, cols in ((identity_rows[:-1], identity_cols), ([0, *identity_rows[:-1]], identity_cols),
                       (identity_rows, [1, *identity_cols[1:]]), (across, identity_cols)):
        with pytest.raises(xb.CompileError) as err:
            with_permutations(net, {x.id: (rows, cols)})
        assert err.value.code == "XB510"


def test_saved_permutations_round_trip_and_show_in_crossbar_cells(tmp_path):
    _, _, cm = grouped()
    net = cm.netlist
    perms = random_permutations(net, np.random.default_rng(3))
    moved = with_permutations(net, perms)
    moved.save(tmp_path / "net")
    loaded = load_netlist(tmp_path / "net")
    for x in net.crossbars:
        rows, cols = perms[x.id]
        assert loaded.crossbar(x.id).row_permutation == rows.tolist()
        m = x.physical_cols // x.cols
        placed = net.crossbar_cells(x.id).reshape(x.rows, x.cols, m)
        physical = loaded.crossbar_cells(x.id).reshape(x.rows, x.cols, m)
        assert np.array_equal(physical[np.ix_(rows, cols)], placed)  # placement cell (r, c) on (rows[r], cols[c])


# --- permutations change nothing but where cells sit ----------------------------------------------

@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), which=st.sampled_from(["lenet", "grouped"]))
def test_random_permutations_keep_integer_and_device_outputs_bit_identical(seed, which):
    _, x, cm = lenet() if which == "lenet" else grouped()
    net = cm.netlist
    moved = with_permutations(net, random_permutations(net, np.random.default_rng(seed)))
    integer = xb.emulate(net, x, mode="integer")
    assert torch.equal(integer, xb.emulate(moved, x, mode="integer"))
    assert torch.equal(integer, xb.emulate(moved, x, mode="integer", literal=True))  # cells at their new places
    assert torch.equal(integer, xb.emulate(xb.program(moved, seed=1), x))  # an ideal device


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), which=st.sampled_from(["lenet", "grouped"]))
def test_random_permutations_keep_literal_float_execution_identical(seed, which):
    _, x, cm = float_lenet() if which == "lenet" else grouped(quantised=False)
    net = cm.netlist
    moved = with_permutations(net, random_permutations(net, np.random.default_rng(seed)))
    # the same sums in another order (a float matmul over permuted rows): equal up to rounding
    torch.testing.assert_close(xb.emulate(moved, x, literal=True), xb.emulate(net, x, literal=True),
                               rtol=1e-5, atol=1e-6)


def test_device_mode_sees_a_stuck_cell_at_its_permuted_place(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 8)).eval()
    x = torch.randn(3, 32)
    net = _compile(model, x, "isaac-like", "fully-folded", {"adc.mode": "lossless",
                                                             "encoding.flip_columns": False}).netlist
    xbar = net.crossbars[0]
    m = xbar.physical_cols // xbar.cols
    rows, cols = np.arange(xbar.rows), np.arange(xbar.cols)
    rows[[0, xbar.rows - 1]] = rows[[xbar.rows - 1, 0]]  # placement row 0 onto the last (spare) word line
    cols[[0, 5]] = cols[[5, 0]]
    moved = with_permutations(net, {xbar.id: (rows, cols)})
    assert physical_extent(moved.layers[0], moved.crossbars[0])[0] == xbar.rows
    levels = net.crossbar_cells(xbar.id)
    plane = int(np.flatnonzero(levels[0, :m] < 3)[0])  # a cell of placement (0, 0) below the top level
    sa1 = np.zeros((xbar.rows, xbar.physical_cols), dtype=bool)
    sa1[rows[0], cols[0] * m + plane] = True
    path = tmp_path / "map.npz"
    np.savez(path, **{f"sa1/{xbar.id}": sa1})
    fixed = {"device.fault_map": str(path)}
    integer = xb.emulate(net, x, mode="integer")
    hit = xb.emulate(xb.program(moved, overrides=fixed), x)
    assert not torch.equal(hit, integer)
    assert torch.equal((hit != integer).any(0), torch.arange(8) == 0)  # only output 0 (placement column 0)
    # on the unpermuted netlist that physical cell is on an unused word line: nothing changes
    assert torch.equal(xb.emulate(xb.program(net, overrides=fixed), x), integer)


# --- the solver ------------------------------------------------------------------------------------

def problems(max_rows: int = 4, max_cols: int = 3, planes: int = 2):
    @st.composite
    def build(draw):
        r, c = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        levels = rng.integers(0, 4, (r, c, planes))
        read = rng.random((r, c, 1)) < 0.8
        weight = np.array([1, 4][:planes])[None, None, :]
        stuck = rng.choice([0, SA0, SA1], size=(r, c, planes), p=[0.6, 0.1, 0.3])
        classes = rng.integers(-1, 2, r)
        return RemapProblem(cost0=levels * weight * read, cost1=(3 - levels) * weight * read, sa0=stuck == SA0,
                            sa1=stuck == SA1, row_class=classes)
    return build()


def brute_force(problem: RemapProblem) -> int:
    n_r, n_c, _ = problem.shape
    allowed = problem.allowed_rows()
    best = None
    for rows in itertools.permutations(range(n_r)):
        if not all(allowed[i, q] for i, q in enumerate(rows)):
            continue
        for cols in itertools.permutations(range(n_c)):
            cost = problem.cost(np.array(rows), np.array(cols))
            best = cost if best is None else min(best, cost)
    return best


@settings(max_examples=60, deadline=None)
@given(problem=problems())
def test_the_solver_never_worsens_and_its_bound_is_valid(problem):
    result = solve(problem, restarts=1)
    optimum = brute_force(problem)
    assert result.after == problem.cost(result.rows, result.cols)
    assert optimum <= result.after <= result.before == problem.cost(np.arange(problem.shape[0]),
                                                                      np.arange(problem.shape[1]))
    assert 0 <= result.bound <= optimum
    assert problem.allowed_rows()[np.arange(problem.shape[0]), result.rows].all()
    assert sorted(result.cols) == list(range(problem.shape[1]))
    if result.status == "optimal":
        assert result.after == optimum and result.gap == 0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_linear_assignment_is_exact_and_keeps_ties_in_place(n, seed):
    rng = np.random.default_rng(seed)
    costs = rng.integers(0, 3, (n, n))
    allowed = rng.random((n, n)) < 0.7
    allowed[np.arange(n), np.arange(n)] = True
    p = assign(costs, allowed, np.arange(n))
    best = min(sum(costs[i, q] for i, q in enumerate(perm)) for perm in itertools.permutations(range(n))
               if all(allowed[i, q] for i, q in enumerate(perm)))
    assert costs[np.arange(n), p].sum() == best and allowed[np.arange(n), p].all()
    assert (assign(np.zeros((n, n), np.int64), None, np.arange(n)) == np.arange(n)).all()


def test_the_bound_is_positive_when_every_placement_is_costly():
    ones = np.ones((2, 2, 1), dtype=np.int64)
    problem = RemapProblem(cost0=ones, cost1=ones, sa0=np.zeros((2, 2, 1), bool), sa1=np.ones((2, 2, 1), bool),
                           row_class=np.array([0, 0]))
    assert lower_bound(problem) == 4 and solve(problem).status == "optimal"


# --- fault maps ------------------------------------------------------------------------------------

def test_a_saved_fault_map_is_the_chips_faults_over_every_row(tmp_path):
    _, x, cm = lenet()
    chip = xb.program(cm, seed=4, overrides=RATES)
    faults = chip_faults(chip)
    for crossbar, state in chip.cells.items():
        xbar = cm.netlist.crossbar(crossbar)
        assert faults[crossbar].shape == (xbar.rows, xbar.physical_cols)
        assert np.array_equal(faults[crossbar][:state.stuck.shape[0]], state.stuck)
    path = save_fault_map(chip, tmp_path / "map.npz")
    loaded = load_fault_map(cm.netlist, path)
    assert all(np.array_equal(loaded[k], faults[k]) for k in faults)
    from_map = xb.program(cm, overrides={"device.fault_map": str(path)})
    assert torch.equal(xb.emulate(from_map, x), xb.emulate(chip, x))
    assert {k: v for k, v in chip_faults(from_map).items()}.keys() == faults.keys()


# --- the pass --------------------------------------------------------------------------------------

def remapped(tmp_path, encoding: str = "differential-zero-high", seed: int = 2, rates=None):
    model, x, cm = lenet(encoding)
    path = save_fault_map(xb.program(cm, seed=seed, overrides=rates or RATES), tmp_path / f"map{seed}.npz")
    out = _compile(model, x, "isaac-like", f"{cm.pipeline},remap-faults{{fault-map={json.dumps(str(path))}}}",
                   overrides(encoding))
    return cm, out, path, x


def test_the_pass_lowers_the_cost_and_the_device_error_and_reports_it(tmp_path):
    cm, out, path, x = remapped(tmp_path)
    report = out.report["remap-faults"]
    total = report["total"]
    assert total["faulty_crossbars"] > 0 and total["remapped_crossbars"] > 0
    assert 0 <= total["lower_bound"] <= total["cost_after"] < total["cost_before"]
    assert total["status"] in ("optimal", "feasible")
    assert sum(r["cost_before"] for r in report["crossbars"]) == total["cost_before"]
    provenance = out.netlist.doc.provenance["remap-faults"]
    assert provenance["total"] == total and "crossbars" not in provenance
    assert set(provenance["layers"]) <= {layer.name for layer in out.netlist.layers}
    # fault-free: the remapped netlist computes exactly what the plain one does
    integer = xb.emulate(cm, x, mode="integer")
    assert torch.equal(xb.emulate(out, x, mode="integer"), integer)
    fixed = {"device.fault_map": str(path)}
    err_without = (xb.emulate(xb.program(cm, overrides=fixed), x) - integer).abs().sum()
    err_with = (xb.emulate(xb.program(out, overrides=fixed), x) - integer).abs().sum()
    assert err_with < err_without


def test_the_pass_cost_is_the_error_the_stuck_cells_cause(tmp_path):
    """Cost before, recomputed cell by cell from the definition (plain differential, no permutations)."""
    cm, out, path, _ = remapped(tmp_path, "differential", seed=5)
    net = cm.netlist
    faults = load_fault_map(net, path)
    expected = 0
    for x in net.crossbars:
        layer = net.layer(x.layer)
        enc = layer.quant.encoding
        top, m = (1 << enc.cell_bits) - 1, x.physical_cols // x.cols
        shifts = [p.shift for p in layer.quant.planes]
        levels = net.crossbar_cells(x.id)
        from xbcompiler.netlist.placement import read_cells
        read = read_cells(layer, x)
        for r, pc in zip(*np.nonzero(faults[x.id])):
            c, p = divmod(int(pc), m)
            if p < len(shifts) and read[r, c]:
                lost = levels[r, pc] if faults[x.id][r, pc] == SA0 else top - levels[r, pc]
                expected += int(lost) << shifts[p]
    assert out.report["remap-faults"]["total"]["cost_before"] == expected


def test_no_faults_no_permutations(tmp_path):
    model, x, cm = lenet()
    path = save_fault_map(xb.program(cm), tmp_path / "clean.npz")
    out = _compile(model, x, "isaac-like", f"{cm.pipeline},remap-faults{{fault-map={json.dumps(str(path))}}}",
                   overrides("differential-zero-high"))
    assert out.report["remap-faults"]["total"]["faulty_crossbars"] == 0
    assert all(x.row_permutation is None and x.column_permutation is None for x in out.netlist.crossbars)


def test_the_target_fault_map_is_the_default_and_a_missing_one_is_xb530(tmp_path):
    model, x, cm = lenet()
    with pytest.raises(xb.CompileError) as err:
        _compile(model, x, "isaac-like", f"{cm.pipeline},remap-faults", overrides("differential-zero-high"))
    assert err.value.code == "XB530"
    path = save_fault_map(xb.program(cm, seed=1, overrides=RATES), tmp_path / "map.npz")
    out = _compile(model, x, "isaac-like", f"{cm.pipeline},remap-faults",
                   {**overrides("differential-zero-high"), "device.fault_map": str(path)})
    assert out.report["remap-faults"]["fault_map"] == str(path)
    with pytest.raises(xb.CompileError) as err:
        _compile(model, x, "isaac-like", f"{cm.pipeline},remap-faults{{fault-map=nowhere.npz}}",
                 overrides("differential-zero-high"))
    assert err.value.code == "XB530"


def test_calibration_inserts_the_periphery_before_the_pass():
    names = [p.name for p in with_quantization(parse_pipeline(
        "lower-im2col,lower-to-xbar,map-semi-folded,place-tiles,remap-faults{fault-map=m.npz}"))]
    assert names[-3:] == ["assign-adc", "calibrate-adc", "remap-faults"]


def test_the_cli_compiles_with_the_pass_and_inspect_shows_physical_cells(tmp_path, capsys):
    from pathlib import Path

    from xbcompiler import cli

    small = f"{Path(__file__).parent / 'data' / 'cli_models.py'}:small"
    common = [small, "--input-shape", "1,3,8,8", "--target", "tiny", "--calibrate-random", "4"]
    assert cli.main(["compile", *common, "-o", str(tmp_path / "plain")]) == 0
    plain = load_netlist(tmp_path / "plain")
    path = save_fault_map(xb.program(plain, seed=0, overrides={"device.sa1_rate": 0.2}), tmp_path / "map.npz")
    pipeline = f"{plain.doc.pipeline},remap-faults{{fault-map={json.dumps(str(path))}}}"
    assert cli.main(["compile", *common, "--pipeline", pipeline, "-o", str(tmp_path / "remapped")]) == 0
    capsys.readouterr()
    net = load_netlist(tmp_path / "remapped")
    assert net.doc.provenance["remap-faults"]["total"]["remapped_crossbars"] > 0
    x = next(x for x in net.crossbars if x.row_permutation is not None)
    assert cli.main(["inspect", str(tmp_path / "remapped"), "--crossbar", x.id, "--save", str(tmp_path / "c.npy")]) == 0
    shown = np.load(tmp_path / "c.npy")
    rows = np.asarray(x.row_permutation)
    before = plain.crossbar_cells(x.id)
    assert np.array_equal(shown, net.crossbar_cells(x.id))
    m = x.physical_cols // x.cols
    cols = np.arange(x.cols) if x.column_permutation is None else np.asarray(x.column_permutation)
    assert np.array_equal(shown.reshape(x.rows, x.cols, m)[np.ix_(rows, cols)], before.reshape(x.rows, x.cols, m))


def test_a_pass_out_of_time_keeps_the_identity_and_warns(tmp_path):
    model, x, cm = lenet()
    path = save_fault_map(xb.program(cm, seed=1, overrides=RATES), tmp_path / "map.npz")
    with pytest.warns(xb.XBWarning, match="XB532"):
        out = xb.compile(model, (x,), "isaac-like",
                         f"{cm.pipeline},remap-faults{{fault-map={json.dumps(str(path))},time-limit-s=0}}",
                         calibration=x, overrides={"precision.weight_bits": 8, "precision.input_bits": 8,
                                                   **overrides("differential-zero-high")})
    total = out.report["remap-faults"]["total"]
    assert total["status"] == "time-limit" and total["cost_after"] == total["cost_before"] > 0
    assert all(x.row_permutation is None and x.column_permutation is None for x in out.netlist.crossbars)


@pytest.mark.slow
def test_the_remapping_study_runs_quick(tmp_path):
    from tests.test_example_faults import run_quick

    result = run_quick("remap_faults.py", tmp_path / "remap")
    by_rate = result["accuracy"]["differential-zero-high"]["0.05"]
    cost = result["cost"]["differential-zero-high"]["0.05"]
    assert 0 <= by_rate["without"] <= 100 and 0 <= by_rate["with"] <= 100
    assert 0 < cost["after"] < cost["before"]
    table = (tmp_path / "remap" / "remap_faults.md").read_text()
    assert table.count("| differential-zero-high | 5 % |") == 1
    assert not list((tmp_path / "remap").glob("*.npz"))  # the maps are removed


def test_replicas_share_the_permutation_and_count_their_own_faults(tmp_path):
    model, x, _ = lenet()
    replicated = ("fold-batchnorm,lower-im2col,lower-to-xbar,map-fully-folded,"
                  "replicate-layers{budget=200,method=greedy},place-tiles")
    cm = _compile(model, x, "isaac-like", replicated, overrides("differential-zero-high"))
    xbar = next(x for x in cm.netlist.crossbars if x.replica_sites)
    chip = xb.program(cm, seed=0, overrides=RATES)
    faults = chip_faults(chip)
    assert set(faults) == set(chip.cells)
    replica = xbar.site_ids[1]
    only = {site: stuck if site == replica else np.zeros_like(stuck) for site, stuck in faults.items()}
    path = save_fault_map(only, tmp_path / "replica.npz")
    out = _compile(model, x, "isaac-like", f"{cm.pipeline},remap-faults{{fault-map={json.dumps(str(path))}}}",
                   overrides("differential-zero-high"))
    rows = out.report["remap-faults"]["crossbars"]
    assert [r["id"] for r in rows] == [xbar.id] and rows[0]["cost_before"] > 0
    fixed = {"device.fault_map": str(path)}
    state = xb.program(out, overrides=fixed).cells[replica].stuck
    assert np.array_equal(state, faults[replica][:state.shape[0]])
