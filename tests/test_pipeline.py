"""The pass framework: options, pipeline text, registry, contracts, notes, instruments, named pipelines.

Toy passes on a small fx graph (and a toy crossbar IR) are registered for this module only; the
round-trip properties also cover every pass registered through entry points.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import tomllib
import types
import typing
from dataclasses import dataclass
from importlib.metadata import EntryPoint, distribution
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import torch
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from torch import fx, nn

from xbcompiler.diagnostics import CompileError
from xbcompiler.pipeline import (
    NAMED_PIPELINES,
    DumpIR,
    Instrument,
    NumericCheck,
    Pass,
    PassContext,
    PassManager,
    Timing,
    VerifyEach,
    format_pipeline,
    get_pass,
    instruments_from_names,
    load_failures,
    parse_pipeline,
    pass_options,
    register_pass,
    registered_passes,
    registry,
    resolve_pipeline,
    unregister_pass,
)
from xbcompiler.pipeline.instruments import compare_outputs
from xbcompiler.target import ENTRY_POINT_GROUP as TARGET_GROUP
from xbcompiler.target import load_target

ROOT = Path(__file__).resolve().parent.parent

# --- toy IR and passes ----------------------------------------------------------------------------

class Mode(enum.Enum):
    SLOW = "slow"
    FAST = "fast"


@dataclass(frozen=True)
class ToyProgram:
    """A stand-in crossbar program: the graph it came from and how many xbar passes touched it."""

    gm: fx.GraphModule
    steps: int = 0


def _log(ctx: PassContext, name: str) -> None:
    ctx.report.setdefault("ran", []).append(name)


@dataclass(frozen=True)
class ToyOptions(Pass):
    """Every supported option type; changes nothing."""

    count: int = 3
    """How many times."""
    ratio: float = 0.5
    """A ratio.

    Second paragraph."""
    enabled: bool = True
    label: str = "x"
    """A free-form label."""
    limit: int | None = None
    """An optional limit."""
    dims: tuple[int, ...] = (1, 2)
    """Dimensions."""
    mode: Literal["fast", "exact"] = "fast"
    """Which mode."""
    speed: Mode = Mode.FAST
    """An enum."""
    where: Path | None = None
    """A path."""

    name: ClassVar[str] = "toy-options"

    def run(self, ir, ctx):
        _log(ctx, self.name)
        return ir


@dataclass(frozen=True)
class ToyRequired(Pass):
    k: int
    """A required option."""
    pair: tuple[int, float] = (0, 0.0)
    """A fixed-length tuple."""
    either: int | str = 0
    """A union."""

    name: ClassVar[str] = "toy-required"

    def run(self, ir, ctx):
        _log(ctx, self.name)
        return ir


@dataclass(frozen=True)
class ToyScale(Pass):
    """Multiply the graph's output by ``factor`` (changes the numbers unless it is 1)."""

    factor: float = 1.0
    """The factor."""

    name: ClassVar[str] = "toy-scale"

    def run(self, gm: fx.GraphModule, ctx):
        _log(ctx, self.name)
        if self.factor == 1.0:
            return gm
        out = next(n for n in gm.graph.nodes if n.op == "output")
        with gm.graph.inserting_before(out):
            mul = gm.graph.call_function(operator.mul, (out.args[0], self.factor))
        out.args = (mul,)
        gm.recompile()
        return gm


@dataclass(frozen=True)
class ToyShapes(Pass):
    name: ClassVar[str] = "toy-shapes"
    establishes: ClassVar[frozenset[str]] = frozenset({"toy-shapes"})

    def run(self, ir, ctx):
        _log(ctx, self.name)
        return ir


@dataclass(frozen=True)
class ToyNeedsShapes(Pass):
    name: ClassVar[str] = "toy-needs-shapes"
    needs: ClassVar[frozenset[str]] = frozenset({"toy-shapes"})

    def run(self, ir, ctx):
        _log(ctx, self.name)
        return ir


@dataclass(frozen=True)
class ToyInvalidate(Pass):
    name: ClassVar[str] = "toy-invalidate"
    invalidates: ClassVar[frozenset[str]] = frozenset({"toy-shapes"})

    def run(self, ir, ctx):
        _log(ctx, self.name)
        return ir


