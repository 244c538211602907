"""``lower-to-xbar`` run alone through the PassManager (verify-each and numeric-check on).

The fx graph becomes an immutable ``XbarProgram`` whose nodes name only allow-listed host operators,
crossbar layers and constants; the program verifier passes, and executing the program (host ops plus
matrices) gives the graph's numbers.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/conftest.py does this too; kept so the file also runs alone
    sys.path.insert(0, str(ROOT))

from passes.lower_to_xbar import LowerToXbarPass
from tests.models import MODELS
from tests.passes.harness import before_pass, check_golden, golden_text, make_context, run_passes, run_program
from xbcompiler.diagnostics import CompileError
from xbcompiler.frontend.ops import HOST_OPS
from xbcompiler.frontend.trace import trace
from xbcompiler.ir.program import XbarProgram

# --- lower-to-xbar --------------------------------------------------------------------------------------

PROGRAM_OPS = {"input", "const", "host", "xbar"}


def to_program(model: nn.Module, inputs: tuple, target="tiny"):
    """The graph right before lower-to-xbar, then lower-to-xbar alone (verify-each, numeric-check); (program, ctx)."""
    gm, ctx = before_pass("lower-to-xbar", model, inputs, target)
    program = run_passes([LowerToXbarPass()], gm, ctx)
    return program, ctx


def assert_well_formed(program: XbarProgram, gm_names: set[str] | None = None) -> None:
    assert isinstance(program, XbarProgram) and not program.placed
    assert not program.crossbars and not program.slices and not program.plans
    names = [n.name for n in program.nodes]
    assert len(names) == len(set(names))
    for n in program.nodes:
        assert n.op in PROGRAM_OPS, n
        if n.op == "host":
            assert n.target in HOST_OPS, n
        elif n.op == "xbar":
            assert n.target in program.matrices and len(n.args) == 1 and set(n.args[0]) == {"ref"}
        elif n.op == "const":
            assert isinstance(program.constants[n.target], np.ndarray)
    assert sorted(n.target for n in program.nodes if n.op == "xbar") == sorted(program.matrices)
    assert [n.name for n in program.nodes if n.op == "input"] == [i.name for i in program.inputs]
    program.verify()


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"resnet56"}))  # resnet20 has the same ops
def test_zoo_models_lower_to_allow_listed_programs(name):
    case = MODELS[name]
    model, inputs = case.build(), (case.example_input(),)
    program, ctx = to_program(model, inputs)
    assert_well_formed(program)
    assert "xbar" in ctx.properties
    torch.testing.assert_close(run_program(program, inputs), model(*inputs), rtol=1e-4, atol=1e-5)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        self.register_buffer("offset", torch.arange(4.0))

    def forward(self, x):
        y = F.relu(self.conv(x))[:, :, 1:, ...]
        y = y.mean(dim=(2, 3)) + self.offset
        return {"logits": self.fc(y), "pair": (y, y.shape[1])}


def test_program_nodes_inputs_constants_and_output():
    torch.manual_seed(0)
    model, inputs = Small().eval(), (torch.randn(2, 3, 5, 5),)
    program, _ = to_program(model, inputs)
    assert_well_formed(program)
    assert [(i.name, i.shape, i.dtype) for i in program.inputs] == [("x", (3, 5, 5), "float32")]
    ops = [(n.name, n.op, n.target) for n in program.nodes]
    assert ops[0] == ("x", "input", "0")
    assert ("conv", "xbar", "conv") in ops and ("fc", "xbar", "fc") in ops
    assert ("offset", "const", "offset") in ops
    np.testing.assert_array_equal(program.constants["offset"], np.arange(4.0, dtype=np.float32))
    getitem = next(n for n in program.nodes if n.target == "operator.getitem" and n.args[0] == {"ref": "relu"})
    assert getitem.args[1] == {"tuple": [{"slice": [None, None, None]}, {"slice": [None, None, None]},
                                         {"slice": [1, None, None]}, {"ellipsis": True}]}
    mean = next(n for n in program.nodes if n.target == "torch.Tensor.mean")
    assert mean.kwargs == (("dim", {"tuple": [2, 3]}),)
    assert program.output["dict"][0] == ["logits", {"ref": "fc"}]
    out = run_program(program, inputs)
    ref = model(*inputs)
    torch.testing.assert_close(out["logits"], ref["logits"])
    assert out["pair"][1] == 4


def test_program_is_immutable():
    torch.manual_seed(0)
    program, _ = to_program(Small().eval(), (torch.randn(2, 3, 5, 5),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        program.placed = True
    with pytest.raises(dataclasses.FrozenInstanceError):
        program.nodes[0].name = "y"
    assert program.replace(placed=True) is not program and not program.placed


def test_unlowered_module_is_xb103():
    model, inputs = nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), (torch.randn(1, 3, 5, 5),)
    ctx = make_context(inputs, properties={"traced", "shapes", "im2col"})  # pretend lower-im2col ran
    with pytest.raises(CompileError) as info:
        run_passes([LowerToXbarPass()], trace(model, inputs), ctx)
    assert info.value.code == "XB103" and info.value.location.node == "_0"


def test_operator_off_the_allow_list_is_xb103():
    model, inputs = nn.Sequential(nn.Linear(4, 3)).eval(), (torch.randn(2, 4),)
    gm, ctx = before_pass("lower-to-xbar", model, inputs)
    out = next(n for n in gm.graph.nodes if n.op == "output")
    with gm.graph.inserting_before(out):
        bad = gm.graph.call_function(torch.cumsum, (out.args[0], 1))
    out.args = (bad,)
    gm.recompile()
    with pytest.raises(CompileError) as info:
        run_passes([LowerToXbarPass()], gm, ctx)
    assert info.value.code == "XB103" and info.value.location.node == bad.name


def test_lower_to_xbar_needs_im2col():
    model, inputs = nn.Sequential(nn.Linear(4, 3)).eval(), (torch.randn(2, 4),)
    with pytest.raises(CompileError) as info:
        run_passes([LowerToXbarPass()], trace(model, inputs), make_context(inputs))
    assert info.value.code == "XB603"


def test_verifier_rejects_a_program_naming_an_unlisted_host_op():
    torch.manual_seed(0)
    program, _ = to_program(Small().eval(), (torch.randn(2, 3, 5, 5),))
    nodes = tuple(dataclasses.replace(n, target="os.system") if n.target == "torch.nn.functional.relu" else n
                  for n in program.nodes)
    with pytest.raises(CompileError) as info:
        program.replace(nodes=nodes).verify()
    assert info.value.code == "XB303"


@pytest.mark.parametrize("model_name", ["convbn", "mlp", "functional_net"])
def test_golden(model_name):
    check_golden(f"{model_name}-lower-to-xbar", golden_text(model_name, LowerToXbarPass()))
