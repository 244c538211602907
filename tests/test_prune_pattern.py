"""Pattern pruning (PCNN, background §4.3): pattern sets, the exact projection, the flow, the
``group-pattern-columns`` layout and the netlist's pattern table and per-crossbar SPM."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import xbcompiler as xb
from passes.group_pattern_columns import cover, infer_patterns, kernel_supports
from xbcompiler.cli import main
from xbcompiler.datasets import digits
from xbcompiler.diagnostics import CompileError
from xbcompiler.netlist import generated_schema, schema
from xbcompiler.prune.pattern import (
    PATTERN_PIPELINE,
    PatternConstraint,
    PatternSet,
    PatternSettings,
    extract_patterns,
    group_columns,
    pattern_ids,
    project_patterns,
    prune_patterns,
    topn_masks,
)

PLANTED = torch.tensor([[1, 1, 0, 1, 1, 0, 0, 0, 0], [0, 1, 0, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0, 1, 1],
                        [1, 0, 1, 0, 1, 0, 0, 0, 1]], dtype=torch.bool)


def planted_conv(c_in: int, c_out: int, patterns: torch.Tensor, tile: int | None, seed: int) -> nn.Conv2d:
    """A conv whose kernels keep one pattern each: shared by ``tile`` consecutive output channels, or free."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    rows = c_out if tile is None else -(-c_out // tile)
    ids = torch.randint(0, len(patterns), (rows, c_in), generator=g)
    if tile is not None:
        ids = ids.repeat_interleave(tile, 0)[:c_out]
    with torch.no_grad():
        conv.weight.mul_(patterns[ids].reshape(c_out, c_in, 3, 3))
    return conv


def planted_net(tile: int | None = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), planted_conv(32, 48, PLANTED, tile, seed),
                        nn.ReLU(), planted_conv(48, 40, PLANTED[:3], tile, seed + 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(40, 10))
    return net.eval()


# --- pattern sets and the projection ---------------------------------------------------------------------------

def test_extraction_finds_the_planted_patterns_most_frequent_first():
    g = torch.Generator().manual_seed(3)
    ids = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)[torch.randperm(100, generator=g)]
    big = PLANTED[ids].reshape(10, 10, 3, 3).float() * (1 + torch.rand(10, 10, 3, 3, generator=g))
    noise = 0.1 * torch.rand(10, 10, 3, 3, generator=g)
    found = extract_patterns([big + noise], n=4, n_patterns=3)
    assert found.n == 4
    assert torch.equal(found.masks, PLANTED[:3])
    assert found.positions()[0] == (0, 1, 3, 4)
    assert torch.equal(topn_masks(big + noise, 4).reshape(100, 9), PLANTED[ids])


@st.composite
def projection_cases(draw):
    o, i = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    n = draw(st.integers(1, 5))
    codes = draw(st.lists(st.sampled_from([c for c in range(512) if c.bit_count() == n]), min_size=1,
                          max_size=3, unique=True))
    masks = torch.tensor([[bool(c >> p & 1) for p in range(9)] for c in codes])
    values = draw(st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=o * i * 9, max_size=o * i * 9))
    share = None
    if draw(st.booleans()):
        share = torch.tensor(draw(st.lists(st.integers(0, 1), min_size=o, max_size=o)))
        share = torch.unique(share, return_inverse=True)[1]
    return torch.tensor(values).reshape(o, i, 3, 3), PatternSet((3, 3), masks), share


@settings(max_examples=150, deadline=None)
@given(projection_cases())
def test_projection_is_exact_against_brute_force(case):
    """No assignment of set patterns (shared within a sharing group) is closer than the projection."""
    w, patterns, share = case
    o, i = w.shape[:2]
    proj = project_patterns(w, patterns, share)
    ids = pattern_ids(w, patterns, share)
    assert torch.equal(proj != 0, (proj != 0) & patterns.masks[ids].reshape(w.shape))  # inside its patterns
    if share is not None:
        assert all(len(set(ids[share == t, c].tolist())) == 1 for t in share.unique() for c in range(i))
    groups = share.tolist() if share is not None else list(range(o))
    n_groups = max(groups) + 1
    best = min(
        float(((w - w * patterns.masks[torch.tensor(choice).reshape(n_groups, i)[groups]].reshape(w.shape))
               .double() ** 2).sum())
        for choice in itertools.product(range(len(patterns.masks)), repeat=n_groups * i))
    got = float(((w - proj).double() ** 2).sum())
    assert got == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert torch.equal(w, case[0])  # not modified


def test_constraint_freeze_keeps_the_projected_structure():
    w = planted_conv(4, 6, PLANTED, None, 0).weight.detach() + 0.01
    pset = PatternSet((3, 3), PLANTED)
    c = PatternConstraint({"w": pset})
    keep = c.freeze("w", w)
    later = torch.randn_like(w)
    assert torch.equal(keep(later) != 0, c.project("w", w) != 0)
    assert torch.equal(c.project("w", w), project_patterns(w, pset))


# --- the layout pass ----------------------------------------------------------------------------------------