@dataclass(frozen=True)
class ToyLower(Pass):
    name: ClassVar[str] = "toy-lower"
    stage: ClassVar[str] = "lower"
    establishes: ClassVar[frozenset[str]] = frozenset({"toy-lowered"})

    def run(self, gm, ctx):
        _log(ctx, self.name)
        return ToyProgram(gm)


@dataclass(frozen=True)
class ToyXbar(Pass):
    name: ClassVar[str] = "toy-xbar"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"toy-lowered"})

    def run(self, program: ToyProgram, ctx):
        _log(ctx, self.name)
        return dataclasses.replace(program, steps=program.steps + 1)


@dataclass(frozen=True)
class ToyBoom(Pass):
    message: str = "boom"
    """What the error says."""

    name: ClassVar[str] = "toy-boom"

    def run(self, ir, ctx):
        _log(ctx, self.name)
        exc = ValueError(self.message)
        ctx.report["raised"] = exc
        raise exc


@dataclass(frozen=True)
class ToyForgetsReturn(Pass):
    name: ClassVar[str] = "toy-forgets-return"

    def run(self, ir, ctx):
        _log(ctx, self.name)


TOYS = [ToyOptions, ToyRequired, ToyScale, ToyShapes, ToyNeedsShapes, ToyInvalidate, ToyLower, ToyXbar,
        ToyBoom, ToyForgetsReturn]
ALL_PASSES = sorted({*registered_passes(), *(t.name for t in TOYS)})


@pytest.fixture(scope="module", autouse=True)
def toy_passes():
    for cls in TOYS:
        register_pass(cls)
    yield
    for cls in TOYS:
        unregister_pass(cls.name)


