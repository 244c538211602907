"""The front end: tracing, normalisation onto the allow-list, coverage rows and the XB1xx diagnostics.

Every allow-listed operator category is traced by a tiny module below, then compiled end to end on
``tiny`` and verified against the model with the emulator. Bad input is matched by code, never prose.
"""

from __future__ import annotations

import copy
import io
import operator
import os
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import fx, nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import xbcompiler as xb
from xbcompiler import CompileError
from xbcompiler.diagnostics import source_of
from xbcompiler.frontend import ops
from xbcompiler.frontend.capture import capture
from xbcompiler.frontend.coverage import coverage
from xbcompiler.frontend.trace import is_crossbar_module, trace, user_stack
from xbcompiler.ir import annotations as ann

THIS_FILE = Path(__file__).name
PLACEMENTS = {"crossbar", "host", "folded", "removed", "input", "output", "constant"}


def compile_quiet(model, inputs, target="tiny", **kwargs) -> xb.CompiledModel:
    """``xb.compile`` without the multi-chip XBWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, inputs, target, **kwargs)


def compile_and_verify(model, inputs, target="tiny", tolerance=1e-4) -> xb.CompiledModel:
    compiled = compile_quiet(model, inputs, target)
    report = xb.verify(compiled, model, inputs, tolerance=tolerance)
    assert report.ok, report.to_dict()
    return compiled


def line_of(text: str) -> int:
    """Line number in this file of the (unique) line ending with ``text``."""
    lines = [i for i, ln in enumerate(Path(__file__).read_text().splitlines(), 1) if ln.rstrip().endswith(text)]
    assert len(lines) == 1, (text, lines)
    return lines[0]


def assert_points_here(source: str | None, marker: str) -> None:
    assert source is not None
    assert THIS_FILE in source and f"line {line_of(marker)}," in source, source


def rows_by_node(gm: fx.GraphModule) -> dict[str, str]:
    rows = coverage(gm)
    names = [r.node for r in rows]
    assert len(names) == len(set(names)), names
    return {r.node: r.placement for r in rows}


# --------------------------------------------------------------------------- tracer: leaves, stack traces


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        y = self.conv(x)  # marker: conv call
        return F.relu(self.fc(y))  # marker: fc call


def test_conv_and_linear_stay_leaves():
    gm = trace(TwoLayers(), (torch.randn(1, 3, 8, 8),))
    calls = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert [n.target for n in calls] == ["conv", "fc"]
    assert all(is_crossbar_module(gm.get_submodule(n.target)) for n in calls)
    assert not any(n.op == "call_function" and n.target in (F.conv2d, F.linear) for n in gm.graph.nodes)
    # the one host op is a call_function from the allow-list; shapes are propagated everywhere
    host = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert [ops.host_name(n.target) for n in host] == ["torch.nn.functional.relu"]
    assert all("tensor_meta" in n.meta for n in gm.graph.nodes if n.op != "output")


def test_front_end_records_typed_annotations():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.drop = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout()

        def forward(self, x):
            return self.drop(self.act(self.conv(x)))

    gm = trace(Net(), (torch.randn(1, 3, 8, 8),))
    nodes = {n.name: n for n in gm.graph.nodes}
    assert ann.get(nodes["conv"], ann.Source) == ann.Source("conv")
    assert ann.get(nodes["conv"], ann.LayerKind, None) is None  # a plain Conv2d is of its module's kind
    assert ann.get(nodes["act"], ann.FromModule) == ann.FromModule("act")
    assert ann.get(gm, ann.Removed).nodes == (ann.RemovedNode("drop", "drop", "removed in inference"),)
    assert not any(isinstance(k, str) and k.startswith("xb.") for n in gm.graph.nodes for k in n.meta)
    with pytest.raises(TypeError):
        ann.set(nodes["conv"], "conv")  # only Annotation instances


def test_missing_required_annotation_is_xb202_naming_who_records_it():
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 2)))  # not through the front end
    (layer,) = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert ann.get(layer, ann.Source, None) is None
    with pytest.raises(CompileError) as err:
        ann.get(layer, ann.Source)
    assert err.value.code == "XB202" and err.value.location.node == layer.name
    assert "Source" in err.value.message and "xbcompiler.frontend.trace" in err.value.message
    with pytest.raises(CompileError) as err:
        coverage(gm)
    assert err.value.code == "XB202" and "Removed" in err.value.message


def test_stack_traces_point_at_the_users_line():
    gm = trace(TwoLayers(), (torch.randn(1, 3, 8, 8),))
    nodes = {n.name: n for n in gm.graph.nodes}
    assert_points_here(source_of(nodes["conv"]), "# marker: conv call")
    assert_points_here(source_of(nodes["fc"]), "# marker: fc call")
    assert_points_here(source_of(nodes["relu"]), "# marker: fc call")
    for n in gm.graph.nodes:  # torch's own tracing frames are gone
        assert "torch/fx/" not in (n.meta.get("stack_trace") or "")


def test_user_stack_keeps_torch_frames_only_when_nothing_else_is_left():
    torch_dir = str(Path(torch.__file__).parent)
    stack = (f'File "{torch_dir}/nn/modules/conv.py", line 560, in _conv_forward\n    return F.conv2d(\n'
             f'  File "{torch_dir}/fx/proxy.py", line 287, in create_node\n    summary()')
    assert user_stack(stack).splitlines() == [f'File "{torch_dir}/nn/modules/conv.py", line 560, in _conv_forward',
                                              "    return F.conv2d("]
    user = f'File "/home/u/model.py", line 3, in forward\n    y = self.c(x)\n  {stack}'
    assert user_stack(user) == 'File "/home/u/model.py", line 3, in forward\n    y = self.c(x)'


def test_trace_works_on_a_copy():
    model = TwoLayers()
    gm = trace(model, (torch.randn(1, 3, 8, 8),))
    assert gm.get_submodule("conv") is not model.conv
    assert gm.get_submodule("conv").weight.data_ptr() != model.conv.weight.data_ptr()


# --------------------------------------------------------------------------- every allow-listed category


class Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.acts = nn.ModuleList([nn.ReLU(), nn.ReLU6(), nn.LeakyReLU(0.2), nn.GELU(), nn.SiLU(), nn.Hardswish(),
                                   nn.Sigmoid(), nn.Tanh(), nn.GELU(approximate="tanh"), nn.ELU(), nn.Hardtanh(),
                                   nn.Hardsigmoid()])

    def forward(self, x):
        y = self.conv(x)
        outs = [act(y) for act in self.acts]
        outs += [F.softmax(y, dim=1), torch.softmax(y, -1), y.softmax(1), F.log_softmax(y, dim=1),
                 torch.clamp(y, -0.5, 0.5), y.clamp(min=0.0), torch.clip(y, max=1.0), torch.relu(y), y.relu(),
                 torch.sigmoid(y), y.tanh(), F.relu6(y), F.leaky_relu(y, 0.1)]
        return torch.cat(outs, 1)


class Pooling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pools = nn.ModuleList([nn.MaxPool2d(2), nn.AvgPool2d(2), nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(3, 1, 1),
                                    nn.AdaptiveAvgPool2d(2), nn.AdaptiveMaxPool2d((2, 2))])

    def forward(self, x):
        y = self.conv(x)
        outs = [p(y).flatten(1) for p in self.pools]
        outs += [F.max_pool2d(y, 2).flatten(1), F.avg_pool2d(y, 2).flatten(1),
                 F.adaptive_avg_pool2d(y, 1).flatten(1), F.adaptive_max_pool2d(y, 1).flatten(1)]
        return torch.cat(outs, 1)


class Pooling1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.pools = nn.ModuleList([nn.MaxPool1d(2), nn.AvgPool1d(2), nn.AdaptiveAvgPool1d(3), nn.AdaptiveMaxPool1d(3)])

    def forward(self, x):
        y = self.conv(x)
        return torch.cat([p(y) for p in self.pools], -1)


class Arithmetic(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        y = a + b - a * b / (b.abs() + 1.0)
        y = y + (a // 1.0) + a ** 2 + torch.pow(b, 2) - (-a) + torch.maximum(a, b) - torch.minimum(a, b)
        y = y + torch.add(a, b) - torch.sub(a, 1.0) + torch.mul(a, 0.5) + torch.div(b, 2.0) + a % 2.0
        y = y + torch.sqrt(b.abs() + 1) + torch.exp(-a.abs()) + a.exp() + b.abs().sqrt() + torch.neg(a)
        return y + a.add(b).sub(b).mul(2.0).div(2.0).pow(1) + a.neg()


class Reductions(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)

    def forward(self, x):
        y = self.conv(x)
        return torch.cat([y.mean(dim=(2, 3)), torch.mean(y, 1).flatten(1), y.sum(-1).flatten(1),
                          torch.sum(y, dim=(2, 3), keepdim=True).flatten(1), torch.amax(y, dim=(2, 3)),
                          y.amax(-1).flatten(1)], 1)


class Shapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)
        self.register_buffer("idx", torch.tensor([3, 0, 2]))

    def forward(self, x):  # x: [B, 4, 6, 6]
        y = self.conv(x)  # [B, 8, 6, 6]
        a, b = y.chunk(2, dim=1)
        c, d = torch.split(y, [3, 5], dim=1)
        e, f = y.split(4, 1)
        g = torch.chunk(y, 4, 1)[0]
        s = torch.stack([a, b], 0).sum(0)  # [B, 4, 6, 6]
        t = torch.cat([s, e, f[:, :, ...], g[..., :, :]], 1)  # [B, 14, 6, 6]
        t = t[:, 1:13:2, ::2, 1:]  # [B, 6, 3, 5]
        p = F.pad(c, (1, 0, 0, 1))  # [B, 3, 7, 7]
        q = d.permute(0, 2, 3, 1).contiguous()  # [B, 6, 6, 5]
        q = torch.transpose(q, 1, 2).transpose(2, 1)
        r = self.fc(torch.permute(y, (0, 2, 3, 1)))  # linear over the channel dim: [B, 6, 6, 5]
        r = r + q + torch.zeros_like(q) + torch.ones_like(q)
        u = torch.index_select(r, 3, self.idx) + r.index_select(3, self.idx)  # [B, 6, 6, 3]
        v = u.unsqueeze(1).squeeze(1).reshape(u.size(0), -1)  # [B, 108]
        w = torch.reshape(torch.unsqueeze(v, -1), (v.shape[0], -1)).view(-1, 108)
        z = torch.flatten(t, 1)  # [B, 90]
        h = p.flatten(1).view(p.size(0), p.shape[1], -1)  # [B, 3, 49]
        h = torch.squeeze(h[:, :1], 1)  # [B, 49]
        k = x[:, 0].unsqueeze(1).expand(-1, 2, -1, -1).expand_as(x[:, :2]).repeat(1, 2, 1, 1)  # [B, 4, 6, 6]
        return torch.concat([w, z, h, k.flatten(1)], 1) * (x.dim() + x.ndim)


class SizeArithmetic(nn.Module):
    """size()/shape arithmetic feeding view/reshape (all integers stay on the host)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):  # [B, 2, 8, 8]
        y = self.conv(x)  # [B, 4, 8, 8]
        b, c = y.size(0), y.shape[1]
        h, w = y.size()[2:]
        y = y.view(b, c * 4, h // 2, w // 2 * 1)  # [B, 16, 4, 4]
        y = y.reshape(b, c * 4, (h * w) // 4).mean(-1)  # [B, 16]
        return self.fc(y / (h - w + 2) ** 1)


class Norms(nn.Module):
    """LayerNorm and GroupNorm on the host, BatchNorm after a pooling (not after a conv: stays on the host)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(8)
        self.ln_noaffine = nn.LayerNorm([8], elementwise_affine=False)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = self.gn(self.bn(F.max_pool2d(y, 2)))
        z = self.ln(y.mean(dim=(2, 3)))
        z = self.ln_noaffine(z) + F.layer_norm(z, (8,))
        return self.fc(z)


class Removed(nn.Module):
    """Dropout in every spelling and identity vanish from the graph."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.drop = nn.Dropout(0.5)
        self.drop2d = nn.Dropout2d(0.3)
        self.ident = nn.Identity()

    def forward(self, x):
        y = self.ident(self.drop2d(self.conv(x)))
        y = F.dropout(y, 0.2, training=self.training) + F.dropout2d(y, 0.1, self.training)
        return self.drop(y).detach()


class Functional(nn.Module):
    """Functional conv/linear/matmul with Parameter weights become crossbar modules."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3) * 0.2)
        self.b = nn.Parameter(torch.randn(4) * 0.1)
        self.w1 = nn.Parameter(torch.randn(6, 2, 3) * 0.3)
        self.lw = nn.Parameter(torch.randn(5, 16) * 0.2)
        self.proj = nn.Parameter(torch.randn(5, 3) * 0.3)

    def forward(self, x):  # [B, 3, 6, 6]
        y = F.conv2d(x, self.w, self.b, padding=1, stride=2)  # [B, 4, 3, 3]
        z = F.conv1d(y.flatten(2), self.w1, groups=2, padding=1)  # [B, 6, 9]
        v = F.linear(z[:, :, :8].reshape(z.size(0), 3, 16), self.lw)  # [B, 3, 5]
        out = v @ self.proj  # [B, 3, 3]
        return torch.matmul(out, out)


class LeftMatmul(nn.Module):
    """``Parameter @ x``: the transpose trick (W @ x == (x^T @ W^T)^T); activation @ activation stays on the host."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4) * 0.5)

    def forward(self, x):  # [B, 4, 5]
        y = self.w @ x  # [B, 3, 5]
        return y @ y.transpose(-2, -1)


CATEGORY_CASES = {
    "activations": (Activations, (2, 3, 5, 5)),
    "pooling": (Pooling, (2, 3, 8, 8)),
    "pooling1d": (Pooling1d, (2, 2, 12)),
    "arithmetic": (Arithmetic, (2, 3, 4, 4)),
    "reductions": (Reductions, (2, 3, 6, 6)),
    "shapes": (Shapes, (2, 4, 6, 6)),
    "size-arithmetic": (SizeArithmetic, (2, 2, 8, 8)),
    "norms": (Norms, (2, 3, 8, 8)),
    "removed": (Removed, (2, 3, 6, 6)),
    "functional": (Functional, (2, 3, 6, 6)),
    "left-matmul": (LeftMatmul, (2, 4, 5)),
}


def build(name: str) -> tuple[nn.Module, tuple[torch.Tensor]]:
    cls, shape = CATEGORY_CASES[name]
    torch.manual_seed(0)
    model = cls().eval()
    with torch.no_grad():  # non-trivial running statistics for every BatchNorm
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model, (torch.randn(*shape, generator=torch.Generator().manual_seed(1)),)


@pytest.mark.parametrize("name", sorted(CATEGORY_CASES))
def test_category_traces_onto_the_allow_list(name):
    model, inputs = build(name)
    gm = trace(model, inputs)
    for n in gm.graph.nodes:
        if n.op == "call_module":
            assert is_crossbar_module(gm.get_submodule(n.target)), n
        elif n.op == "call_function":
            assert ops.host_name(n.target) in ops.HOST_OPS, n
        elif n.op == "call_method":
            assert ops.method_name(n.target) in ops.HOST_OPS, n
    with torch.no_grad():
        torch.testing.assert_close(gm(*inputs), model(*inputs))


@pytest.mark.parametrize("name", sorted(CATEGORY_CASES))
def test_category_compiles_and_verifies_on_tiny(name):
    model, inputs = build(name)
    compiled = compile_and_verify(model, inputs)
    assert compiled.program.placed
    assert compiled.program.matrices  # every case has at least one crossbar layer


def test_removed_ops_vanish():
    model, inputs = build("removed")
    gm = trace(model, inputs)
    for n in gm.graph.nodes:
        assert n.op != "call_module" or isinstance(gm.get_submodule(n.target), nn.Conv2d)
        assert n.target not in (F.dropout, F.dropout2d, "detach")
    removed = [r for r in coverage(gm) if r.placement == "removed"]
    assert sorted(r.node for r in removed) == ["detach", "drop", "drop2d", "dropout", "dropout2d", "ident"]
    assert all(r.why for r in removed)


def test_functional_forms_become_crossbar_modules():
    model, inputs = build("functional")
    gm = trace(model, inputs)
    mods = {n.name: gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    kinds = sorted(type(m).__name__ for m in mods.values())
    assert kinds == ["Conv1d", "Conv2d", "Linear", "Linear"]
    conv = next(m for m in mods.values() if isinstance(m, nn.Conv2d))
    assert conv.stride == (2, 2) and conv.padding == (1, 1)
    torch.testing.assert_close(conv.weight, model.w)
    conv1d = next(m for m in mods.values() if isinstance(m, nn.Conv1d))
    assert conv1d.groups == 2 and conv1d.in_channels == 4 and conv1d.bias is None
    matmul = [n for n in gm.graph.nodes if ann.get(n, ann.LayerKind, None) == ann.LayerKind("matmul")]
    assert len(matmul) == 1
    torch.testing.assert_close(gm.get_submodule(matmul[0].target).weight, model.proj.t())
    # activation @ activation stays a host op
    assert any(n.op == "call_function" and n.target is torch.matmul for n in gm.graph.nodes)


def test_left_matmul_is_transposed_onto_a_crossbar():
    model, inputs = build("left-matmul")
    gm = trace(model, inputs)
    (layer,) = [n for n in gm.graph.nodes if n.op == "call_module"]
    torch.testing.assert_close(gm.get_submodule(layer.target).weight, model.w)
    assert layer.args[0].target is torch.transpose and next(iter(layer.users)).target is torch.transpose


def test_batchnorm_not_after_a_conv_stays_on_the_host():
    model, inputs = build("norms")
    gm = trace(model, inputs)
    placement = rows_by_node(gm)
    assert placement["bn"] == "host"
    assert placement["gn"] == placement["ln"] == placement["ln_noaffine"] == "host"
    compiled = compile_quiet(model, inputs)
    assert "torch.nn.functional.batch_norm" in {n.target for n in compiled.program.host_nodes}


def test_batchnorm_after_a_conv_is_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    inputs = (torch.randn(2, 3, 6, 6),)
    placement = rows_by_node(trace(model, inputs))
    assert placement == {"input_1": "input", "_0": "crossbar", "_1": "folded", "_1_running_mean": "folded",
                         "_1_running_var": "folded", "_1_weight": "folded", "_1_bias": "folded",
                         "_2": "host", "output": "output"}
    compiled = compile_and_verify(model, inputs)
    assert "torch.nn.functional.batch_norm" not in {n.target for n in compiled.program.host_nodes}


@pytest.mark.parametrize("name", sorted(CATEGORY_CASES))
def test_coverage_has_one_row_per_node(name):
    model, inputs = build(name)
    gm = trace(model, inputs)
    rows = coverage(gm)
    live = [r for r in rows if r.placement != "removed"]
    assert [r.node for r in live] == [n.name for n in gm.graph.nodes]
    assert len({r.node for r in rows}) == len(rows)
    assert {r.placement for r in rows} <= PLACEMENTS
    for r, n in zip(live, gm.graph.nodes):
        expected = {"placeholder": "input", "output": "output", "call_module": "crossbar"}.get(n.op)
        if expected:
            assert r.placement == expected, (r, n.op)
        elif n.op == "get_attr":
            assert r.placement in ("constant", "folded"), r
        else:
            assert r.placement in ("host", "folded"), r
        assert r.why


class SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x)


class LinearOverSequence(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(5, 6), nn.BatchNorm1d(3)

    def forward(self, x):  # [B, 3, 5]: BatchNorm1d normalises dim 1, not the Linear's features
        return self.bn(self.fc(x))


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (2, 3, 5, 5)),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)), (2, 3, 5, 5)),
    (SharedConv, (2, 3, 5, 5)),
    (LinearOverSequence, (2, 3, 5)),
], ids=["folds", "after-relu", "shared-module", "linear-sequence"])
def test_coverage_folded_agrees_with_fold_batchnorm(make, shape):
    model, inputs = make().eval(), (torch.randn(*shape),)
    compiled = compile_quiet(model, inputs)
    said = sum(r.placement == "folded" and r.op == "batch_norm" for r in compiled.coverage)
    assert said == compiled.report["fold-batchnorm"]["folded"]


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_coverage_on_compiled_model_matches_the_front_end(frontend):
    model, inputs = build("removed")
    compiled = compile_quiet(model, inputs, frontend=frontend)
    assert compiled.coverage == coverage(capture(model, inputs, frontend).gm)


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize("k,dilation", [(1, 1), (3, 1), (5, 1), (3, 2), (5, 3), (2, 2), (4, 2)])
def test_padding_same_with_symmetric_kernels(k, dilation):
    torch.manual_seed(k * 10 + dilation)
    model = nn.Sequential(nn.Conv2d(2, 3, k, padding="same", dilation=dilation), nn.ReLU()).eval()
    inputs = (torch.randn(2, 2, 7, 7),)
    compiled = compile_and_verify(model, inputs)
    (matrix,) = compiled.program.matrices.values()
    assert matrix.output_shape == (3, 7, 7)


