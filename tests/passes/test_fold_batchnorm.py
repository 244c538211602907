"""``fold-batchnorm`` run alone through the PassManager (verify-each and numeric-check on).

It folds inference BatchNorm into the Conv/Linear that feeds it (with or without bias, BN with or
without affine), keeps BN whose producer has other users or is a shared module, records the
``Reference`` annotation and preserves the numbers; golden before/after dumps for three small models.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # tests/conftest.py does this too; kept so the file also runs alone
    sys.path.insert(0, str(ROOT))

from passes.fold_batchnorm import FoldBatchNormPass
from tests.models import MODELS
from tests.passes.harness import check_golden, golden_text, make_context, run_passes
from xbcompiler.diagnostics import XBWarning
from xbcompiler.frontend.trace import trace
from xbcompiler.ir import annotations as ann

# --- fold-batchnorm --------------------------------------------------------------------------------------


def _bn(n: int, affine: bool = True, dims: int = 2) -> nn.Module:
    bn = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(n, affine=affine)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.3, 2.0)
        if affine:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return bn


def fold(model: nn.Module, inputs: tuple, **changes):
    """Trace, run fold-batchnorm alone with verify-each and numeric-check; (graph, context)."""
    ctx = make_context(inputs, **changes)
    gm = run_passes([FoldBatchNormPass()], trace(model, inputs), ctx)
    return gm, ctx


def batch_norms(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is F.batch_norm]


def assert_same_function(gm: fx.GraphModule, model: nn.Module, inputs: tuple) -> None:
    with torch.no_grad():
        torch.testing.assert_close(gm(*inputs), model(*inputs), rtol=1e-5, atol=1e-5)


FOLDABLE = {
    "conv-bias": lambda: nn.Sequential(nn.Conv2d(3, 4, 3), _bn(4), nn.ReLU()),
    "conv-no-bias": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), _bn(4)),
    "bn-no-affine": lambda: nn.Sequential(nn.Conv2d(3, 4, 3), _bn(4, affine=False)),
    "no-bias-no-affine": lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), _bn(4, affine=False)),
    "grouped-strided": lambda: nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), _bn(6)),
    "depthwise": lambda: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), _bn(4)),
    "linear-bn1d": lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 5), _bn(5, dims=1)),
    "conv1d": lambda: nn.Sequential(nn.Flatten(2), nn.Conv1d(3, 5, 3, dilation=2, bias=False), _bn(5, dims=1)),
}


@pytest.mark.parametrize("name", sorted(FOLDABLE))
def test_batchnorm_after_a_crossbar_layer_is_folded(name):
    torch.manual_seed(1)
    model = FOLDABLE[name]().eval()
    inputs = (torch.randn(2, 3, 4, 4) if "depthwise" not in name and "grouped" not in name
              else torch.randn(2, 4, 5, 5),)
    gm, ctx = fold(model, inputs)
    assert batch_norms(gm) == []
    assert not any(n.op == "get_attr" and "running" in n.target for n in gm.graph.nodes)
    assert ctx.report["fold-batchnorm"] == {"folded": 1}
    (layer,) = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert ann.get(layer, ann.Reference) == ann.Reference(f"_{int(layer.name[1:]) + 1}")  # the BN right after it
    assert gm.get_submodule(layer.target).bias is not None  # a bias-free conv gains the BN shift as its bias
    assert_same_function(gm, model, inputs)
    assert "bn-folded" in ctx.properties


def test_folding_computes_the_textbook_formula():
    torch.manual_seed(2)
    conv, bn = nn.Conv2d(2, 3, 1), _bn(3)
    bn.eps = 1e-3
    gm, _ = fold(nn.Sequential(conv, bn).eval(), (torch.randn(1, 2, 3, 3),))
    folded = gm.get_submodule("0")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(folded.weight, conv.weight * scale.view(-1, 1, 1, 1))
    torch.testing.assert_close(folded.bias, (conv.bias - bn.running_mean) * scale + bn.bias)


def test_the_users_model_keeps_its_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), _bn(4)).eval()
    weight = model[0].weight.detach().clone()
    fold(model, (torch.randn(1, 3, 5, 5),))
    assert torch.equal(model[0].weight, weight) and model[0].bias is None


def test_chained_batchnorms_fold_and_reference_the_last():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _bn(4), _bn(4, affine=False)).eval()
    inputs = (torch.randn(2, 3, 5, 5),)
    gm, ctx = fold(model, inputs)
    assert batch_norms(gm) == [] and ctx.report["fold-batchnorm"] == {"folded": 2}
    assert ann.get(gm.graph.find_nodes(op="call_module", target="0")[0], ann.Reference).node == "_2"
    assert_same_function(gm, model, inputs)


class SharedOutput(nn.Module):
    """The conv output feeds the BatchNorm and a second user: folding would change that user."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), _bn(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class SharedModule(nn.Module):
    """One conv module called twice, once followed by a BatchNorm: folding would change both calls."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), _bn(3)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x)


class AfterHostOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), _bn(4)

    def forward(self, x):
        return self.bn(torch.relu(self.conv(x)))


class AfterInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn, self.fc = _bn(3, dims=1), nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(self.bn(x))


class LinearOverSequence(nn.Module):
    """BatchNorm1d over [B, T, F] normalises T, not the Linear's output features: not foldable."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(5, 6), _bn(3, dims=1)

    def forward(self, x):  # [B, 3, 5]
        return self.bn(self.fc(x))


