"""Fuzzed equivalence (issue 14): random valid models on random valid targets, through every named
pipeline, verified by the emulator: ideal mode within 1e-5 relative, integer mode bit-exact against
the integer reference (lossless ADCs).

The CI profile runs ``XB_FUZZ_EXAMPLES`` models (default 200); a long profile by hand:
``XB_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz_equivalence.py``. A failure shrinks to a
minimal model (hypothesis) and is saved as ``tests/data/fuzz_regressions/<kind>-<digest>.json`` (each
failing example replaces the one saved before it in the same run, so what is left is the minimal one);
:func:`test_saved_regressions` re-runs every saved case, so a fixed bug stays fixed once the file is
committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import xbcompiler as xb

EXAMPLES = int(os.environ.get("XB_FUZZ_EXAMPLES", "200"))
REGRESSIONS = Path(__file__).parent / "data" / "fuzz_regressions"
PIPELINES = ("default", "fully-folded", "semi-folded", "fully-unfolded")


ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity, "gelu": nn.GELU}


@dataclass(frozen=True)
class Arch:
    """A drawn architecture: an input ``[cin, size, size]``, a list of blocks, a linear head."""

    cin: int
    size: int
    blocks: tuple[tuple, ...]
    head: int
    seed: int


class Net(nn.Module):
    """Blocks: ``("conv", cout, k, stride, padding, dilation, groups, bias, act)``, ``("res", act)`` (a
    3x3 same-shape conv added back), ``("cat", c1)`` (a 1x1 branch concatenated), ``("pool", kind)``."""

    def __init__(self, arch: Arch):
        super().__init__()
        torch.manual_seed(arch.seed)
        self.blocks = nn.ModuleList()
        self.kinds = []
        c = arch.cin
        for block in arch.blocks:
            kind = block[0]
            if kind == "conv":
                _, cout, k, stride, padding, dilation, groups, bias, act = block
                m = nn.Sequential(nn.Conv2d(c, cout, k, stride, padding, dilation, groups, bias=bias),
                                  nn.BatchNorm2d(cout), ACTS[act]())
                with torch.no_grad():  # BatchNorm statistics that are not the identity
                    m[1].running_mean.uniform_(-0.2, 0.2)
                    m[1].running_var.uniform_(0.5, 1.5)
                c = cout
            elif kind == "res":
                m = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), ACTS[block[1]]())
            elif kind == "cat":
                m = nn.Conv2d(c, block[1], 1)
                c += block[1]
            else:
                m = nn.MaxPool2d(2) if block[1] == "max" else nn.AvgPool2d(2)
            self.blocks.append(m)
            self.kinds.append(kind)
        self.head = nn.Linear(c, arch.head)

    def forward(self, x):
        for kind, m in zip(self.kinds, self.blocks):
            if kind == "res":
                x = x + m(x)
            elif kind == "cat":
                x = torch.cat([x, m(x)], dim=1)
            else:
                x = m(x)
        return self.head(x.mean(dim=(2, 3)))


@st.composite
def architectures(draw) -> Arch:
    cin = draw(st.integers(1, 4))
    size = draw(st.integers(4, 10))
    c, h, blocks = cin, size, []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "res", "cat", "pool"]))
        if kind == "conv":
            k, dilation, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
            padding = draw(st.integers(0, dilation * (k - 1)))
            span = dilation * (k - 1) + 1
            if h + 2 * padding < span:
                continue
            groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
            cout = groups * draw(st.integers(1, 3))
            blocks.append(("conv", cout, k, stride, padding, dilation, groups, draw(st.booleans()),
                           draw(st.sampled_from(sorted(ACTS)))))
            c, h = cout, (h + 2 * padding - span) // stride + 1
        elif kind == "res":
            blocks.append(("res", draw(st.sampled_from(sorted(ACTS)))))
        elif kind == "cat":
            extra = draw(st.integers(1, 3))
            blocks.append(("cat", extra))
            c += extra
        elif h >= 2:
            blocks.append(("pool", draw(st.sampled_from(["max", "avg"]))))
            h //= 2
    return Arch(cin, size, tuple(blocks), draw(st.integers(1, 5)), draw(st.integers(0, 2**16)))


@st.composite
def targets(draw) -> dict:
    """Overrides of ``tiny`` that make a valid target (lossless ADCs so integer mode is exact)."""
    rows = draw(st.sampled_from([8, 16, 32, 64]))
    cell_bits = draw(st.sampled_from([1, 2]))
    return {"crossbar.rows": rows, "crossbar.cols": draw(st.sampled_from([8, 16, 32])),
            "crossbar.cell_bits": cell_bits, "precision.weight_bits": draw(st.integers(4, 8)),
            "precision.input_bits": draw(st.integers(4, 8)), "adc.mode": "lossless",
            "encoding.signed": draw(st.sampled_from(["differential", "offset", "differential-zero-high"])),
            "encoding.flip_columns": False}


def compile_quietly(model, x, overrides, pipeline, calibration=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xb.compile(model, (x,), "tiny", pipeline, overrides=overrides, calibration=calibration)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True, print_blob=True)
@given(arch=architectures(), overrides=targets(), pipeline=st.sampled_from(PIPELINES),
       integer=st.booleans())
def test_random_models_on_random_targets_verify(arch, overrides, pipeline, integer):
    check_case(Case("dense", arch, overrides, pipeline, integer))

PRUNE_STRATEGIES = {"semi-folded": ("column", "crossbar"), "fully-unfolded": ("column", "crossbar"),
                    "fully-folded": ("kernel", "tile")}


def prune_to_groups(model: nn.Module, x, target, strategy: str, grain: str, sparsity: float, seed: int) -> None:
    """Zero random ``grain`` groups of every prunable layer in place (the groups of the target's plan)."""
    from xbcompiler.prune.plan_groups import plan_groups

    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for g in plan_groups(model, (x,), target, pipeline=strategy, grain=grain):
            gs = g.group_set
            keep = gs.project(torch.rand(gs.n_groups, generator=gen), gs.n_keep(sparsity))
            params[g.param].mul_(gs.mask(keep))


def pruned_pipeline(strategy: str, reorder: bool, seed: int) -> str:
    """The strategy's pruned pipeline, with ``reorder-input-channels`` after BatchNorm folding if asked."""
    from xbcompiler.pipeline.named import NAMED_PIPELINES
    from xbcompiler.prune.flow import PRUNED_PIPELINES

    steps = list(NAMED_PIPELINES[PRUNED_PIPELINES[strategy]])
    if reorder:
        steps.insert(1, f"reorder-input-channels{{strategy={strategy},solver=heuristic,seed={seed},time-limit-s=1}}")
    return ",".join(steps)


@settings(max_examples=max(1, EXAMPLES // 4), deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True, print_blob=True)
@given(arch=architectures(), overrides=targets(), strategy=st.sampled_from(sorted(PRUNE_STRATEGIES)),
       coarse=st.booleans(), sparsity=st.sampled_from([0.3, 0.5, 0.8]), reorder=st.booleans(),
       integer=st.booleans())
def test_pruned_reordered_recombined_models_verify(arch, overrides, strategy, coarse, sparsity, reorder, integer):
    """Random group pruning of the target's plan, then input-channel reordering and the strategy's
    pruned pipeline (column recombination, or row compaction when fully-folded)."""
    check_case(Case("pruned", arch, overrides, strategy, integer,
                    Pruning(PRUNE_STRATEGIES[strategy][coarse], sparsity, reorder)))


@dataclass(frozen=True)
class Pruning:
    """How a pruned case prunes: the grain of the plan's groups, the sparsity, whether to reorder first."""

    grain: str
    sparsity: float
    reorder: bool


@dataclass(frozen=True)
class Case:
    """One fuzzed case: dense (``pipeline`` is a named pipeline) or pruned (``pipeline`` is the strategy)."""

    kind: str
    arch: Arch
    overrides: dict
    pipeline: str
    integer: bool
    pruning: Pruning | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Case:
        d = json.loads(text)
        blocks = tuple(tuple(b) for b in d["arch"]["blocks"])
        pruning = Pruning(**d["pruning"]) if d["pruning"] else None
        return cls(d["kind"], Arch(**{**d["arch"], "blocks": blocks}), d["overrides"], d["pipeline"], d["integer"],
                   pruning)


def check_case(case: Case) -> None:
    """Compile and verify ``case``; on a failure save it (the last one saved is hypothesis' minimal one)."""
    try:
        target = xb.load_target("tiny", case.overrides)
    except xb.CompileError as exc:  # a combination the target refuses (e.g. a weight wider than the crossbar)
        assume(exc.code != "XB404")
        raise
    try:
        run_case(case, target)
    except Exception:
        save_failure(case)
        raise


def run_case(case: Case, target) -> None:
    model = Net(case.arch).eval()
    gen = torch.Generator().manual_seed(case.arch.seed)
    x = torch.randn(2, case.arch.cin, case.arch.size, case.arch.size, generator=gen)
    pipeline = case.pipeline
    if case.pruning is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prune_to_groups(model, x[:1], target, case.pipeline, case.pruning.grain, case.pruning.sparsity,
                            case.arch.seed)
        pipeline = pruned_pipeline(case.pipeline, case.pruning.reorder, case.arch.seed)
    calibration = torch.randn(8, case.arch.cin, case.arch.size, case.arch.size, generator=gen) if case.integer else None
    compiled = compile_quietly(model, x[:1], case.overrides, pipeline, calibration)
    report = xb.verify(compiled.netlist, model, x, mode="integer" if case.integer else "ideal", tolerance=1e-5)
    # integer mode: bit-exact against the reference; the end-to-end float error of random networks at 4
    # bits is large by nature (verify's float check), not a compiler bug
    assert report.exact, (case, report.first_mismatch, report.max_rel)


_last_saved: dict[str, Path] = {}


def save_failure(case: Case) -> Path:
    """Write ``case`` to ``REGRESSIONS/<kind>-<digest>.json``, replacing this run's previous save of its kind."""
    REGRESSIONS.mkdir(parents=True, exist_ok=True)
    path = REGRESSIONS / f"{case.kind}-{digest(case)}.json"
    path.write_text(case.to_json() + "\n")
    previous = _last_saved.get(case.kind)
    if previous is not None and previous != path:
        previous.unlink(missing_ok=True)
    _last_saved[case.kind] = path
    return path


def saved_cases() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.json"))


def digest(case: Case) -> str:
    return hashlib.sha256(case.to_json().encode()).hexdigest()[:12]


def test_saved_regressions():
    """Every minimal failing case the fuzz ever saved (committed under tests/data/fuzz_regressions/) still
    compiles and verifies."""
    for path in saved_cases():
        case = Case.from_json(path.read_text())
        run_case(case, xb.load_target("tiny", case.overrides))


def test_a_failing_case_is_saved_and_replays(tmp_path, monkeypatch):
    """check_case saves a failing case; a later (shrunk) failure replaces it; the file reads back equal."""
    module = __import__(__name__, fromlist=["_"])
    monkeypatch.setattr(module, "REGRESSIONS", tmp_path)
    monkeypatch.setattr(module, "_last_saved", {})

    def mismatch(case, target):
        raise AssertionError("mismatch")

    monkeypatch.setattr(module, "run_case", mismatch)
    big = Case("pruned", Arch(2, 6, (("conv", 4, 3, 1, 1, 1, 2, True, "relu"), ("pool", "max")), 3, 7),
               {"crossbar.rows": 16}, "semi-folded", True, Pruning("column", 0.5, True))
    small = dataclasses.replace(big, arch=Arch(1, 4, (), 1, 0), pruning=Pruning("column", 0.3, False))
    for case in (big, small):
        with pytest.raises(AssertionError):
            check_case(case)
    saved = list(tmp_path.glob("*.json"))
    assert [p.name for p in saved] == [f"pruned-{digest(small)}.json"]
    assert Case.from_json(saved[0].read_text()) == small