def test_padding_same_conv1d_and_functional():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv1d(2, 3, 5, padding="same")
            self.w = nn.Parameter(torch.randn(4, 3, 3, 3) * 0.3)

        def forward(self, x):  # [B, 2, 9]
            y = self.c(x).unsqueeze(-1).expand(-1, -1, -1, 4)  # [B, 3, 9, 4]
            return F.conv2d(y, self.w, padding="same")

    torch.manual_seed(0)
    compile_and_verify(M().eval(), (torch.randn(2, 2, 9),))


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Conv2d(2, 3, 2, padding="same")),
    lambda: nn.Sequential(nn.Conv2d(2, 3, (3, 4), padding="same")),
    lambda: nn.Sequential(nn.Conv1d(2, 3, 4, padding="same")),
], ids=["even-2d", "even-width", "even-1d"])
def test_padding_same_with_even_kernel_is_xb105_with_location(make):
    model = make()
    shape = (1, 2, 8) if isinstance(model[0], nn.Conv1d) else (1, 2, 8, 8)
    with pytest.raises(CompileError) as info:
        compile_quiet(model, (torch.randn(*shape),))
    assert info.value.code == "XB105"
    assert info.value.location.node == "_0"
    assert info.value.hint


# --------------------------------------------------------------------------- bad input: XB101..XB105