@pytest.mark.parametrize("cls,shape", [(SharedOutput, (2, 3, 5, 5)), (SharedModule, (2, 3, 5, 5)),
                                       (AfterHostOp, (2, 3, 5, 5)), (AfterInput, (2, 3, 5)),
                                       (LinearOverSequence, (2, 3, 5))],
                         ids=["output-shared", "module-shared", "after-host-op", "after-input", "linear-sequence"])
def test_batchnorm_that_cannot_fold_stays_on_the_host(cls, shape):
    torch.manual_seed(3)
    model = cls().eval()
    inputs = (torch.randn(*shape),)
    weights = {k: v.clone() for k, v in trace(model, inputs).state_dict().items()}
    gm, ctx = fold(model, inputs)
    assert len(batch_norms(gm)) == 1
    assert ctx.report["fold-batchnorm"] == {"folded": 0}
    assert all(torch.equal(v, weights[k]) for k, v in gm.state_dict().items())  # nothing was rescaled
    assert not any(ann.get(n, ann.Reference, None) for n in gm.graph.nodes)
    assert_same_function(gm, model, inputs)


def test_some_fold_and_some_stay():
    model = MODELS["densenet_small"].build()  # pre-activation BN (after cat/input) stays, BN after conv folds
    inputs = (MODELS["densenet_small"].example_input(),)
    before = len(batch_norms(trace(model, inputs)))
    gm, ctx = fold(model, inputs)
    folded = ctx.report["fold-batchnorm"]["folded"]
    assert 0 < folded < before and len(batch_norms(gm)) == before - folded
    assert_same_function(gm, model, inputs)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_small", "shufflenet_small", "conv1d_net", "vgg_digits"])
def test_zoo_models_fold_and_keep_their_numbers(name):
    case = MODELS[name]
    model, inputs = case.build(), (case.example_input(),)
    gm, ctx = fold(model, inputs)
    assert ctx.report["fold-batchnorm"]["folded"] > 0
    refs = [r.node for n in gm.graph.nodes if (r := ann.get(n, ann.Reference, None))]
    assert len(refs) == len(set(refs)) == ctx.report["fold-batchnorm"]["folded"]
    assert_same_function(gm, model, inputs)


def test_reference_names_a_node_of_the_original_graph():
    case = MODELS["resnet_digits"]
    model, inputs = case.build(), (case.example_input(),)
    original = {n.name for n in trace(model, inputs).graph.nodes if n.target is F.batch_norm}
    gm, _ = fold(model, inputs)
    refs = {r.node for n in gm.graph.nodes if (r := ann.get(n, ann.Reference, None))}
    assert refs and refs <= original


def test_folded_compile_verifies_layer_by_layer():
    """The emulator compares each folded layer against its reference BN node in the model."""
    import xbcompiler as xb

    case = MODELS["resnet_digits"]
    model, x = case.build(), case.example_input()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XBWarning)
        compiled = xb.compile(model, (x,), "prime-like")
    report = xb.verify(compiled, model, (x,))
    assert report.ok
    assert any(c.reference != c.name for c in report.layers)  # checked against the BN node, not the conv


class TrainingModeBatchNorm(nn.Module):
    """``F.batch_norm(..., training=True)`` normalises with batch statistics: not an affine map, not foldable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("mean", torch.zeros(4))
        self.register_buffer("var", torch.ones(4))

    def forward(self, x):
        return F.batch_norm(self.conv(x), self.mean, self.var, training=True)


class StatlessBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return F.batch_norm(self.conv(x), None, None, training=True)


def test_training_mode_functional_batchnorm_is_not_folded():
    model = TrainingModeBatchNorm().eval()
    gm, ctx = fold(model, (torch.randn(4, 3, 5, 5),))
    assert len(batch_norms(gm)) == 1 and ctx.report["fold-batchnorm"] == {"folded": 0}


def test_functional_batchnorm_without_statistics_is_not_folded():
    gm, _ = fold(StatlessBatchNorm().eval(), (torch.randn(4, 3, 5, 5),))
    assert len(batch_norms(gm)) == 1


def test_functional_batchnorm_with_keyword_arguments_folds():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), _bn(4)

        def forward(self, x):
            b = self.bn
            return F.batch_norm(self.conv(x), b.running_mean, b.running_var, b.weight, b.bias, eps=0.25)

    model = M().eval()
    inputs = (torch.randn(2, 3, 5, 5),)
    gm, ctx = fold(model, inputs)
    assert ctx.report["fold-batchnorm"] == {"folded": 1}
    assert_same_function(gm, model, inputs)


@pytest.mark.parametrize("model_name", ["convbn", "mlp", "functional_net"])
def test_golden(model_name):
    check_golden(f"{model_name}-fold-batchnorm", golden_text(model_name, FoldBatchNormPass()))