class Net(nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2 + 1


def graph() -> fx.GraphModule:
    return fx.symbolic_trace(Net())


def run_ir(ir, inputs):
    return (ir.gm if isinstance(ir, ToyProgram) else ir)(*inputs)


def ran(ctx: PassContext) -> list[str]:
    return ctx.report.get("ran", [])


# --- option documentation ------------------------------------------------------------------------

def test_options_read_types_defaults_and_field_docs():
    opts = {o.name: o for o in pass_options(ToyOptions)}
    assert list(opts) == ["count", "ratio", "enabled", "label", "limit", "dims", "mode", "speed", "where"]
    assert opts["count"].kebab == "count" and opts["count"].type is int and opts["count"].default == 3
    assert opts["count"].doc == "How many times."
    assert opts["ratio"].doc == "A ratio.\n\nSecond paragraph."
    assert opts["enabled"].doc == ""
    assert opts["limit"].type == int | None
    assert opts["mode"].type == Literal["fast", "exact"]
    assert not opts["count"].required
    required = pass_options(ToyRequired)[0]
    assert required.required and required.name == "k"


@pytest.mark.parametrize("name", sorted(registered_passes()))
def test_every_registered_option_is_documented(name):
    cls = registered_passes()[name]
    assert [o.kebab for o in pass_options(cls) if not o.doc] == [], f"document every option of '{name}'"


# --- text form -----------------------------------------------------------------------------------

def test_parse_converts_values_by_field_type():
    text = """toy-options{count=-2, ratio=1e-3, enabled=false, label="a, b \\"c\\"",
                limit=none, dims=4:5, mode=exact, speed=SLOW, where=out/dumps},
              toy-scale{factor=2},
              toy-required{k=7, pair=1:2.5, either=abc},"""
    assert parse_pipeline(text) == [
        ToyOptions(count=-2, ratio=1e-3, enabled=False, label='a, b "c"', limit=None, dims=(4, 5),
                   mode="exact", speed=Mode.SLOW, where=Path("out/dumps")),
        ToyScale(factor=2.0),
        ToyRequired(k=7, pair=(1, 2.5), either="abc"),
    ]
    assert parse_pipeline("toy-options{dims=()}") == [ToyOptions(dims=())]
    assert parse_pipeline("toy-options{dims=7,limit=3}") == [ToyOptions(dims=(7,), limit=3)]
    assert parse_pipeline("toy-required{k=1,either=5}") == [ToyRequired(k=1, either=5)]
    assert parse_pipeline("  ") == []


def test_format_prints_only_non_defaults_in_field_order():
    assert format_pipeline([ToyOptions(), ToyScale()]) == "toy-options,toy-scale"
    assert format_pipeline([ToyOptions(mode="exact", count=4)]) == "toy-options{count=4,mode=exact}"
    assert format_pipeline([ToyOptions(label="two words", limit=None)]) == 'toy-options{label="two words"}'
    assert format_pipeline([ToyRequired(k=0)]) == "toy-required{k=0}"
    assert str(ToyScale(factor=0.5)) == "toy-scale{factor=0.5}"


@pytest.mark.parametrize(("text", "column"), [
    ("toy-scale{factor=1", 19),
    ("toy-scale,,toy-scale", 11),
    ("toy-scale{=1}", 11),
    ('toy-options{label="open}', 19),
    ("toy-options{count=1,count=2}", 21),
    ("toy-scale toy-scale", 11),
    ("{factor=1}", 1),
    ("toy-scale{factor 1}", 18),
    ("toy-scale{factor=}", 18),
])
def test_syntax_errors_are_xb602_with_the_column(text, column):
    with pytest.raises(CompileError) as err:
        parse_pipeline(text)
    assert err.value.code == "XB602"
    assert f"column {column}:" in err.value.message
    assert err.value.details[1] == " " * (column - 1) + "^"


def test_syntax_errors_in_multiline_text_give_the_line():
    with pytest.raises(CompileError) as err:
        parse_pipeline("toy-scale,\n  toy-options{count=1 label=x}")
    assert err.value.code == "XB602" and "line 2, column 23" in err.value.message


def test_unknown_pass_suggests_the_nearest_name():
    with pytest.raises(CompileError) as err:
        parse_pipeline("toy-options,toy-scael")
    assert err.value.code == "XB601"
    assert "toy-scale" in err.value.hint
    with pytest.raises(CompileError) as err:
        get_pass("zzzz")
    assert err.value.code == "XB601" and err.value.hint is None


@pytest.mark.parametrize(("text", "hint"), [
    ("toy-options{cout=1}", "did you mean 'count'?"),
    ("toy-options{dims=1,zzz=1}", None),
    ("toy-options{label_x=1}", "did you mean 'label'?"),
    ("toy-options{enabled=true, limit_=3}", "did you mean 'limit'?"),
])
def test_unknown_option_is_xb604_listing_valid_ones(text, hint):
    with pytest.raises(CompileError) as err:
        parse_pipeline(text)
    assert err.value.code == "XB604" and "toy-options' has no option" in err.value.message
    assert err.value.hint == hint
    assert "count: int, default 3; How many times." in err.value.details
    assert "limit: int | None, default none; An optional limit." in err.value.details
    assert "enabled: bool, default true" in err.value.details
    assert "dims: tuple[int, ...], default 1:2; Dimensions." in err.value.details
    assert "where: Path | None, default none; A path." in err.value.details
    assert "mode: Literal['fast', 'exact'], default fast; Which mode." in err.value.details


def test_option_errors_point_at_the_column():
    with pytest.raises(CompileError) as err:
        parse_pipeline("toy-scale,toy-options{count=1,cuont=2}")
    assert "has no option 'cuont' at column 31" in err.value.message
    with pytest.raises(CompileError) as err:
        parse_pipeline("toy-scale{factor=x}")
    assert "option 'factor' of pass 'toy-scale' at column 18: expected float, got 'x'" in err.value.message
    with pytest.raises(CompileError) as err:
        parse_pipeline("toy-options{label_x=1}")
    assert ToyOptions.name in err.value.message


@pytest.mark.parametrize("text", [
    "toy-options{count=abc}", "toy-options{count=1.5}", "toy-options{enabled=yes}",
    "toy-options{mode=slow}", "toy-options{speed=fast}", "toy-options{dims=1:x}", "toy-options{limit=x}",
    "toy-required{k=1,pair=1:2:3}", "toy-required", "toy-scale{factor=none}",
])
def test_ill_typed_or_missing_option_is_xb604(text):
    with pytest.raises(CompileError) as err:
        parse_pipeline(text)
    assert err.value.code == "XB604"
    assert err.value.details


def test_a_pass_rejecting_its_options_is_xb604():
    @dataclass(frozen=True)
    class Picky(Pass):
        n: int = 1
        """Must be positive."""

        name: ClassVar[str] = "toy-picky"

        def __post_init__(self):
            if self.n <= 0:
                raise ValueError("n must be positive")

    register_pass(Picky)
    try:
        with pytest.raises(CompileError) as err:
            parse_pipeline("toy-picky{n=0}")
        assert err.value.code == "XB604" and "n must be positive" in err.value.message
    finally:
        unregister_pass("toy-picky")


# --- round trip over every registered pass ---------------------------------------------------------

def strategy_for(tp) -> st.SearchStrategy:
    """Values of an option type; fails on a type the pipeline text does not support."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*map(strategy_for, args))
    if origin is Literal:
        return st.sampled_from(args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
        return st.tuples(*map(strategy_for, args))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(tp)
    table = {
        type(None): st.none(),
        bool: st.booleans(),
        int: st.integers(),
        float: st.floats(allow_nan=False),
        str: st.text(),
        Path: st.from_regex(r"[A-Za-z0-9_. /-]{0,12}", fullmatch=True).map(Path),
    }
    if tp not in table:
        raise TypeError(f"option type {tp!r} is not supported in pipeline text")
    return table[tp]


def draw_pass(data, cls) -> Pass:
    kwargs = {}
    for o in pass_options(cls):
        values = strategy_for(o.type)
        kwargs[o.name] = data.draw(values if o.required else st.one_of(st.just(o.default), values), o.kebab)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, CompileError):
        reject()


@pytest.mark.parametrize("name", ALL_PASSES)
def test_round_trip_with_default_options(name):
    cls = registered_passes()[name]
    required = {o.name: o for o in pass_options(cls) if o.required}
    if required:
        with pytest.raises(CompileError, match="XB604"):
            parse_pipeline(name)
        return
    assert format_pipeline([cls()]) == name
    assert parse_pipeline(format_pipeline([cls()])) == [cls()]


@pytest.mark.parametrize("name", ALL_PASSES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip_with_any_options(name, data):
    p = draw_pass(data, registered_passes()[name])
    assert parse_pipeline(format_pipeline([p])) == [p]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_round_trip_of_whole_pipelines(data):
    names = data.draw(st.lists(st.sampled_from(ALL_PASSES), max_size=6))
    pipeline = [draw_pass(data, registered_passes()[n]) for n in names]
    text = format_pipeline(pipeline)
    assert parse_pipeline(text) == pipeline
    if '"' not in text:  # whitespace between items; a quoted option value may itself hold commas
        assert parse_pipeline(text.replace(",", " ,\n  ")) == pipeline


# --- registry ------------------------------------------------------------------------------------

def test_register_pass_checks_the_class():
    @dataclass
    class NotFrozen(Pass):
        name: ClassVar[str] = "toy-not-frozen"

    @dataclass(frozen=True)
    class BadName(Pass):
        name: ClassVar[str] = "Bad_Name"

    @dataclass(frozen=True)
    class BadStage(Pass):
        name: ClassVar[str] = "toy-bad-stage"
        stage: ClassVar[str] = "tensor"

    for cls in (NotFrozen, BadName, BadStage, int):
        with pytest.raises(TypeError):
            register_pass(cls)
    assert register_pass(ToyScale) is ToyScale


def _our_entry_points(group: str) -> dict[str, str]:
    """This distribution's installed entry points of ``group``: name -> ``module:object``."""
    return {ep.name: ep.value for ep in distribution("xbcompiler").entry_points if ep.group == group}


def test_built_in_entry_points_load_and_a_broken_one_is_reported(monkeypatch):
    """Every pass and target this distribution declares loads; a broken entry point beside them is reported.

    The round trips above skip passes that failed to load, so a built-in pass with an import error
    would otherwise go untested without anything failing.
    """
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    for group in (registry.GROUP, TARGET_GROUP):
        assert _our_entry_points(group) == declared[group], \
            f"the installed '{group}' entry points differ from pyproject.toml: reinstall with pip install -e ."
    builtin = set(_our_entry_points(registry.GROUP))
    failed = {name: why for name, why in load_failures().items() if name in builtin}
    assert not failed, "built-in passes failed to load:\n" + "\n".join(failed.values())
    assert builtin <= set(registered_passes())
    for name, value in _our_entry_points(TARGET_GROUP).items():
        found = EntryPoint(name, value, TARGET_GROUP).load()()
        assert found and all(Path(p).is_file() for p in found.values()), f"target entry point '{name}': {found}"
        for target in found:
            load_target(target)

    broken = EntryPoint("toy-broken", "no_such_module_xb:Pass", registry.GROUP)
    real = registry.entry_points
    monkeypatch.setattr(registry, "entry_points", lambda group: [*real(group=group), broken])
    registry._entry_points.cache_clear()
    try:
        assert set(load_failures()) & (builtin | {"toy-broken"}) == {"toy-broken"}
        assert "No module named 'no_such_module_xb'" in load_failures()["toy-broken"]
        assert builtin <= set(registered_passes())
    finally:
        monkeypatch.undo()
        registry._entry_points.cache_clear()


def test_broken_entry_points_are_skipped_and_reported(monkeypatch):
    eps = [EntryPoint("toy-missing", "no_such_module_xb:Pass", registry.GROUP),
           EntryPoint("toy-not-a-pass", "builtins:int", registry.GROUP),
           EntryPoint("toy-misnamed", f"{__name__}:ToyScale", registry.GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    registry._entry_points.cache_clear()
    try:
        passes = registered_passes()
        assert "toy-missing" not in passes and "toy-not-a-pass" not in passes and "toy-misnamed" not in passes
        assert set(load_failures()) == {"toy-missing", "toy-not-a-pass", "toy-misnamed"}
        assert "No module named" in load_failures()["toy-missing"]
        with pytest.raises(CompileError) as err:
            get_pass("toy-missing")
        assert err.value.code == "XB601" and "no_such_module_xb" in err.value.details[0]
    finally:
        monkeypatch.undo()
        registry._entry_points.cache_clear()


# --- contracts and stages ------------------------------------------------------------------------

def test_missing_property_is_refused_before_any_pass_runs():
    ctx = PassContext()
    manager = PassManager([ToyScale(), ToyNeedsShapes(), ToyShapes()])
    with pytest.raises(CompileError) as err:
        manager.run(graph(), ctx)
    assert err.value.code == "XB603"
    assert "'toy-needs-shapes' (step 2 of 3)" in err.value.message and "'toy-shapes'" in err.value.message
    assert "'toy-shapes' (step 3): move it earlier" in err.value.details[0]
    assert ran(ctx) == []


def test_invalidated_property_names_the_invalidating_pass():
    manager = PassManager("toy-shapes,toy-invalidate,toy-needs-shapes")
    with pytest.raises(CompileError) as err:
        manager.check(set())
    assert err.value.code == "XB603"
    assert "invalidated by step 2 ('toy-invalidate')" in err.value.details[0]
    assert "'toy-shapes'" in err.value.details[0]


def test_initial_properties_satisfy_needs():
    ctx = PassContext(properties={"toy-shapes"})
    PassManager([ToyNeedsShapes(), ToyInvalidate()]).run(graph(), ctx)
    assert ran(ctx) == ["toy-needs-shapes", "toy-invalidate"]
    assert ctx.properties == set()
    assert PassManager([ToyShapes()]).check(set()) == {"toy-shapes"}


@pytest.mark.parametrize(("pipeline", "message"), [
    ([ToyXbar()], "'toy-xbar' (step 1 of 1) is a xbar pass and needs xbar IR, but the IR is graph"),
    ([ToyLower(), ToyScale()], "'toy-scale' (step 2 of 2) is a graph pass and needs graph IR"),
    ([ToyLower(), ToyLower()], "'toy-lower' (step 2 of 2) is a lower pass and needs graph IR"),
])
def test_wrong_stage_order_is_refused(pipeline, message):
    ctx = PassContext()
    with pytest.raises(CompileError) as err:
        PassManager(pipeline).run(graph(), ctx)
    assert err.value.code == "XB603" and message in err.value.message
    assert ran(ctx) == []


def test_stages_flow_graph_lower_xbar():
    ctx = PassContext()
    out = PassManager([ToyScale(), ToyLower(), ToyXbar(), ToyXbar()]).run(graph(), ctx)
    assert isinstance(out, ToyProgram) and out.steps == 2
    assert ctx.properties == {"toy-lowered"}
    out = PassManager([ToyXbar()]).run(out, PassContext(properties={"toy-lowered"}), stage="xbar")
    assert out.steps == 3


# --- errors inside passes ------------------------------------------------------------------------

def test_exception_keeps_its_type_and_gains_notes():
    ctx = PassContext(repro="xbc compile m.py:make --pipeline '{pipeline}' -o out")
    manager = PassManager("toy-scale{factor=2},toy-boom{message=bang},toy-scale")
    with pytest.raises(ValueError, match="bang") as err:
        manager.run(graph(), ctx)
    assert err.value is ctx.report["raised"]
    assert err.value.__notes__ == [
        "in pass 'toy-boom' (step 2 of 3 of pipeline 'toy-scale{factor=2.0},toy-boom{message=bang},toy-scale')",
        "reproduce: xbc compile m.py:make --pipeline 'toy-scale{factor=2.0},toy-boom{message=bang}' -o out",
    ]
    assert ran(ctx) == ["toy-scale", "toy-boom"]


def test_compile_error_inside_a_pass_keeps_its_code_and_no_repro_without_template():
    @dataclass(frozen=True)
    class Coded(Pass):
        name: ClassVar[str] = "toy-coded"

        def run(self, ir, ctx):
            raise CompileError("XB202", "annotation missing")

    with pytest.raises(CompileError) as err:
        PassManager([Coded()]).run(graph(), PassContext())
    assert err.value.code == "XB202"
    assert err.value.__notes__ == ["in pass 'toy-coded' (step 1 of 1 of pipeline 'toy-coded')"]


def test_a_pass_returning_none_is_a_type_error_with_notes():
    with pytest.raises(TypeError, match="returned None") as err:
        PassManager([ToyForgetsReturn()]).run(graph(), PassContext())
    assert "toy-forgets-return" in err.value.__notes__[0]


# --- instruments ---------------------------------------------------------------------------------

def test_verify_each_runs_after_every_pass():
    seen = []
    ctx = PassContext(verify_ir=seen.append)
    PassManager([ToyScale(), ToyShapes(), ToyLower(), ToyXbar()], [VerifyEach()]).run(graph(), ctx)
    assert len(seen) == 4 and isinstance(seen[-1], ToyProgram)


@dataclass(frozen=True)
class ToyBreaksGraph(Pass):
    """Make the output use a node of another graph: the graph still runs, ``Graph.lint`` refuses it."""

    name: ClassVar[str] = "toy-breaks-graph"

    def run(self, gm: fx.GraphModule, ctx):
        _log(ctx, self.name)
        out = next(n for n in gm.graph.nodes if n.op == "output")
        out.args = (fx.Graph().placeholder("stray"),)
        return gm


def test_verify_each_catches_a_broken_ir_with_the_default_verifier():
    ctx = PassContext()  # verify_ir left at its default: the built-in verifier
    with pytest.raises(RuntimeError, match="stray") as err:
        PassManager([ToyScale(), ToyBreaksGraph(), ToyScale()], [VerifyEach()]).run(graph(), ctx)
    assert err.value.__notes__[0].startswith("in pass 'toy-breaks-graph' (step 2 of 3")
    assert ran(ctx) == ["toy-scale", "toy-breaks-graph"]
    # the same pipeline without the instrument passes the broken graph on
    PassManager([ToyBreaksGraph()]).run(graph(), PassContext())


def test_verify_each_refuses_a_context_that_switched_verification_off():
    ctx = PassContext(verify_ir=None)
    with pytest.raises(CompileError) as err:
        PassManager([ToyScale()], [VerifyEach()]).run(graph(), ctx)
    assert err.value.code == "XB606" and "verify_ir=None" in err.value.message
    assert ran(ctx) == []  # refused before the first pass
    PassManager([ToyScale()]).run(graph(), PassContext(verify_ir=None))  # no verify-each: nothing to refuse


def test_the_built_in_verifier_refuses_an_ir_it_cannot_read():
    with pytest.raises(CompileError) as err:
        PassManager([ToyLower()], [VerifyEach()]).run(graph(), PassContext())
    assert err.value.code == "XB606" and "ToyProgram" in err.value.message


def test_the_default_verifier_checks_against_the_contexts_current_target():
    ctx = PassContext(target="a")
    other = dataclasses.replace(ctx, target="b")
    assert ctx.verify_ir == ctx.verify_against_target and other.verify_ir == other.verify_against_target
    own = PassContext(verify_ir=print)
    assert own.verify_ir is print and dataclasses.replace(own).verify_ir is print


def test_numeric_check_catches_a_pass_that_changes_the_numbers():
    x = torch.randn(2, 5)
    ctx = PassContext(check_inputs=(x,), run_ir=run_ir, repro="xbc --pipeline '{pipeline}'")
    with pytest.raises(CompileError) as err:
        PassManager("toy-scale,toy-scale{factor=1.5}", [NumericCheck()]).run(graph(), ctx)
    assert err.value.code == "XB201" and "'toy-scale'" in err.value.message
    assert "relative error 0.5 " in err.value.details[0]
    assert "step 2 of 2" in err.value.__notes__[0]
    assert err.value.__notes__[1] == "reproduce: xbc --pipeline 'toy-scale,toy-scale{factor=1.5}'"


def test_numeric_check_passes_faithful_passes_across_stages_and_skips_without_inputs():
    calls = []

    def counting(ir, inputs):
        calls.append(ir)
        return run_ir(ir, inputs)

    ctx = PassContext(check_inputs=(torch.randn(3, 4),), run_ir=counting)
    pipeline = [ToyScale(), ToyShapes(), ToyLower(), ToyXbar()]
    PassManager(pipeline, [NumericCheck()]).run(graph(), ctx)
    assert len(calls) == len(pipeline) + 1  # outputs of an unchanged IR are reused
    PassManager([ToyScale(factor=3.0)], [NumericCheck()]).run(graph(), PassContext(run_ir=counting))
    PassManager([ToyScale(factor=3.0)], [NumericCheck()]).run(
        graph(), PassContext(check_inputs=(torch.ones(1),), run_ir=lambda ir, inputs: None))


def test_numeric_check_tolerance_is_relative_to_the_largest_output():
    PassManager([ToyScale(factor=1.001)], [NumericCheck(rtol=1e-2)]).run(
        graph(), PassContext(check_inputs=(torch.randn(4),), run_ir=run_ir))


def test_compare_outputs_walks_nested_structures():
    a = {"x": (torch.ones(2), [torch.zeros(3), 4]), "y": torch.tensor([float("nan"), 1.0])}
    assert compare_outputs(a, a, 1e-4, 1e-5) == []
    b = {"x": (torch.ones(2) * 2, [torch.zeros(3), 4]), "y": torch.tensor([float("nan"), 1.0])}
    assert compare_outputs(a, b, 1e-4, 1e-5) == [
        "out['x'][0]: relative error 1 (max |a-b| = 1, max |a| = 1)"]
    assert "shape (2,) -> (3,)" in compare_outputs(torch.ones(2), torch.ones(3), 1e-4, 1e-5)[0]
    assert "structure" in compare_outputs((torch.ones(1),), (torch.ones(1), 1), 1e-4, 1e-5)[0]
    assert compare_outputs(torch.tensor([1.0]), torch.tensor([float("nan")]), 1e-4, 1e-5)
    assert compare_outputs(None, "x", 1e-4, 1e-5) == ["out: None -> 'x'"]
    assert compare_outputs(torch.ones(1), None, 1e-4, 1e-5) == ["out: tensor([1.]) -> None"]
    assert compare_outputs(("a", 2), ("a", 2.0), 1e-4, 1e-5) == []


def test_dump_ir_writes_before_and_after_files(tmp_path):
    ctx = PassContext(print_ir=lambda ir: type(ir).__name__, dump_dir=tmp_path / "ctx")
    PassManager([ToyScale(factor=2.0), ToyLower()], [DumpIR(tmp_path / "own")]).run(graph(), ctx)
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == [
        "01-toy-scale-after.txt", "01-toy-scale-before.txt", "02-toy-lower-after.txt", "02-toy-lower-before.txt"]
    assert (tmp_path / "own" / "02-toy-lower-after.txt").read_text() == "ToyProgram"
    PassManager([ToyScale()], [DumpIR()]).run(graph(), ctx)
    assert (tmp_path / "ctx" / "01-toy-scale-before.txt").exists()
    with pytest.raises(CompileError, match="XB003"):
        PassManager([ToyScale()], [DumpIR()]).run(graph(), PassContext())


def test_timing_records_every_pass():
    ctx = PassContext()
    PassManager([ToyScale(), ToyShapes(), ToyScale()], [Timing()]).run(graph(), ctx)
    assert set(ctx.timings) == {"toy-scale", "toy-shapes"}
    assert all(t >= 0 for t in ctx.timings.values())


def test_instruments_nest_before_in_order_after_reversed():
    events = []

    @dataclass
    class Rec(Instrument):
        tag: str

        def before(self, pass_, ir, ctx, index):
            events.append(f"{self.tag}.before{index}")

        def after(self, pass_, ir, ctx, index):
            events.append(f"{self.tag}.after{index}")

    PassManager([ToyScale()], [Rec("a"), Rec("b")]).run(graph(), PassContext())
    assert events == ["a.before0", "b.before0", "b.after0", "a.after0"]


def test_instruments_from_names():
    made = instruments_from_names("verify-each, numeric-check{rtol=1e-3}, dump-ir{dir=out/d}, timing")
    assert made == [VerifyEach(), NumericCheck(rtol=1e-3), DumpIR(Path("out/d")), Timing()]
    assert instruments_from_names("") == []
    with pytest.raises(CompileError) as err:
        instruments_from_names("verify-eech")
    assert err.value.code == "XB003" and "verify-each" in err.value.hint
    with pytest.raises(CompileError, match="XB604"):
        instruments_from_names("numeric-check{rtl=1}")


# --- named pipelines -----------------------------------------------------------------------------

def test_named_pipelines_resolve_and_hold_their_contracts():
    assert NAMED_PIPELINES["default"] == [s.replace("map-semi-folded", "map-budgeted") for s in NAMED_PIPELINES["semi-folded"]]
    for name, steps in NAMED_PIPELINES.items():
        passes = resolve_pipeline(name)
        assert [p.name for p in passes] == [s.split("{")[0] for s in steps]
        PassManager(name).check({"traced"})


def test_resolve_pipeline_accepts_text_lists_and_single_passes():
    assert resolve_pipeline("toy-scale") == [ToyScale()]
    assert resolve_pipeline(" toy-scale{factor=2},toy-shapes ") == [ToyScale(2.0), ToyShapes()]
    assert resolve_pipeline((ToyScale(), ToyShapes())) == [ToyScale(), ToyShapes()]
    with pytest.raises(TypeError):
        resolve_pipeline([ToyScale(), "toy-shapes"])


def test_unknown_pipeline_name_is_xb605_with_suggestions():
    with pytest.raises(CompileError) as err:
        resolve_pipeline("fully-foldd")
    assert err.value.code == "XB605" and "'fully-folded'" in err.value.hint
    with pytest.raises(CompileError, match="XB601"):
        resolve_pipeline("toy-scale,fully-foldd")


# --- with the real driver and built-in passes ----------------------------------------------------

def test_instruments_run_under_the_real_driver(tmp_path):
    import xbcompiler

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5))
    instruments = instruments_from_names(f'verify-each,numeric-check,dump-ir{{dir="{tmp_path}"}},timing')
    result = xbcompiler.compile(model.eval(), (torch.randn(2, 3, 8, 8),), "tiny", instruments=instruments)
    steps = [step.split("{")[0] for step in NAMED_PIPELINES["default"]]
    assert set(result.timings) == set(steps)
    assert len(list(tmp_path.iterdir())) == 2 * len(steps)
    assert (tmp_path / f"{len(steps):02d}-{steps[-1]}-after.txt").read_text()