def test_pass_reads_patterns_and_groups_columns_by_them():
    conv = planted_conv(8, 32, PLANTED, None, 1)
    weight = conv.weight.detach().numpy().reshape(32, -1).T  # [K, N]
    support = kernel_supports(weight, 8, 9)
    table = infer_patterns(support)
    assert sorted(table) == sorted(tuple(np.flatnonzero(p).tolist()) for p in PLANTED.numpy())
    rounded = np.zeros(9, dtype=bool)
    rounded[[4, 5]] = True  # a kernel that lost weights to rounding keeps a pattern of the table
    assert cover(rounded, table) in table and set(cover(rounded, table)) >= {4, 5}
    odd = np.zeros(9, dtype=bool)
    odd[[0, 8]] = True
    assert cover(odd, table) == (0, 2, 4, 8)  # PLANTED[3]
    odd[1] = True
    assert cover(odd, table) == (0, 1, 8)  # no pattern holds it: its own union
    shuffled = np.concatenate([support[::2], support[1::2]])  # identical rows far apart
    twins = np.concatenate([shuffled, shuffled])
    tiles = group_columns(twins, 2)
    assert all(len(t) == 2 and np.array_equal(twins[t[0]], twins[t[1]]) for t in tiles)


def test_compile_saves_crossbars_and_stays_exact(tmp_path):
    net = planted_net()
    x = torch.rand(2, 3, 8, 8)
    dense = xb.compile(net, (x,), "isaac-like", "fully-folded")
    pattern = xb.compile(net, (x,), "isaac-like", PATTERN_PIPELINE)
    by_name = {layer.name: layer.crossbars for layer in pattern.netlist.layers}
    dense_by_name = {layer.name: layer.crossbars for layer in dense.netlist.layers}
    assert sum(by_name.values()) < sum(dense_by_name.values())
    # 16 output channels per crossbar share their pattern per input channel: 4 rows per channel
    conv2 = pattern.netlist.layers[1]
    assert conv2.patterns is not None and all(len(p) == 4 for p in conv2.patterns)
    assert by_name[conv2.name] == 3 and dense_by_name[conv2.name] == 9  # 3 tiles x 32 * 4 rows
    for x_ in pattern.netlist.layer_crossbars(conv2):
        assert x_.spm is not None and len(x_.spm) == 32
    pattern.save(tmp_path / "n")
    loaded = xb.load_netlist(tmp_path / "n")
    assert torch.allclose(xb.emulate(loaded, x), net(x), atol=1e-5)
    assert torch.allclose(xb.emulate(loaded, x, literal=True), net(x), atol=1e-5)
    assert xb.verify(loaded, net, (x,)).ok
    assert "group-pattern-columns" in loaded.doc.provenance


def test_free_patterns_get_union_rows_and_stay_exact():
    """Per-kernel patterns (no sharing): tiles take unions, appended to the table; still exact."""
    net = planted_net(tile=None)
    x = torch.rand(2, 3, 8, 8)
    compiled = xb.compile(net, (x,), "isaac-like", PATTERN_PIPELINE)
    for layer in compiled.netlist.layers:
        if layer.patterns is None:
            continue
        for x_ in compiled.netlist.layer_crossbars(layer):
            held = compiled.netlist.crossbar_cells(x_.id)
            assert held.shape == (x_.rows, x_.cols)
    assert torch.allclose(compiled(x), net(x), atol=1e-5)


def test_dead_output_channels_leave_no_crossbar():
    """A tile whose 16 output channels are all zero needs no crossbar: its outputs are the bias."""
    net = planted_net()
    with torch.no_grad():
        net[2].weight[16:32] = 0
    x = torch.rand(2, 3, 8, 8)
    compiled = xb.compile(net, (x,), "isaac-like", PATTERN_PIPELINE)
    layer = compiled.netlist.layers[1]
    assert layer.crossbars == 2 and layer.fanin[16:32] == [0] * 16
    assert torch.allclose(compiled(x), net(x), atol=1e-5)


def test_quantised_pattern_netlist_is_bit_exact(tmp_path):
    net = planted_net()
    x = torch.rand(2, 3, 8, 8)
    compiled = xb.compile(net, (x,), "isaac-like", PATTERN_PIPELINE, calibration=torch.rand(16, 3, 8, 8))
    assert compiled.summary["crossbars"] < xb.compile(net, (x,), "isaac-like", "fully-folded").summary["crossbars"]
    compiled.save(tmp_path / "q")
    report = xb.verify(xb.load_netlist(tmp_path / "q"), net, (x,), mode="integer")
    assert report.ok and report.exact


# --- the netlist: schema and load-time checks ------------------------------------------------------------------

def test_schema_has_the_pattern_fields():
    assert schema() == generated_schema()
    defs = schema()["$defs"]
    assert "spm" in defs["Crossbar"]["properties"] and "patterns" in defs["Layer"]["properties"]


def _tampered(tmp_path: Path, edit) -> Path:
    net = planted_net()
    x = torch.rand(2, 3, 8, 8)
    xb.compile(net, (x,), "isaac-like", PATTERN_PIPELINE).save(tmp_path / "good")
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "good", bad)
    doc = json.loads((bad / "netlist.json").read_text())
    edit(doc)
    (bad / "netlist.json").write_text(json.dumps(doc))
    return bad