class Sorts(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return torch.sort(y, dim=1)[0]  # marker: torch.sort


class FFT(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.fft.fft(self.fc(x)).real  # marker: torch.fft


class WithEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(10, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.emb(x))  # marker: nn.Embedding


class BadMethod(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x).cumsum(-1)  # marker: Tensor.cumsum


class BadAttribute(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x) * x.T  # marker: x.T


@pytest.mark.parametrize("cls,node,named,marker,x", [
    (Sorts, "sort", "sort", "# marker: torch.sort", torch.randn(1, 3, 6, 6)),
    (FFT, "fft_fft", "fft", "# marker: torch.fft", torch.randn(1, 8)),
    (WithEmbedding, "emb", "Embedding", "# marker: nn.Embedding", torch.tensor([[1, 2, 3]])),
    (BadMethod, "cumsum", "cumsum", "# marker: Tensor.cumsum", torch.randn(1, 8)),
    (BadAttribute, "getattr_1", "'.T'", "# marker: x.T", torch.randn(8, 8)),
], ids=["sort", "fft", "module", "method", "getattr"])
def test_unsupported_op_is_xb103_at_the_users_line(cls, node, named, marker, x):
    with pytest.raises(CompileError) as info:  # torch.export's refusals: tests/test_frontend_export.py
        xb.compile(cls(), (x,), "tiny", frontend="fx")
    err = info.value
    assert err.code == "XB103"
    assert err.location.node == node
    assert named in err.message
    assert_points_here(err.location.source, marker)
    assert f"node '{node}'" in str(err)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        if y.sum() > 0:  # marker: data-dependent if
            return y
        return -y


class IteratesOverTensor(nn.Module):
    def forward(self, x):
        return sum(row for row in x)  # marker: iterates


@pytest.mark.parametrize("cls,marker", [(DataDependent, "# marker: data-dependent if"),
                                        (IteratesOverTensor, "# marker: iterates")])
def test_data_dependent_control_flow_is_xb102_with_a_hint(cls, marker):
    with pytest.raises(CompileError) as info:  # torch.export unrolls the loop over a fixed batch
        xb.compile(cls(), (torch.randn(2, 4),), "tiny", frontend="fx")
    assert info.value.code == "XB102"
    assert "concrete_args" in info.value.hint and "leaf" in info.value.hint
    assert_points_here(info.value.location.source, marker)


@pytest.mark.parametrize("obj", [lambda x: x, torch.jit, "model.py", None], ids=["lambda", "module", "str", "none"])
def test_non_module_is_xb101(obj):
    with pytest.raises(CompileError) as info:
        xb.compile(obj, (torch.randn(1, 3),), "tiny")
    assert info.value.code == "XB101"


def test_untraceable_python_is_xb101():
    class Opaque(nn.Module):
        def forward(self, x):
            return torch.tensor(x.tolist())  # marker: untraceable

    with pytest.raises(CompileError) as info:
        xb.compile(Opaque(), (torch.randn(2, 2),), "tiny")
    assert info.value.code == "XB101"
    assert info.value.hint
    assert_points_here(info.value.location.source, "# marker: untraceable")


def test_wrong_input_shape_is_xb104_quietly(capfd):
    with pytest.raises(CompileError) as info:
        xb.compile(TwoLayers(), (torch.randn(1, 5, 8, 8),), "tiny")
    err = info.value
    assert err.code == "XB104" and err.hint
    assert err.location.node == "conv"
    assert_points_here(err.location.source, "# marker: conv call")
    assert len(err.message.splitlines()) == 1 and "ShapeProp" not in err.message
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("inputs", [[[1.0, 2.0]], "x", (torch.randn(1, 3), 3), None], ids=["list", "str", "int", "none"])
def test_non_tensor_inputs_are_xb104(inputs):
    with pytest.raises(CompileError) as info:
        xb.compile(nn.Linear(3, 2), inputs, "tiny")
    assert info.value.code == "XB104"


def test_tensor_input_without_tuple_is_accepted():
    model = nn.Sequential(nn.Linear(3, 2))
    compiled = compile_quiet(model, torch.randn(2, 3))
    assert xb.verify(compiled, model).ok


class ActivationWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3))

    def forward(self, x):
        return F.conv2d(x, self.w * 2)  # marker: activation weight


class ActivationBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 8))
        self.b = nn.Parameter(torch.randn(4))

    def forward(self, x):
        return F.linear(x, self.w, self.b + 1)


class InputAsWeight(nn.Module):
    def forward(self, x, w):
        return F.conv2d(x, w)


def check_ideal_and_integer(model: nn.Module, x: torch.Tensor, frontend: str) -> xb.CompiledModel:
    """Compile for isaac-like: ideal mode within 1e-4 of the model; compiled again with calibration that
    covers ``x``, integer mode bit-exact against the integer reference. Returns the ideal compile."""
    compiled = compile_quiet(model, (x,), "isaac-like", frontend=frontend)
    report = xb.verify(compiled, model, (x,))
    assert report.ok and report.max_rel <= 1e-4, report.to_dict()
    calibration = torch.cat([x, torch.randn(6, *x.shape[1:], generator=torch.Generator().manual_seed(1))])
    integer = compile_quiet(model, (x,), "isaac-like", frontend=frontend, calibration=calibration)
    report = xb.verify(integer, model, (x,))
    assert report.mode == "integer" and report.ok and sum(c.mismatches for c in report.layers) == 0
    return compiled


class PReLUNet(nn.Module):
    """``nn.PReLU`` with one slope per channel and with one shared slope, and ``F.prelu``."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.PReLU(4)
        self.fc, self.shared = nn.Linear(4 * 6 * 6, 5), nn.PReLU()
        self.slope = nn.Parameter(torch.tensor([0.3]))
        with torch.no_grad():
            self.act.weight.copy_(torch.tensor([0.1, -0.2, 0.5, 1.5]))

    def forward(self, x):
        y = self.shared(self.fc(self.act(self.conv(x)).flatten(1)))
        return F.prelu(y, self.slope)


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_prelu_runs_on_the_host_in_both_front_ends(frontend):
    torch.manual_seed(0)
    compiled = check_ideal_and_integer(PReLUNet().eval(), torch.randn(2, 3, 6, 6), frontend)
    assert [r.op for r in compiled.coverage if "prelu" in r.op] == ["torch.nn.functional.prelu"] * 3


class InstanceNormNet(nn.Module):
    """``nn.InstanceNorm2d`` with and without affine parameters, and an ``nn.InstanceNorm1d`` with running
    statistics (in eval mode those replace the per-sample ones)."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.InstanceNorm2d(4, affine=True)
        self.plain, self.fc = nn.InstanceNorm2d(4), nn.Linear(6, 6)
        self.tracked = nn.InstanceNorm1d(4, track_running_stats=True)
        with torch.no_grad():
            self.norm.weight.copy_(torch.tensor([0.5, 2.0, -1.0, 1.5]))
            self.tracked.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
            self.tracked.running_var.copy_(torch.tensor([1.5, 0.5, 2.0, 1.0]))

    def forward(self, x):
        y = self.plain(torch.relu(self.norm(self.conv(x))))
        return self.tracked(self.fc(y.mean(2)))


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_instance_norm_runs_on_the_host_in_both_front_ends(frontend):
    torch.manual_seed(0)
    compiled = check_ideal_and_integer(InstanceNormNet().eval(), torch.randn(2, 3, 6, 6), frontend)
    assert [r.op for r in compiled.coverage if r.placement == "host" and "norm" in r.op] == \
        ["torch.nn.functional.instance_norm"] * 3


