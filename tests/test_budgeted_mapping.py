"""The budgeted default mapping (``map-budgeted``): the fastest pipeline that fits ``hierarchy.chips`` chips.

Checked here: the options of a layer are Pareto-optimal and dominate every named strategy's plan; the
exact enumeration (``greedy``) and CP-SAT agree with brute force on small problems; on the zoo the
default's period is at most each named pipeline's that fits the same budget, with the fewest crossbars
at that period and no more chips than the budget; the fallbacks (CP-SAT out of time, a model too big for
the budget); the ``hierarchy.chips`` key; and that mixed netlists (strategies and replicas differing per
layer) verify in ideal and integer mode and go through ``xbc report`` and ``xbc inspect``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xbcompiler as xb
from tests.models import IMAGENET_MODELS, MODELS
from xbcompiler import cli
from xbcompiler.diagnostics import CompileError
from xbcompiler.mapping import budget, budget_solver
from xbcompiler.mapping.budget import BudgetProblem, Option
from xbcompiler.mapping.plan import ArraySpec, fully_folded
from xbcompiler.mapping.search import candidates
from xbcompiler.mapping.shape import LayerShape

DEFAULT = "default"
NAMED = ("fully-folded", "semi-folded", "fully-unfolded")
#: a crossbar-starved prime-like: 4 tiles of 8 crossbars, so layers mix strategies and replicas
SMALL_PRIME = {"hierarchy.tiles": 4, "hierarchy.crossbars_per_tile": 8}


def quiet_compile(model, x, target, pipeline=DEFAULT, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, (x,), target, pipeline=pipeline, **kwargs)


def conv(c_in, c_out, hw, k=3, s=1, p=1, groups=1) -> LayerShape:
    out = (hw + 2 * p - k) // s + 1
    return LayerShape(groups, c_in // groups, c_out // groups, (k, k), (s, s), (p, p), (1, 1), (hw, hw), (out, out))


# --- one layer's options --------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [conv(3, 16, 12), conv(16, 32, 8, s=2), conv(8, 8, 10, groups=4),
                                   conv(64, 64, 6, k=1, p=0)])
def test_options_are_pareto_optimal_and_dominate_every_strategy(shape):
    arr = ArraySpec(16, 32, 2)
    options = budget.layer_options(shape, arr)
    assert all(a.period < b.period and a.cost > b.cost for a, b in itertools.pairwise(options))
    bases = [fully_folded(shape, arr), *candidates("semi-folded", shape, arr), *candidates("fully-unfolded", shape, arr)]
    for plan, r in itertools.product(bases, (1, 2, 3, 7)):
        period, cost = -(-plan.phases // r), plan.crossbars * r
        assert any(o.period <= period and o.cost <= cost for o in options), (plan.strategy, plan.w_o, r)
    for o in options:  # each option is a real plan
        assert o.period == -(-next(p.phases for p in bases if (p.strategy, p.w_o) == (o.strategy, o.w_o)) // o.replicas)


@st.composite
def problems(draw):
    """Small random problems: 1-4 layers of 1-4 Pareto options each, and a capacity."""
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        periods = sorted(draw(st.sets(st.integers(1, 40), min_size=1, max_size=4)))
        costs = sorted(draw(st.sets(st.integers(1, 60), min_size=len(periods), max_size=len(periods))), reverse=True)
        layers.append(tuple(Option("fully-folded", 1, 1, c, p) for p, c in zip(periods, costs)))
    capacity = draw(st.integers(1, 150))
    return BudgetProblem(tuple(f"l{i}" for i in range(len(layers))), tuple(layers), capacity, 1)


@settings(max_examples=80, deadline=None)
@given(problems())
def test_greedy_and_cp_sat_are_exact(problem):
    """Brute force over every choice: the least period, then the fewest crossbars, within the capacity."""
    feasible = [c for c in itertools.product(*(range(len(o)) for o in problem.options))
                if problem.cost(c) <= problem.capacity]
    greedy = budget.greedy(problem)
    if not feasible:
        assert not greedy.fits and greedy.status == "OVER_BUDGET" and greedy.choice == problem.smallest()
        return
    best = min((problem.period(c), problem.cost(c)) for c in feasible)
    assert (greedy.period, greedy.crossbars) == best and greedy.fits and greedy.gap == 0
    found = budget_solver.solve(problem, time_limit_s=10)
    assert found is not None and found.status == "OPTIMAL"
    assert (found.period, found.crossbars) == best and found.gap == 0


# --- the zoo --------------------------------------------------------------------------------------------

def named_summaries(name: str, target: str) -> dict[str, dict]:
    case = MODELS[name]
    return {p: quiet_compile(case.build(), case.example_input(), target, p).summary for p in NAMED}


def check_default(name: str, target: str, chips: int, named: dict[str, dict]) -> None:
    case = MODELS[name]
    compiled = quiet_compile(case.build(), case.example_input(), target, overrides={"hierarchy.chips": chips})
    summary, record = compiled.summary, compiled.netlist.doc.provenance["map-budgeted"]
    assert summary["pipeline_period"] == record["period"] == record["greedy_period"]
    assert summary["crossbars_with_replicas"] == record["crossbars"] == record["greedy_crossbars"]  # fewest
    assert record["chips"] == chips
    if record["fits"]:
        assert (record["method"], record["status"], record["gap"]) == ("cp-sat", "OPTIMAL", 0)
        assert summary["chips"] <= chips
    else:  # even the fewest crossbars do not fit: every layer takes its cheapest option
        assert (record["method"], record["status"]) == ("greedy", "OVER_BUDGET")
    for pipeline, other in named.items():
        if other["chips"] <= chips:
            assert summary["pipeline_period"] <= other["pipeline_period"], pipeline


FAST = [("lenet", "isaac-like"), ("conv1d_net", "tiny"), ("resnet_digits", "prime-like"), ("mlp", "tiny"),
        ("transformer_block", "isaac-like")]


@pytest.mark.parametrize("name,target", FAST)
def test_default_period_is_at_most_every_named_pipeline_that_fits(name, target):
    named = named_summaries(name, target)
    for chips in (1, 3):
        check_default(name, target, chips, named)


@pytest.mark.slow
@pytest.mark.parametrize("target", ("isaac-like", "prime-like", "tiny"))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_period_on_the_whole_zoo(name, target):
    named = named_summaries(name, target)
    for chips in (1, 2, 8):
        check_default(name, target, chips, named)


@pytest.mark.slow
def test_resnet50_fits_one_isaac_chip_faster_than_fully_folded():
    """The issue's case: ResNet-50 (224x224) semi-folded needs 8 isaac-like chips, fully-folded one."""
    case = IMAGENET_MODELS["resnet50_imagenet"]
    model, x = case.build(), case.example_input()
    default = quiet_compile(model, x, "isaac-like").summary
    folded = quiet_compile(model, x, "isaac-like", "fully-folded").summary
    assert default["chips"] == 1 == folded["chips"]
    assert default["pipeline_period"] <= folded["pipeline_period"]