def _first_pattern_crossbar(doc) -> dict:
    layer = next(layer for layer in doc["layers"] if "patterns" in layer)
    return doc["crossbars"][layer["first_crossbar"]]


def test_tampered_spm_index_is_refused(tmp_path):
    def edit(doc):
        x = _first_pattern_crossbar(doc)
        channel, k = x["spm"][0]
        x["spm"][0] = [channel, (k + 1) % 4]

    with pytest.raises(CompileError) as err:
        xb.load_netlist(_tampered(tmp_path, edit))
    assert err.value.code == "XB350"


@pytest.mark.parametrize("edit,code", [
    (lambda doc: _first_pattern_crossbar(doc)["spm"].__setitem__(0, [0, 999]), "XB510"),
    (lambda doc: _first_pattern_crossbar(doc).pop("spm"), "XB510"),
    (lambda doc: next(la for la in doc["layers"] if "patterns" in la)["patterns"].__setitem__(0, [4, 1, 0, 3]),
     "XB510"),
])
def test_malformed_pattern_records_are_refused(tmp_path, edit, code):
    with pytest.raises(CompileError) as err:
        xb.load_netlist(_tampered(tmp_path, edit))
    assert err.value.code == code


# --- the flow -----------------------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 24, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(24, 24, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_prune_patterns_leaves_n_nonzeros_in_a_set_pattern_per_kernel():
    torch.manual_seed(0)
    split = digits(0)
    model = SmallCNN()
    train, val = (split.x_train[:600], split.y_train[:600]), (split.x_test[:200], split.y_test[:200])
    lines = []
    s = PatternSettings(nonzeros=(4, 2), n_patterns=4, max_drop=100.0, admm_epochs=1, finetune_epochs=1,
                        progress=False, batch_size=64)
    outcome = prune_patterns(model, "isaac-like", train, val, s, log=lines.append)
    assert any(line.startswith("n=2") for line in lines)
    pruned = {r.param for r in outcome.layers}
    assert pruned == {"features.2.weight", "features.4.weight"}  # the first and the last (fc) stay dense
    assert (model.features[0].weight != 0).all()
    for row, conv in zip(outcome.layers, (model.features[2], model.features[4])):
        w = conv.weight.detach()
        codes = {tuple(m.tolist()) for m in (w != 0).reshape(-1, 9)}
        assert all(sum(c) == 2 for c in codes) and len(codes) <= 4
        assert row.kept == w.numel() // 9 * 2
        assert row.crossbars <= row.crossbars_dense
    assert outcome.layers[1].crossbars < outcome.layers[1].crossbars_dense  # 216 rows -> 48 rows per column tile
    compiled = xb.compile(model, (train[0][:2],), "isaac-like", PATTERN_PIPELINE)
    assert compiled.summary["crossbars"] < xb.compile(model, (train[0][:2],), "isaac-like",
                                                      "fully-folded").summary["crossbars"]
    assert torch.allclose(compiled(train[0][:4]), model(train[0][:4]), atol=1e-4)
    quantised = xb.compile(model, (train[0][:2],), "isaac-like", PATTERN_PIPELINE, calibration=train[0][:64])
    report = xb.verify(quantised.netlist, model, (train[0][:8],), mode="integer")
    assert report.ok and report.exact


MODELS = Path(__file__).parent / "data" / "prune_models.py"


def test_xbc_prune_grain_pattern_writes_a_verified_pattern_netlist(tmp_path, capsys):
    out = tmp_path / "pruned"
    status = main(["prune", f"{MODELS}:digits_cnn", "--target", "isaac-like", "--train-epochs", "2",
                   "--pipeline", "fully-folded", "--grain", "pattern", "--nonzeros", "2", "--relax-epochs", "1",
                   "--epochs", "1", "--max-drop", "100", "-o", str(out), "--json", "--quiet"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["verify_ok"] and summary["verify_integer_exact"] and summary["settings"]["nonzeros"] == [2]
    netlist = xb.load_netlist(out)
    assert summary["pruned_crossbars"] == netlist.summary["crossbars"] < summary["dense_crossbars"]
    assert any(layer.patterns for layer in netlist.layers)


@pytest.mark.parametrize("flags, message", [
    (["--grain", "pattern"], "needs --pipeline fully-folded"),
    (["--grain", "pattern", "--pipeline", "fully-folded", "--sparsity", "0.5"], "--sparsity does not apply"),
    (["--grain", "pattern", "--pipeline", "fully-folded", "--nonzeros", "4,x"], "bad --nonzeros"),
    (["--grain", "pattern", "--pipeline", "fully-folded", "--nonzeros", "0"], "bad --nonzeros"),
])
def test_xbc_prune_grain_pattern_refuses_bad_flags(tmp_path, capsys, flags, message):
    out = tmp_path / "pruned"
    assert main(["prune", f"{MODELS}:digits_cnn", "--target", "isaac-like", *flags, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "XB003" in err and message in err
    assert not out.exists()