class Spreads(nn.Module):
    """``var`` and ``std`` as methods and functions, over one or several dims, biased and unbiased."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        a = y.var(1, keepdim=True) + y.std() + torch.var(y, dim=(2, 3), unbiased=False, keepdim=True)
        b = torch.std(y, (2, 3), correction=0) + y.var(dim=(2, 3))
        return self.fc(a.mean((2, 3)) * b)


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_var_and_std_run_on_the_host_in_both_front_ends(frontend):
    torch.manual_seed(0)
    compiled = check_ideal_and_integer(Spreads().eval(), torch.randn(2, 3, 6, 6), frontend)
    ops = [r.op.rsplit(".", 1)[-1] for r in compiled.coverage if r.op.rsplit(".", 1)[-1] in ("var", "std")]
    assert sorted(ops) == ["std", "std", "var", "var", "var"]


class PoolValuesOnly(nn.Module):
    """Max pools built with ``return_indices=True`` whose values alone are used."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1)
        self.pool, self.gpool = nn.MaxPool2d(2, return_indices=True), nn.AdaptiveMaxPool2d(1, return_indices=True)

    def forward(self, x):
        y = self.pool(self.conv(x))[0]
        return self.head(y) + self.gpool(y)[0].sum()


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_max_pool_with_return_indices_gives_its_values(frontend):
    torch.manual_seed(0)
    check_ideal_and_integer(PoolValuesOnly().eval(), torch.randn(2, 3, 6, 6), frontend)