# --- fallbacks ------------------------------------------------------------------------------------------

def budgeted(**options) -> str:
    text = ",".join(f"{k.replace('_', '-')}={v}" for k, v in options.items())
    return f"fold-batchnorm,lower-im2col,lower-to-xbar,map-budgeted{{{text}}},place-tiles" if text else DEFAULT


def test_time_limit_zero_falls_back_to_greedy_with_a_warning():
    case = MODELS["lenet"]
    with pytest.warns(xb.XBWarning, match="XB322"):
        compiled = xb.compile(case.build(), (case.example_input(),), "isaac-like", pipeline=budgeted(time_limit_s=0))
    record = compiled.netlist.doc.provenance["map-budgeted"]
    assert record["method"] == "greedy" and record["status"] == "OPTIMAL" and record["gap"] == 0
    assert any("CP-SAT found no budgeted mapping" in w for w in compiled.warnings)
    reference = quiet_compile(case.build(), case.example_input(), "isaac-like").summary
    assert compiled.summary["pipeline_period"] == reference["pipeline_period"]


def test_solver_failure_falls_back_to_greedy(monkeypatch):
    monkeypatch.setattr(budget_solver, "solve", lambda *args, **kwargs: None)
    case = MODELS["conv1d_net"]
    with pytest.warns(xb.XBWarning, match="XB322"):
        compiled = xb.compile(case.build(), (case.example_input(),), "tiny")
    assert compiled.netlist.doc.provenance["map-budgeted"]["method"] == "greedy"
    assert compiled.report["map-budgeted"]["method"] == "greedy"


def test_greedy_method_runs_no_solver(monkeypatch):
    monkeypatch.setattr(budget_solver, "solve", lambda *args, **kwargs: pytest.fail("CP-SAT ran"))
    case = MODELS["lenet"]
    compiled = quiet_compile(case.build(), case.example_input(), "tiny", budgeted(method="greedy"))
    assert compiled.netlist.doc.provenance["map-budgeted"]["method"] == "greedy"


def test_too_small_a_chip_maps_the_fewest_crossbars_and_warns():
    """Even the smallest mapping of ResNet-20 needs many ``tiny`` chips: it is used, and place-tiles warns."""
    case = MODELS["resnet20"]
    model, x = case.build(), case.example_input()
    with pytest.warns(xb.XBWarning, match="XB310"):
        compiled = xb.compile(model, (x,), "tiny")
    record = compiled.netlist.doc.provenance["map-budgeted"]
    assert not record["fits"] and record["status"] == "OVER_BUDGET"
    folded = quiet_compile(model, x, "tiny", "fully-folded").summary
    assert compiled.summary["crossbars_with_replicas"] <= folded["crossbars"]
    assert compiled.summary["chips"] > 1 and all(layer.replicas == 1 for layer in compiled.netlist.layers)


