"""The shared harness of the tests in tests/passes: one pass run alone through the PassManager.

``run_program``/``run_ir`` execute an IR (a traced graph or a crossbar program) so the numeric-check
instrument can compare them; ``make_context`` builds the context the driver would, ``run_passes`` runs
passes with verify-each (and numeric-check) on, ``before_pass`` gives the IR right before a pass of the
``fully-folded`` pipeline, and ``golden_text``/``check_golden`` make and compare the golden dumps.

Golden files: tests/passes/golden/<model>-<pass>.txt hold our own printer's dump (print_ir) of the IR
before and after the pass, the earlier passes of the ``fully-folded`` pipeline applied first. After an
intended change, regenerate them and review the diff:

    XB_UPDATE_GOLDEN=1 python -m pytest tests/passes

A failure case ends in "--- error" and the diagnostic code instead of the "--- after" dump.

Test modules import what they use as ``from tests.passes.harness import ...`` (the repository root
on ``sys.path``, as tests/conftest.py and each test module arrange). It is a plain module, not a
conftest, and its name does not match ``test_*.py``, so pytest collects nothing from it.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import fx, nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # so that ``tests.models`` and ``passes`` import however this is loaded
    sys.path.insert(0, str(ROOT))

from tests.models import MODELS
from xbcompiler.diagnostics import CompileError, XBWarning
from xbcompiler.frontend.trace import trace
from xbcompiler.ir.interpret import run_program
from xbcompiler.ir.printer import print_ir
from xbcompiler.pipeline import (
    NumericCheck,
    Pass,
    PassContext,
    PassManager,
    VerifyEach,
    format_pipeline,
    resolve_pipeline,
)
from xbcompiler.target import load_target

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("XB_UPDATE_GOLDEN") == "1"


def run_ir(ir, inputs: tuple):
    with torch.no_grad():
        return ir(*inputs) if isinstance(ir, fx.GraphModule) else run_program(ir, inputs)


def make_context(inputs: tuple, target="tiny", **changes) -> PassContext:
    """The context the driver builds, for running passes alone: run and print hooks, and ``verify_ir`` left
    at its default (the built-in verifier: fx lint, ``XbarProgram.verify`` against the target)."""
    tgt = load_target(target) if isinstance(target, str) else target
    fields = {"target": tgt, "example_inputs": inputs, "check_inputs": tuple(t[:1].clone() for t in inputs),
              "run_ir": run_ir, "print_ir": print_ir, "properties": {"traced", "shapes"}}
    return PassContext(**{**fields, **changes})


def run_passes(passes, ir, ctx: PassContext, numeric: bool = True):
    """Run ``passes`` through the PassManager with verify-each (and numeric-check) on."""
    instruments = [VerifyEach(), NumericCheck()] if numeric else [VerifyEach()]
    stage = "graph" if isinstance(ir, fx.GraphModule) else "xbar"
    return PassManager(list(passes), instruments).run(ir, ctx, stage=stage)


def prefix_of(pass_name: str) -> list:
    """The passes of the ``fully-folded`` pipeline before ``pass_name``."""
    passes = resolve_pipeline("fully-folded")
    return passes[: [p.name for p in passes].index(pass_name)]


def before_pass(pass_name: str, model: nn.Module, inputs: tuple, target="tiny", **changes):
    """(IR right before ``pass_name`` in the ``fully-folded`` pipeline, its context)."""
    ctx = make_context(inputs, target, **changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        return run_passes(prefix_of(pass_name), trace(model, inputs), ctx), ctx


def golden_models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """Small seeded models for the golden dumps: name -> (model in eval mode, input shape)."""
    torch.manual_seed(0)
    convbn = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.Conv2d(4, 4, 1, groups=2), nn.BatchNorm2d(4, affine=False),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(4), nn.Linear(4, 3))
    return {"convbn": (convbn.eval(), (1, 2, 6, 6)),
            "mlp": (MODELS["mlp"].build(), MODELS["mlp"].input_shape),
            "functional_net": (MODELS["functional_net"].build(), MODELS["functional_net"].input_shape)}


def golden_text(model_name: str, pass_: Pass, target="tiny") -> str:
    model, shape = golden_models()[model_name]
    inputs = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)
    ir, ctx = before_pass(pass_.name, model, inputs, target)
    done = format_pipeline(prefix_of(pass_.name)) or "trace"
    lines = [f"# {model_name} through '{pass_}' on '{target}', after: {done}",
             "# regenerate: XB_UPDATE_GOLDEN=1 python -m pytest tests/passes", "--- before", print_ir(ir)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", XBWarning)
            after = run_passes([pass_], ir, ctx)
    except CompileError as exc:
        lines += ["--- error", exc.code + "\n"]
    else:
        lines += ["--- after", print_ir(after)]
    return "\n".join(lines)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if UPDATE_GOLDEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing; create it with XB_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), str(path), "now", n=2))
        pytest.fail(f"{path.name} differs from the golden dump (XB_UPDATE_GOLDEN=1 regenerates it):\n{diff}")