class Extremes(nn.Module):
    """``torch.max``/``torch.min`` over a dim (item 0 and ``.values``), over everything, and ``amin``."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        a = torch.max(y, 1, keepdim=True)[0] + y.min(dim=1, keepdim=True).values + y.max() - y.amin()
        return self.fc(y.flatten(2).max(-1)[0] + a.mean((2, 3)))


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_max_and_min_over_a_dim_give_their_values_on_the_host(frontend):
    torch.manual_seed(0)
    check_ideal_and_integer(Extremes().eval(), torch.randn(2, 3, 6, 6), frontend)


class ArgMax(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        values, indices = self.fc(x).max(-1)
        return values, indices


def test_max_over_a_dim_returns_its_indices_when_they_are_read():
    model, x = ArgMax().eval(), torch.randn(5, 4)
    compiled = compile_quiet(model, (x,), frontend="export")
    values, indices = xb.emulate(compiled.netlist, (x,))
    expected = model(x)
    torch.testing.assert_close(values, expected[0].detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(indices, expected[1])


class ZeroChannels(nn.Module):
    """ENet's channel padding: ``torch.cat`` with ``torch.zeros`` sized from the input at run time."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        b, _, h, w = y.size()
        return self.head(torch.cat([y, torch.zeros(b, 2, h, w, dtype=y.dtype, device=y.device)], 1))


def test_zeros_sized_at_run_time_pad_channels_and_stay_integer():
    torch.manual_seed(0)
    model, x = ZeroChannels().eval(), torch.randn(2, 3, 6, 6)
    compiled = compile_quiet(model, (x,), frontend="export")  # symbolic tracing cannot call torch.zeros
    assert any(r.op == "torch.zeros" for r in compiled.coverage)
    x3 = torch.randn(3, 3, 6, 6)  # the batch stays free
    torch.testing.assert_close(xb.emulate(compiled.netlist, (x3,)), model(x3), rtol=1e-5, atol=1e-6)
    integer = compile_quiet(model, (x,), "isaac-like", calibration=torch.cat([x, torch.randn(6, 3, 6, 6)]))
    assert integer.report["fold-pow2-scales"]["host_float"] == []  # zeros join the cat on its grid
    report = xb.verify(integer, model, (x,))
    assert report.mode == "integer" and report.ok and sum(c.mismatches for c in report.layers) == 0