def test_place_tiles_warns_only_past_the_budget():
    case = MODELS["resnet_digits"]
    model, x = case.build(), case.example_input()
    folded = quiet_compile(model, x, "tiny", "fully-folded").summary["chips"]
    assert folded > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", xb.XBWarning)
        xb.compile(model, (x,), "tiny", pipeline="fully-folded", overrides={"hierarchy.chips": folded})
    with pytest.warns(xb.XBWarning, match="XB310"):
        xb.compile(model, (x,), "tiny", pipeline="fully-folded", overrides={"hierarchy.chips": folded - 1})


# --- the target key -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,code", [(0, "XB404"), (-1, "XB404"), ("x", "XB402"), (1.5, "XB402"),
                                        (True, "XB402")])
def test_hierarchy_chips_is_validated(value, code):
    with pytest.raises(CompileError) as err:
        xb.load_target("isaac-like", {"hierarchy.chips": value})
    assert err.value.code == code and "hierarchy.chips" in err.value.message


def test_hierarchy_chips_defaults_to_one_and_keeps_fingerprints():
    isaac = xb.load_target("isaac-like")
    assert isaac.hierarchy.chips == 1
    assert isaac.fingerprint() == xb.load_target("isaac-like", {"hierarchy.chips": 1}).fingerprint()
    assert isaac.fingerprint() != xb.load_target("isaac-like", {"hierarchy.chips": 2}).fingerprint()


def test_cli_rejects_a_bad_chip_count(tmp_path, capsys):
    spec = "tests/models.py:digits_cnn"
    assert cli.main(["compile", spec, "--input-shape", "1,1,8,8", "--target", "tiny", "--set", "hierarchy.chips=0",
                     "-o", str(tmp_path / "out")]) == 2
    assert "XB404" in capsys.readouterr().err and not (tmp_path / "out").exists()


# --- mixed netlists downstream --------------------------------------------------------------------------

def test_mixed_netlist_verifies_ideal_and_integer():
    case = MODELS["resnet_digits"]
    model, x = case.build(), case.example_input()
    compiled = quiet_compile(model, x, "prime-like", overrides=SMALL_PRIME)
    layers = compiled.netlist.layers
    assert {layer.strategy for layer in layers} >= {"fully-folded", "semi-folded"}
    assert any(layer.replicas > 1 for layer in layers) and compiled.summary["chips"] == 1
    assert xb.verify(compiled.netlist, model, (x,)).max_rel < 1e-4
    quantised = quiet_compile(model, x, "prime-like", overrides=SMALL_PRIME, calibration=x)
    assert [(a.strategy, a.w_o, a.replicas) for a in quantised.netlist.layers] == \
        [(a.strategy, a.w_o, a.replicas) for a in layers]
    report = xb.verify(quantised.netlist, model, (x,), mode="integer")
    assert report.exact  # bit-exact against the integer reference


def test_mixed_netlist_saves_loads_reports_and_inspects(tmp_path, capsys):
    case = MODELS["lenet"]
    model, x = case.build(), case.example_input()
    compiled = quiet_compile(model, x, "prime-like")
    assert {layer.strategy for layer in compiled.netlist.layers} == {"fully-folded", "fully-unfolded"}
    out = compiled.save(tmp_path / "net")
    loaded = xb.load_netlist(out)
    assert xb.verify(loaded, model, (x,)).max_rel < 1e-4
    capsys.readouterr()
    assert cli.main(["report", str(out), "--plot", "--plot-dir", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    assert "fully-unfolded" in text and "fully-folded" in text
    assert (tmp_path / "plots" / "layers.png").exists()
    first = next(x for x in loaded.crossbars if loaded.layer(x.layer).strategy == "fully-folded")
    assert cli.main(["inspect", str(out), "--crossbar", first.id]) == 0
    assert first.layer in capsys.readouterr().out


@pytest.mark.slow
def test_bench_budget_quick_prints_every_pipeline():
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "bench" / "bench_budget.py"), "--quick", "--target", "tiny",
                           "--chips", "1", "4"], cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["bench"]: row for row in (json.loads(line) for line in proc.stdout.splitlines()
                                          if line.startswith('{"bench"'))}
    for chips in (1, 4):
        default = rows[f"budget_kws_conv1d_tiny_chips{chips}_default"]
        named = [rows[f"budget_kws_conv1d_tiny_chips{chips}_{s}"] for s in ("fully_folded", "semi_folded",
                                                                             "fully_unfolded")]
        assert {"crossbars", "chips", "period", "solve_s", "gap", "status"} <= default.keys()
        assert all(default["period"] <= row["period"] for row in named if row["chips"] <= chips)
