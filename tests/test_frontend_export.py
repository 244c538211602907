"""The torch.export front end, the front-end choice, MAC coverage and the generated operator docs.

The export front end must give the canonical graph the fx front end gives: the zoo compiles to the
same crossbar layers and arrays either way. The models symbolic tracing refuses (tests/models_wild.py)
compile through it and verify in ideal mode and bit-exactly in integer mode.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import msgspec
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import xbcompiler as xb
from tests.models import MODELS
from tests.models_wild import WILD_MODELS
from xbcompiler import CompileError
from xbcompiler.frontend import aten, ops
from xbcompiler.frontend import export as export_module
from xbcompiler.frontend.capture import capture
from xbcompiler.frontend.coverage import coverage, crossbar_share, mac_shares
from xbcompiler.hostops import HOST_OPS
from xbcompiler.ir import annotations as ann

THIS_FILE = Path(__file__).name


def compile_quiet(model, inputs, target="tiny", **kwargs) -> xb.CompiledModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, inputs, target, **kwargs)


def line_of(text: str) -> int:
    lines = [i for i, ln in enumerate(Path(__file__).read_text().splitlines(), 1) if ln.rstrip().endswith(text)]
    assert len(lines) == 1, (text, lines)
    return lines[0]


def assert_points_here(source: str | None, marker: str) -> None:
    assert source is not None and THIS_FILE in source and f"line {line_of(marker)}," in source, source


# --------------------------------------------------------------------------- the zoo: same netlists


def _layers(compiled: xb.CompiledModel) -> list:
    return msgspec.to_builtins(compiled.netlist.doc.layers)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_compiles_to_the_same_layers_with_either_front_end(name):
    case = MODELS[name]
    model, x = case.build(), case.example_input()
    exported = compile_quiet(model, (x,), "isaac-like", pipeline="fully-folded", frontend="export")
    traced = compile_quiet(model, (x,), "isaac-like", pipeline="fully-folded", frontend="fx")
    assert exported.netlist.doc.provenance["frontend"] == {"used": "export", "requested": "export"}
    assert traced.netlist.doc.provenance["frontend"] == {"used": "fx", "requested": "fx"}
    assert _layers(exported) == _layers(traced)
    assert exported.netlist.doc.crossbars == traced.netlist.doc.crossbars
    assert exported.netlist.arrays.keys() == traced.netlist.arrays.keys()
    for key, value in traced.netlist.arrays.items():
        assert (exported.netlist.arrays[key] == value).all(), key
    xbar = lambda c: [(n.name, n.target) for n in c.netlist.doc.nodes if n.op == "xbar"]
    assert xbar(exported) == xbar(traced)
    assert exported.report.get("fold-batchnorm") == traced.report.get("fold-batchnorm")
    report = xb.verify(exported, model, (x,))
    assert report.ok, report.to_dict()


def test_auto_is_the_default_and_uses_export():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    compiled = compile_quiet(model, (torch.randn(2, 3, 6, 6),))
    assert compiled.netlist.doc.provenance["frontend"] == {"used": "export", "requested": "auto"}
    assert compiled.report["fold-batchnorm"]["folded"] == 1


# --------------------------------------------------------------------------- the refused models


@pytest.mark.parametrize("name", sorted(WILD_MODELS))
def test_wild_model_compiles_and_verifies_in_ideal_mode(name):
    case = WILD_MODELS[name]
    model, x = case.build(), case.example_input()
    compiled = compile_quiet(model, (x,), "isaac-like")
    assert compiled.netlist.doc.provenance["frontend"]["used"] == "export"
    report = xb.verify(compiled, model)
    assert report.ok and report.max_rel <= 1e-4, report.to_dict()
    # every weight matrix of the model sits on crossbars, once
    weights = [p for p in model.parameters() if p.dim() >= 2]
    assert len(compiled.netlist.layers) == len(weights)
    assert compiled.netlist.summary["weights"] == sum(p.numel() for p in weights)


@pytest.mark.parametrize("name", sorted(WILD_MODELS))
def test_wild_model_is_bit_exact_in_integer_mode(name):
    case = WILD_MODELS[name]
    model, x = case.build(), case.example_input()
    calibration = torch.randn(8, *case.input_shape[1:], generator=torch.Generator().manual_seed(5))
    compiled = compile_quiet(model, (x,), "isaac-like", calibration=calibration)
    report = xb.verify(compiled, model)
    assert report.mode == "integer" and report.ok, report.to_dict()
    assert sum(c.mismatches for c in report.layers) == 0


def test_transformer_encoder_compiles_under_both_front_ends_with_the_same_layers():
    """The encoder is rewritten before capture (frontend/rewrite_attention.py), so fx traces it too."""
    case = WILD_MODELS["transformer_encoder"]
    model, x = case.build(), case.example_input()
    by_frontend = {fe: compile_quiet(model, (x,), frontend=fe) for fe in ("fx", "auto")}
    assert [layer.name for layer in by_frontend["fx"].netlist.layers] == \
        [layer.name for layer in by_frontend["auto"].netlist.layers]
    rows = by_frontend["auto"].coverage
    placements = {r.operator: r.placement for r in rows if r.macs}
    assert placements == {"Linear": "crossbar", "torch.nn.functional.scaled_dot_product_attention": "host"}


@pytest.mark.parametrize("name", ["upsample_gelu_norm", "super_resolution", "masked_attention"])
def test_new_host_operators_work_in_the_fx_front_end_too(name):
    case = WILD_MODELS[name]
    model, x = case.build(), case.example_input()
    compiled = compile_quiet(model, (x,), frontend="fx")
    assert xb.verify(compiled, model).ok


# --------------------------------------------------------------------------- export specifics


class MaskInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):  # [B, 6, 6]: a mask built from constants becomes a stored constant
        causal = torch.ones(6, 6).triu().bool()
        return self.fc(x).masked_fill(causal, 0.0) @ x.transpose(1, 2)


def test_values_built_from_constants_are_folded_into_constants():
    torch.manual_seed(0)
    model, x = MaskInForward().eval(), torch.randn(2, 6, 6)
    gm = capture(model, (x,), "export").gm
    assert not any(n.op == "call_function" and n.target in (torch.ones,) for n in gm.graph.nodes)
    assert any(n.op == "get_attr" and n.target.startswith("_xb_constant_") for n in gm.graph.nodes)
    compiled = compile_quiet(model, (x,), frontend="export")
    assert xb.verify(compiled, model, (x,)).ok


class SizeView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))


def test_batch_stays_dynamic_from_an_example_of_one():
    torch.manual_seed(0)
    model = SizeView().eval()
    compiled = compile_quiet(model, (torch.randn(1, 2, 4, 4),), frontend="export")
    assert any(n.target == "torch.Tensor.size" for n in compiled.netlist.doc.nodes)
    x = torch.randn(3, 2, 4, 4)
    assert xb.verify(compiled, model, (x,)).ok
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_padding_mode_is_a_host_pad_under_export(mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode), nn.ReLU()).eval()
    x = torch.randn(2, 3, 6, 6)
    compiled = compile_quiet(model, (x,), frontend="export")
    assert "torch.nn.functional.pad" in {n.target for n in compiled.netlist.doc.nodes}
    assert len(compiled.netlist.layers) == 1 and xb.verify(compiled, model, (x,)).ok


def test_module_nodes_carry_fx_names_and_annotations():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act, self.drop = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x):
            return self.drop(self.act(self.conv(x))) @ self.w

    gm = capture(Net().eval(), (torch.randn(2, 3, 6, 6),), "export").gm
    nodes = {n.name: n for n in gm.graph.nodes}
    assert ann.get(nodes["conv"], ann.Source) == ann.Source("conv")
    assert ann.get(nodes["act"], ann.FromModule) == ann.FromModule("act")
    assert nodes["act"].target is F.relu
    assert ann.get(nodes["matmul"], ann.LayerKind) == ann.LayerKind("matmul")
    assert ann.get(gm, ann.Removed).nodes == (ann.RemovedNode("drop", "drop", "removed in inference"),)


# --------------------------------------------------------------------------- refusals and fallback


class Sorts(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sort(self.fc(x), dim=1)[0]  # marker: export sort


class Inner(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, -1)  # marker: export cumsum


class WithInner(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.inner = nn.Linear(4, 4), Inner()

    def forward(self, x):
        return self.inner(self.fc(x))


class WithEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(10, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.emb(x))  # marker: export embedding


@pytest.mark.parametrize("cls,x,marker,named,hint", [
    (Sorts, torch.randn(2, 4), "# marker: export sort", "sort", "outside the netlist"),
    (WithInner, torch.randn(2, 4), "# marker: export cumsum", "in module 'inner' (Inner)", "lower-triangular"),
    (WithEmbedding, torch.tensor([[1, 2], [3, 4]]), "# marker: export embedding", "module type Embedding ('emb')",
     "one-hot"),
], ids=["sort", "in-module", "module"])
@pytest.mark.parametrize("frontend", ["export", "auto"])
def test_refusal_names_module_line_and_alternative(cls, x, marker, named, hint, frontend):
    with pytest.raises(CompileError) as info:
        compile_quiet(cls().eval(), (x,), frontend=frontend)
    err = info.value
    assert err.code == "XB103" and named in err.message and hint in err.hint
    assert_points_here(err.location.source, marker)
    if frontend == "auto":  # the other front end's failure is named too
        assert any("also failed" in d for d in err.details)


def test_auto_falls_back_to_fx_and_records_why(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("simulated export failure")

    monkeypatch.setattr(export_module, "_run_export", fail)
    model = nn.Sequential(nn.Linear(3, 2))
    compiled = compile_quiet(model, (torch.randn(2, 3),))
    record = compiled.netlist.doc.provenance["frontend"]
    assert record["used"] == "fx" and record["requested"] == "auto"
    assert record["export_error"].startswith("XB101") and "simulated export failure" in record["export_error"]
    with pytest.raises(CompileError) as info:
        compile_quiet(model, (torch.randn(2, 3),), frontend="export")
    assert info.value.code == "XB101"


def test_data_dependent_branch_is_xb102_under_export():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            y = self.fc(x)
            if y.sum() > 0:
                return y
            return -y

    with pytest.raises(CompileError) as info:
        compile_quiet(Branch(), (torch.randn(2, 4),), frontend="export")
    assert info.value.code == "XB102"


class _InPlace(nn.Module):
    """``nn.ReLU(inplace=True)`` feeding two branches, an in-place add and ``torch.relu_``; symbolic
    tracing cannot iterate the split (as in pytorchcv's MixNet), so only torch.export captures it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True)
        self.branch, self.fc = nn.Conv2d(4, 4, 1), nn.Linear(4, 3)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        y = torch.cat([part for part in torch.split(y, 2, dim=1)], 1)
        z = self.branch(y)
        z.add_(y)
        return self.fc(torch.relu_(z).mean((2, 3)))


class _InPlaceOnView(nn.Module):
    """In-place activations on views nothing else reads: a slice, and a layer output made contiguous."""

    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.ELU(inplace=True), nn.Linear(4, 3)

    def forward(self, x):
        y = self.act(self.conv(x).contiguous())
        return self.fc(torch.relu_(y[:, :, 1:]).mean((2, 3)))


@pytest.mark.parametrize("cls", [_InPlace, _InPlaceOnView])
def test_in_place_operators_compile_as_their_out_of_place_forms(cls):
    model = cls().eval()
    compiled = compile_quiet(model, (torch.randn(2, 3, 6, 6),), frontend="auto")
    assert compiled.netlist.doc.provenance["frontend"]["used"] == "export"
    gm = capture(model, (torch.randn(2, 3, 6, 6),), "export").gm
    names = {getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes if n.op == "call_function"}
    assert "relu" in names and not any(name.endswith("_") for name in names), names
    report = xb.verify(compiled, model)
    assert report.ok and report.max_rel <= 1e-4, report.to_dict()


class _WriteAfterView(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        a = self.fc(x)
        view = a[:, :2]
        a.relu_()  # the view sees the write
        return view * 2


class _WriteThroughView(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        a = self.fc(x)
        a[:, :2].relu_()  # writes a
        return a * 2


@pytest.mark.parametrize("cls", [_WriteAfterView, _WriteThroughView])
def test_in_place_write_seen_through_a_view_is_refused(cls):
    model = cls().eval()
    with pytest.raises(CompileError) as info:
        compile_quiet(model, (torch.randn(2, 4),), frontend="export")
    assert info.value.code == "XB103" and "in place" in str(info.value) and "x.relu(" in info.value.hint


class Unpooling(nn.Module):
    """SegNet-style max unpooling: ``nn.MaxPool2d(return_indices=True)`` and ``nn.MaxUnpool2d``, and the
    functional forms with an overlapping window and an explicit output size."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1)
        self.pool, self.unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)

    def forward(self, x):
        y = self.conv(x)
        values, indices = self.pool(y)
        z, inner = F.max_pool2d(values, 3, stride=1, padding=1, return_indices=True)
        u = F.max_unpool2d(z, inner, 3, stride=1, padding=1, output_size=values.shape[-2:])
        return self.head(self.unpool(u, indices) + y)


def test_max_unpooling_compiles_under_export_and_is_bit_exact_in_integer_mode():
    torch.manual_seed(0)
    model, x = Unpooling().eval(), torch.randn(2, 3, 6, 6)
    compiled = compile_quiet(model, (x,), frontend="auto")
    assert compiled.netlist.doc.provenance["frontend"]["used"] == "export"
    assert sum(r.op == "xbcompiler.hostops.max_unpool2d" for r in compiled.coverage) == 2
    report = xb.verify(compiled, model, (x,))
    assert report.ok and report.max_rel <= 1e-5, report.to_dict()
    integer = compile_quiet(model, (x,), calibration=torch.cat([x, torch.randn(6, 3, 6, 6)]))
    report = xb.verify(integer, model, (x,))
    assert report.mode == "integer" and report.ok and sum(c.mismatches for c in report.layers) == 0
    with pytest.raises(CompileError) as info:
        compile_quiet(model, (x,), frontend="fx")
    assert info.value.code == "XB103" and "--frontend export" in info.value.hint


def test_unknown_front_end_is_xb106():
    with pytest.raises(CompileError) as info:
        xb.compile(nn.Linear(3, 2), (torch.randn(2, 3),), "tiny", frontend="dynamo")
    assert info.value.code == "XB106" and "auto" in info.value.hint


def test_einsum_with_a_parameter_is_refused_as_host_weight():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3))

        def forward(self, x):
            return torch.einsum("bi,ij->bj", x, self.w)

    for frontend in ("export", "fx"):
        with pytest.raises(CompileError) as info:
            compile_quiet(M(), (torch.randn(2, 4),), frontend=frontend)
        assert info.value.code == "XB105" and "F.linear" in info.value.hint


# --------------------------------------------------------------------------- MAC coverage


class Products(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, groups=2)  # [B, 4, 4, 4]: 64 outputs x K = 1 * 9
        self.fc = nn.Linear(4, 5)  # on [B, 4, 4, 4]: 80 outputs x K = 4

    def forward(self, x):  # [B, 2, 6, 6]
        y = self.conv(x)
        z = self.fc(y)  # [B, 4, 4, 5]
        p = z @ z.transpose(-2, -1)  # [B, 4, 4, 4] x K = 5
        q = torch.einsum("bcij,bcjk->bcik", y, y)  # 4 * 4 * 4 * 4 index points
        a = F.scaled_dot_product_attention(y, y, y)  # [B, 4, L=4, E=4], S = 4: 4 * 4 * 4 * (4 + 4)
        return p + q + a


@pytest.mark.parametrize("frontend", ["export", "fx"])
def test_coverage_counts_macs_per_sample(frontend):
    torch.manual_seed(0)
    rows = coverage(capture(Products().eval(), (torch.randn(3, 2, 6, 6),), frontend).gm)
    shares = {m.operator: (m.crossbar, m.host) for m in mac_shares(rows)}
    matmul = "torch.matmul" if frontend == "export" else "operator.matmul"
    assert shares == {"Conv2d": (64 * 9, 0), "Linear": (80 * 4, 0), matmul: (0, 64 * 5),
                      "torch.einsum": (0, 256), "torch.nn.functional.scaled_dot_product_attention": (0, 512)}
    total = 576 + 320 + 320 + 256 + 512
    assert crossbar_share(rows) == pytest.approx((576 + 320) / total)


def test_cli_coverage_prints_macs_and_the_front_end(tmp_path):
    model_file = tmp_path / "m.py"
    model_file.write_text("import torch\nfrom tests.models_wild import WILD_MODELS\nINPUT_SHAPE = (1, 10, 64)\n"
                          "def make():\n    return WILD_MODELS['transformer_encoder'].build()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "xbcompiler.cli", "compile", f"{model_file}:make", "--target", "tiny",
                          "--coverage"], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert "front end: export" in out.stdout
    assert re.search(r"MACs on crossbars: [\d,]+ of [\d,]+ \(9\d\.\d\d%\)", out.stdout), out.stdout
    bad = subprocess.run([sys.executable, "-m", "xbcompiler.cli", "compile", f"{model_file}:make", "--target", "tiny",
                          "--coverage", "--frontend", "nope"], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=False)
    assert bad.returncode == 2 and "XB106" in bad.stdout + bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- docs/operators.md

DOC = ROOT / "docs" / "operators.md"
_ATEN = ("<!-- aten-ops:begin (generated from ATEN_OPS) -->", "<!-- aten-ops:end -->")
_ALTERNATIVES = ("<!-- alternatives:begin (generated from ALTERNATIVES) -->", "<!-- alternatives:end -->")


def aten_table() -> str:
    """Every accepted ATen operator with its placement and what it becomes, by placement then name."""
    order = {"crossbar": 0, "host": 1, "removed": 2, "graph": 3}
    lines = ["| ATen operator | placement | becomes |", "|---|---|---|"]
    for rule in sorted(aten.ATEN_OPS.values(), key=lambda r: (order[r.placement], r.op)):
        becomes = f"`{rule.becomes}`" if rule.placement == "host" else rule.becomes
        lines.append(f"| `{rule.op}` | {rule.placement} | {becomes} |")
    return "\n".join(lines)


def alternatives_table() -> str:
    lines = ["| not supported | use instead |", "|---|---|"]
    lines += [f"| {a.shown} | {a.instead} |" for a in ops.ALTERNATIVES]
    return "\n".join(lines)


@pytest.mark.parametrize("markers,generate", [(_ATEN, aten_table), (_ALTERNATIVES, alternatives_table)],
                         ids=["aten-ops", "alternatives"])
def test_operators_doc_tables_are_generated_from_the_code(markers, generate):
    """XB_UPDATE_GOLDEN=1 rewrites the tables after ATEN_OPS or ALTERNATIVES change."""
    begin, end = markers
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(begin)
    table, tail = rest.split(end)
    if os.environ.get("XB_UPDATE_GOLDEN") == "1":
        DOC.write_text(f"{head}{begin}\n{generate()}\n{end}{tail}", encoding="utf-8")
        return
    assert table.strip() == generate(), "regenerate with XB_UPDATE_GOLDEN=1"


def test_aten_doc_lists_every_accepted_operator():
    table = DOC.read_text(encoding="utf-8").split(_ATEN[0])[1].split(_ATEN[1])[0]
    listed = re.findall(r"^\| `(aten\.[^`]+)` \|", table, flags=re.MULTILINE)
    assert sorted(listed) == sorted(aten.ATEN_OPS)


def test_aten_table_names_only_allow_listed_host_ops():
    for rule in aten.ATEN_OPS.values():
        assert rule.placement in ("crossbar", "host", "removed", "graph"), rule
        assert (rule.convert is not None) == (rule.placement in ("crossbar", "host")), rule
        if rule.placement == "host":
            assert rule.becomes in HOST_OPS, rule
    assert aten.rule_for(torch.ops.aten.add.Tensor).becomes == "operator.add"
    assert aten.rule_for(torch.ops.aten.relu.default).becomes == "torch.nn.functional.relu"
    assert aten.rule_for(torch.ops.aten.sort.default) is None


def test_every_zoo_aten_operator_is_in_the_table():
    """The ATen operators the zoo exports to are all accepted (the table is not narrower than the zoo)."""
    seen = set()
    for case in list(MODELS.values())[:6]:
        program = torch.export.export(case.build(), (case.example_input(),), strict=False)
        seen |= {n.target for n in program.graph.nodes if isinstance(n.target, torch._ops.OpOverload)}
    assert all(aten.rule_for(t) is not None for t in seen), [str(t) for t in seen if aten.rule_for(t) is None]