class Casts(nn.Module):
    """``.float()`` on a float and on indices, ``.to(dtype)``, ``.type_as``, ``.to(device)``, a round trip
    through float64."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x).float()
        values, indices = y.flatten(2).max(-1)
        pooled = y.mean((2, 3))
        z = values + indices.float() * 0.01 + pooled.to(torch.float32) + pooled.type_as(x).to(x.device)
        return self.fc(z + y.amax((2, 3)).double().float())


def test_dtype_casts_run_on_the_host_under_export():
    compiled = check_ideal_and_integer(Casts().eval(), torch.randn(2, 3, 6, 6), "export")
    casts = [r for r in compiled.coverage if r.op == "xbcompiler.hostops.cast"]
    assert len(casts) >= 3  # the float64 round trip and the index cast are real conversions


def test_functional_conv_with_computed_weight_is_xb105_under_fx():
    with pytest.raises(CompileError) as info:
        xb.compile(ActivationWeight(), (torch.randn(1, 3, 6, 6),), "tiny", frontend="fx")
    assert info.value.code == "XB105" and info.value.hint
    assert info.value.location.node == "conv2d"
    assert_points_here(info.value.location.source, "# marker: activation weight")


@pytest.mark.parametrize("model,inputs,name", [
    (ActivationWeight(), (torch.randn(2, 3, 6, 6),), "w"),
    (ActivationBias(), (torch.randn(2, 8),), "b"),
], ids=["weight", "bias"])
def test_weights_computed_from_parameters_are_folded_onto_crossbars_under_export(model, inputs, name):
    """``self.w * 2`` and ``self.b + 1`` depend on parameters only: computed once at capture, on crossbars."""
    model = model.eval()
    compiled = compile_quiet(model, inputs)
    assert compiled.netlist.doc.provenance["frontend"]["used"] == "export"
    assert len(compiled.netlist.layers) == 1
    report = xb.verify(compiled, model, inputs)
    assert report.ok and report.max_rel <= 1e-4, report.to_dict()
    with torch.no_grad():  # the compiled layer follows the parameter it was computed from
        getattr(model, name).mul_(-1)
    assert not xb.verify(compiled, model, inputs).ok


@pytest.mark.parametrize("frontend", ["auto", "fx"])
def test_an_input_as_weight_is_xb105(frontend):
    with pytest.raises(CompileError) as info:
        xb.compile(InputAsWeight(), (torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)), "tiny", frontend=frontend)
    assert info.value.code == "XB105"


def test_a_computed_bias_is_xb105_under_fx():
    with pytest.raises(CompileError) as info:
        xb.compile(ActivationBias(), (torch.randn(2, 8),), "tiny", frontend="fx")
    assert info.value.code == "XB105"


def test_matmul_with_3d_parameter_is_xb105():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2, 4, 3))

        def forward(self, x):
            return x @ self.w

    with pytest.raises(CompileError) as info:
        xb.compile(M(), (torch.randn(2, 5, 4),), "tiny")
    assert info.value.code == "XB105"


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_non_zero_padding_mode_is_xb105(mode):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode), nn.ReLU())
    with pytest.raises(CompileError) as info:  # torch.export sees the host F.pad: see test_frontend_export.py
        xb.compile(model, (torch.randn(1, 3, 6, 6),), "tiny", frontend="fx")
    assert info.value.code == "XB105" and mode in info.value.message
    assert info.value.location.node == "_0"


def test_batchnorm_without_running_stats_is_xb103():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(CompileError) as info:
        xb.compile(model, (torch.randn(2, 3, 6, 6),), "tiny")
    assert info.value.code == "XB103" and info.value.hint


def test_custom_conv_subclass_forward_is_traced_through():
    class ScaledConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 0.5

    model = nn.Sequential(ScaledConv(3, 4, 3), nn.ReLU()).eval()
    inputs = (torch.randn(2, 3, 6, 6),)
    gm = trace(model, inputs)
    (conv,) = [gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    assert type(conv) is nn.Conv2d  # the F.conv2d inside the override became a stock crossbar module
    assert any(n.target is operator.mul for n in gm.graph.nodes)  # the override's scaling stays on the host
    compile_and_verify(model, inputs)


# --------------------------------------------------------------------------- the user's model is untouched


def state_bytes(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def test_compile_never_modifies_the_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.train()  # compile works on an eval copy; the user's flags stay as they were
    model[5].eval()
    calls = []
    handles = [model[0].register_forward_hook(lambda m, i, o: calls.append("fwd")),
               model[5].register_forward_pre_hook(lambda m, i: calls.append("pre"))]
    before = state_bytes(model)
    flags = {n: m.training for n, m in model.named_modules()}
    hooks = {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for n, m in model.named_modules()}
    params = [p for p in model.parameters()]
    inputs = (torch.randn(2, 3, 4, 4),)

    with pytest.warns(xb.XBWarning, match=r"hooks on '0', '5' are ignored"):
        compiled = xb.compile(model, inputs, "tiny")

    assert state_bytes(model) == before
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {n: (dict(m._forward_hooks), dict(m._forward_pre_hooks)) for n, m in model.named_modules()} == hooks
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert type(model[0]) is nn.Conv2d and model[0].bias is None  # BN was not folded into the user's conv
    assert calls == []  # compiling runs none of the user's hooks (not even on the traced copy)
    for h in handles:
        h.remove()
    model.eval()
    assert xb.verify(compiled, model, inputs).ok


def test_compile_twice_gives_identical_netlists():
    model, inputs = build("shapes")
    a, b = compile_quiet(model, inputs), compile_quiet(copy.deepcopy(model), inputs)
    assert a.netlist.doc == b.netlist.doc


# --------------------------------------------------------------------------- property: random conv stacks


@st.composite
def conv_stacks(draw):
    """1-3 Conv2d layers with random channels, kernel, stride, padding, dilation and groups dividing channels."""
    cin = draw(st.integers(1, 6))
    size = draw(st.integers(5, 9))
    layers, c, h = [], cin, size
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(1, 3))
        dilation = draw(st.integers(1, 2))
        stride = draw(st.integers(1, 2))
        padding = draw(st.integers(0, dilation * (k - 1)))
        span = dilation * (k - 1) + 1
        if h + 2 * padding < span:
            break
        groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
        cout = groups * draw(st.integers(1, 4))
        layers.append((c, cout, k, stride, padding, dilation, groups))
        h = (h + 2 * padding - span) // stride + 1
        c = cout
    if not layers:
        layers.append((cin, 2, 1, 1, 0, 1, 1))
    bias = draw(st.booleans())
    act = draw(st.sampled_from([nn.ReLU, nn.Identity, nn.Tanh]))
    return cin, size, layers, bias, act


def _stack(cin, layers, bias, act, seed) -> nn.Module:
    torch.manual_seed(seed)
    mods = []
    for c, cout, k, stride, padding, dilation, groups in layers:
        mods += [nn.Conv2d(c, cout, k, stride, padding, dilation, groups, bias=bias), act()]
    return nn.Sequential(*mods).eval()


@pytest.mark.parametrize("target", ["tiny", "prime-like"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_stacks(), seed=st.integers(0, 2**16))
def test_random_conv_stacks_compile_and_verify(target, case, seed):
    cin, size, layers, bias, act = case
    model = _stack(cin, layers, bias, act, seed)
    inputs = (torch.randn(2, cin, size, size, generator=torch.Generator().manual_seed(seed)),)
    compiled = compile_quiet(model, inputs, target)
    compiled.program.verify(compiled.target)
    assert len(compiled.program.matrices) == len(layers)
    for (c, cout, k, _, _, _, groups), m in zip(layers, compiled.program.matrices.values()):
        assert m.weight.shape == (groups, c // groups * k * k, cout // groups)
    report = xb.verify(compiled, model, inputs)
    assert report.ok, report.to_dict()


def test_host_ops_table_is_consistent():
    for name, op in ops.HOST_OPS.items():
        assert op.name == name and callable(op.fn) and op.category
        assert ops.host_name(op.fn) is not None
    assert ops.method_name("view") == "torch.Tensor.view"
    assert ops.method_name("cumsum") is None
    assert ops.host_name(operator.add) == "operator.add"
    assert ops.host_name(torch.sort) is None


# --------------------------------------------------------------------------- docs/operators.md

DOC = ROOT / "docs" / "operators.md"
_BEGIN, _END = "<!-- host-ops:begin (generated from HOST_OPS) -->", "<!-- host-ops:end -->"
_SYMBOLS = {"add": "a + b", "sub": "a - b", "mul": "a * b", "truediv": "a / b", "floordiv": "a // b",
            "pow": "a ** b", "neg": "-a", "matmul": "a @ b (activations)", "mod": "a % b", "getitem": "x[...]",
            "gt": "a > b", "lt": "a < b", "ge": "a >= b", "le": "a <= b", "invert": "~a"}


def _spelling(name: str) -> str:
    prefix, _, short = name.rpartition(".")
    if prefix == "operator":
        return f"`{_SYMBOLS[short]}`"
    if prefix == "torch.Tensor":
        return f"`x.{short}(...)`"
    if prefix == "torch.nn.functional":
        return f"`F.{short}(...)`"
    if name == "builtins.getattr":
        return " ".join(f"`x.{a}`" for a in sorted(ops.GETATTR_ALLOWED))
    return f"`{name}(...)`"


def host_ops_table() -> str:
    """The allow-list as a markdown table, in the order of ``HOST_OPS`` grouped by category."""
    order = list(dict.fromkeys(op.category for op in ops.HOST_OPS.values()))
    lines = ["| category | qualified name (stored in the netlist) | written as |", "|---|---|---|"]
    for category in order:
        lines += [f"| {category} | `{op.name}` | {_spelling(op.name)} |"
                  for op in ops.HOST_OPS.values() if op.category == category]
    return "\n".join(lines)


def test_operators_doc_lists_exactly_the_allow_list():
    """docs/operators.md holds the generated table; XB_UPDATE_GOLDEN=1 rewrites it after HOST_OPS changes."""
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(_BEGIN)
    table, tail = rest.split(_END)
    if os.environ.get("XB_UPDATE_GOLDEN") == "1":
        DOC.write_text(f"{head}{_BEGIN}\n{host_ops_table()}\n{_END}{tail}", encoding="utf-8")
        return
    listed = re.findall(r"^\| [a-z]+ \| `([^`]+)` \|", table, flags=re.MULTILINE)
    assert sorted(listed) == sorted(ops.HOST_OPS), "regenerate with XB_UPDATE_GOLDEN=1"
    assert table.strip() == host_ops_table(), "regenerate with XB_UPDATE_GOLDEN=1"


def test_operators_doc_covers_modules_removed_ops_and_codes():
    text = DOC.read_text(encoding="utf-8")
    for cls in [*ops.MODULE_TO_FUNCTION, *ops.REMOVED_MODULES, *ops.CROSSBAR_MODULES]:
        assert f"nn.{cls.__name__}" in text, cls
    for name in {*ops.REMOVED_FUNCTIONS.values(), *ops.REMOVED_METHODS}:
        assert name in text
    for code in ("XB101", "XB102", "XB103", "XB104", "XB105"):
        assert f"### {code}" in text, code
