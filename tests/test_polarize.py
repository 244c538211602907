"""FORMS polarization (issue 12): the projection, the ADMM trainer, ``xb.polarize`` and ``xbc polarize``."""

from __future__ import annotations

import dataclasses
import itertools
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xbcompiler as xb
from tests.models import MODELS
from xbcompiler.cli import main
from xbcompiler.netlist import Netlist, validate
from xbcompiler.netlist.encoding import Encoding as NetlistEncoding
from xbcompiler.netlist.types import EncodingSpec
from xbcompiler.pipeline import resolve_pipeline
from xbcompiler.prune.polarity import fragment_count, fragment_signs, fragments, project, violations
from xbcompiler.prune.polarize import AdmmPolarizer, PolarizeSettings
from xbcompiler.quant.slicing import Encoding, block_mvm, weight_levels

ROOT = Path(__file__).resolve().parents[1]
PRUNE_MODELS = ROOT / "tests" / "data" / "prune_models.py"
POLARIZED = {"crossbar.rows": 64, "crossbar.cols": 64, "precision.weight_bits": 8, "precision.input_bits": 8,
             "encoding.flip_columns": False, "encoding.signed": "polarized", "crossbar.fragment_rows": 8}

values = st.integers(-3, 3).map(float)  # small integers: exact energies, ties and zeros happen


@st.composite
def weights(draw, max_cols=2, max_k=7):
    """A small ``[cols, K]`` tensor and a fragment size: at most 8 fragments (brute force tries 2**8 patterns)."""
    rows = draw(st.integers(1, max_cols))
    k = draw(st.integers(1, max_k))
    flat = draw(st.lists(values, min_size=rows * k, max_size=rows * k))
    f = draw(st.integers(1, 4).filter(lambda f: rows * -(-k // f) <= 8))
    return torch.tensor(flat, dtype=torch.float64).reshape(rows, k), f


def brute_force(w: torch.Tensor, f: int) -> torch.Tensor:
    """The nearest polarized tensor by trying every sign pattern of every fragment."""
    frags = fragments(w, f)
    best, best_cost = None, None
    for pattern in itertools.product((1.0, -1.0), repeat=frags.shape[0] * frags.shape[1]):
        s = torch.tensor(pattern, dtype=w.dtype).reshape(frags.shape[:2])[..., None]
        cand = torch.where(frags * s < 0, 0.0, frags)
        cost = float(((cand - frags) ** 2).sum())
        if best_cost is None or cost < best_cost - 1e-12:
            best, best_cost = cand, cost
    return best, best_cost


@settings(max_examples=150, deadline=None)
@given(weights())
def test_projection_is_polarized_nearest_and_idempotent(wf):
    w, f = wf
    p = project(w, f)
    assert p.shape == w.shape and violations(p, f) == 0
    _, cost = brute_force(w, f)
    assert float(((p - w) ** 2).sum()) == pytest.approx(cost, abs=1e-9)
    assert torch.equal(project(p, f), p)
    kept = p != 0  # it only zeroes entries, never changes a kept one
    assert torch.equal(p[kept], w[kept])


@settings(max_examples=60, deadline=None)
@given(weights())
def test_fragments_follow_matrix_rows(wf):
    """Fragment j of column o holds rows [j F, (j+1) F) of the flattened weight, zero-padded at the end."""
    w, f = wf
    frags = fragments(w, f)
    assert frags.shape[:2] == (w.shape[0], -(-w.shape[1] // f)) and fragment_count(w, f) == frags.shape[0] * frags.shape[1]
    for o in range(w.shape[0]):
        for j in range(frags.shape[1]):
            part = w[o, j * f:(j + 1) * f]
            assert torch.equal(frags[o, j, :len(part)], part) and not frags[o, j, len(part):].any()


def test_conv_fragments_are_im2col_rows():
    """A conv weight [O, C, kh, kw] flattens to rows (c, dy, dx), the compiler's matrix row order."""
    w = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2)
    frags = fragments(w, 4)
    assert torch.equal(frags[1, 2], w[1, 2].reshape(-1))  # fragment 2 of column 1 = channel 2's kernel


def test_signs_and_ties():
    w = torch.tensor([[1.0, -1.0, 2.0, -3.0]])
    assert fragment_signs(w, 2).tolist() == [[1, -1]]  # tie -> +1; energy 4 against 9 -> -1
    assert project(w, 2).tolist() == [[1.0, 0.0, 0.0, -3.0]]
    assert violations(w, 2) == 2 and violations(w, 1) == 0


def test_admm_schedule_updates_and_projects():
    p = torch.nn.Parameter(torch.tensor([[1.0, -0.5, 0.2, -2.0]]))
    sched = AdmmPolarizer({"w": p}, 2, admm_epochs=2, rho=1.0, rho_growth=2.0)
    assert torch.equal(sched.z["w"], project(p.detach(), 2)) and not sched.u["w"].any()
    p.grad = torch.zeros_like(p)
    with torch.enable_grad(), sched.sparse():
        pass
    assert torch.allclose(p.grad, p.detach() - sched.z["w"])  # rho (W - Z + U)
    sched.epoch_start(1)
    assert sched.rho == 2.0 and torch.allclose(sched.u["w"], p.detach() - sched.z["w"])
    sched.epoch_start(2)  # hard projection, then the signs hold through fine-tuning
    assert sched.frozen and violations(p, 2) == 0
    with torch.no_grad():
        p.add_(torch.tensor([[-5.0, 5.0, 5.0, 5.0]]))
    sched.step()
    assert p.detach().tolist() == [[0.0, 5.0, 0.0, 0.0]]  # [-4, 5 | 5, 3] clamped to (+, -)


@pytest.fixture(scope="module")
def digits():
    from tests.models import digits_cnn
    from xbcompiler.datasets import Split, train_classifier
    from xbcompiler.datasets import digits as load

    data = load(0)
    model = digits_cnn(seed=0)
    train_classifier(model, Split(data.x_train[:320], data.y_train[:320], data.x_test, data.y_test), epochs=4, seed=0)
    return model, data


def test_polarize_returns_a_polarized_model_and_its_report(digits):
    import copy

    model, data = copy.deepcopy(digits[0]), digits[1]
    target = xb.load_target("isaac-like", POLARIZED)
    got, report = xb.polarize(model, target, (data.x_train[:320], data.y_train[:320]),
                              settings=PolarizeSettings(admm_epochs=2, finetune_epochs=1, progress=False))
    assert got is model
    assert report.violations_before > 0 and report.violations_after == 0
    assert [r.layer for r in report.layers] == ["features_0", "features_2", "classifier_0", "classifier_2"]
    convs = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert all(violations(w, 8) == 0 for w in convs)
    assert set(report.accuracy) == {"baseline", "admm", "projected", "final"}
    assert [h["phase"] for h in report.history] == ["admm", "admm", "finetune"]
    assert report.history[-1]["mixed"] == 0


def test_polarize_refuses_a_target_that_is_not_polarized(digits):
    model, data = digits
    with pytest.raises(xb.CompileError) as info:
        xb.polarize(model, "isaac-like", (data.x_train, data.y_train))
    assert info.value.code == "XB250"


def test_xbc_polarize_writes_a_verified_polarized_netlist(tmp_path, capsys):
    from xbcompiler.datasets import digits as load

    d = load(0)
    data = tmp_path / "small.npz"
    np.savez(data, x_train=d.x_train[:400].numpy(), y_train=d.y_train[:400].numpy(), x_test=d.x_test[:100].numpy(),
             y_test=d.y_test[:100].numpy())
    out = tmp_path / "polarized"
    sets = [a for k, v in POLARIZED.items() for a in ("--set", f"{k}={str(v).lower()}")]
    status = main(["polarize", f"{PRUNE_MODELS}:digits_cnn", "--target", "isaac-like", *sets, "--data", str(data),
                   "--train-epochs", "2", "--admm-epochs", "2", "--epochs", "1", "-o", str(out), "--json", "--quiet"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["verify_ok"] and summary["mixed_after"] == 0 and summary["fragment_rows"] == 8
    netlist = xb.load_netlist(out)
    assert all(layer.quant.encoding.signed == "polarized" for layer in netlist.layers)
    assert (out / "polarize.json").is_file()


@pytest.mark.parametrize("argv, code", [
    (["--target", "isaac-like"], "XB250"),
    (["--target", "isaac-like", "--set", "encoding.signed=polarized"], "XB404"),
    (["--target", "isaac-like", "--rho", "0"], "XB003"),
    (["--target", "isaac-like", "--epochs", "-1"], "XB003"),
])
def test_xbc_polarize_bad_input_is_coded(tmp_path, capsys, argv, code):
    status = main(["polarize", f"{PRUNE_MODELS}:digits_cnn", *argv, "-o", str(tmp_path / "x"), "--quiet"])
    assert status == 2 and code in capsys.readouterr().err


# ---- the encoding ---------------------------------------------------------------------------------

FORMS = {"encoding.signed": "polarized", "crossbar.fragment_rows": 8, "encoding.flip_columns": False,
         "precision.weight_bits": 8, "precision.input_bits": 8}
LOSSY_FORMS = {**FORMS, "precision.adc_bits": 4}  # a fragment read of 8 rows needs 5 bits (d = 1, k = 2)


def polarized_case(name: str, fragment_rows: int = 8):
    """A zoo model with every Conv/Linear weight projected onto one sign per fragment, and its example input."""
    case = MODELS[name]
    model, x = case.build(), case.example_input()[:1]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.copy_(project(m.weight, fragment_rows))
    return model, x


def compile_forms(model, x, overrides: dict, pipeline: str = "default", target: str = "isaac-like"):
    passes = [dataclasses.replace(p, check=False) if p.name == "lower-im2col" else p for p in resolve_pipeline(pipeline)]
    cal = torch.randn(2, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        return xb.compile(model, (x,), target, passes, overrides=overrides, calibration=cal)


def assert_bit_exact(report) -> None:
    bad = [(c.name, c.mismatches) for c in report.layers if c.mismatches]
    assert report.exact and not bad and report.output_rel == 0.0, bad


@pytest.mark.parametrize("pipeline", ["fully-folded", "semi-folded", "fully-unfolded"])
def test_polarized_is_bit_exact_lossless_and_lossy_on_every_mapping(pipeline):
    model, x = polarized_case("digits_cnn")
    for overrides in ({**FORMS, "adc.mode": "lossless"}, LOSSY_FORMS):
        compiled = compile_forms(model, x, overrides, pipeline)
        netlist = compiled.netlist
        if overrides is LOSSY_FORMS:
            assert all((netlist.array(layer, "adc_step") > 0).any() for layer in netlist.layers)
        assert_bit_exact(xb.verify(netlist, model, x))
        fast = xb.emulate(netlist, x)
        assert torch.equal(fast, xb.emulate(netlist, x, literal=True))  # per-read path, cells read back


@pytest.mark.parametrize("name", ["resnet_digits", "conv1d_net", "mobilenetv2_small"])
def test_polarized_lossy_reads_equal_the_reference(name):
    """Residual adds, Conv1d and grouped (depthwise) convolutions, reads that drop one LSB each."""
    model, x = polarized_case(name)
    compiled = compile_forms(model, x, {**LOSSY_FORMS, "adc.rounding": "floor"})
    assert_bit_exact(xb.verify(compiled.netlist, model, x))


def test_polarized_netlist_records_fragments_signs_and_magnitudes():
    model, x = polarized_case("digits_cnn")
    compiled = compile_forms(model, x, LOSSY_FORMS, "fully-folded")
    netlist = compiled.netlist
    for layer in netlist.layers:
        q = layer.quant
        assert q.encoding.signed == "polarized" and q.encoding.fragment_rows == 8
        assert [(p.sign, p.shift) for p in q.planes] == [(1, 0), (1, 2), (1, 4), (1, 6)]  # |Wq|, 7 bits
        signs, weight = netlist.array(layer, "signs"), netlist.weight(layer).astype(np.int64)
        assert signs.dtype == np.int8 and signs.shape == (len(q.row_blocks), layer.n_g)
        for i, block in enumerate(q.row_blocks):
            rows = np.concatenate([np.arange(lo, hi) for lo, hi in block.rows])
            assert len(rows) <= 8 and len(set(rows // 8)) == 1  # one fragment per read
            assert (weight[block.group][rows] * signs[i] >= 0).all()
        assert (netlist.array(layer, "adc_bits") == 4).all()
        assert {x.adc.lossless_bits for x in netlist.layer_crossbars(layer)} == {5}  # R_act = 8, d = 1, k = 2
    x0 = netlist.crossbars[0]
    assert x0.physical_cols == x0.cols * 4  # m_c = S: one column per slice
    cells = netlist.crossbar_cells(x0.id).reshape(x0.rows, x0.cols, 4)
    wq = np.abs(netlist.weight(netlist.layer(x0.layer)).astype(np.int64))
    magnitude = (cells * (4 ** np.arange(4))).sum(-1)
    assert magnitude.max() <= wq.max() and magnitude.sum() > 0 and (cells >= 0).all()


def test_polarized_netlist_with_a_wrong_sign_is_refused():
    model, x = polarized_case("digits_cnn")
    netlist = compile_forms(model, x, LOSSY_FORMS).netlist
    layer = next(layer for layer in netlist.layers if (netlist.weight(layer) != 0).any())
    key = layer.arrays.signs.key
    signs = netlist.arrays[key].copy()
    weight = netlist.weight(layer)
    i, col = next((i, c) for i, b in enumerate(layer.quant.row_blocks) for c in range(layer.n_g)
                  if (weight[b.group][np.concatenate([np.arange(lo, hi) for lo, hi in b.rows]), c] != 0).any())
    signs[i, col] = -signs[i, col]
    with pytest.raises(xb.CompileError) as info:
        validate(Netlist(netlist.doc, {**netlist.arrays, key: signs}))
    assert info.value.code == "XB535"


def test_an_unpolarized_model_is_refused_naming_layer_and_fragment():
    case = MODELS["digits_cnn"]
    model, x = case.build(), case.example_input()[:1]
    for calibration in (True, False):
        with pytest.raises(xb.CompileError) as info:
            if calibration:
                compile_forms(model, x, FORMS)
            else:
                xb.compile(model, (x,), "isaac-like", overrides=FORMS)
        err = info.value
        assert err.code == "XB251" and "features_0" in err.message and "fragment rows [0, 8)" in err.message
        assert "xb.polarize" in err.hint and "xbc polarize" in err.hint


def test_device_mode_on_an_ideal_chip_equals_integer_mode():
    model, x = polarized_case("resnet_digits")
    netlist = compile_forms(model, x, LOSSY_FORMS).netlist
    assert torch.equal(xb.emulate(netlist, x, mode="device", seed=0), xb.emulate(netlist, x))
    faulty = xb.emulate(netlist, x, mode="device", seed=0, overrides={"device.sa1_rate": 0.05})
    assert not torch.equal(faulty, xb.emulate(netlist, x))


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 12), st.integers(1, 4), st.integers(1, 4), st.integers(1, 30), st.integers(0, 2 ** 31),
       st.integers(1, 8), st.integers(0, 3))
def test_fragment_read_is_the_signed_magnitude_read(weight_bits, k, dac, rows, seed, adc_bits, step):
    """One polarized fragment read by read equals the signed read of ``|w|`` through the same ADC."""
    enc = Encoding("polarized", weight_bits, k, 8, min(dac, 8), False)
    top = (1 << (weight_bits - 1)) - 1
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, top + 1, (rows, 5), generator=g) * torch.tensor([1, -1, 1, -1, 1])  # one sign per column
    x = torch.randint(0, 256, (3, rows), generator=g)
    assert torch.equal(block_mvm(x, w, enc), x @ w)  # lossless
    levels = weight_levels(w, enc)
    spec = EncodingSpec(signed="polarized", weight_bits=weight_bits, cell_bits=k, input_bits=8, dac_bits=min(dac, 8),
                        input_signed=False, fragment_rows=8)
    assert np.array_equal(NetlistEncoding(spec).levels(w.numpy()), levels.numpy())  # both sides agree
    differential = Encoding("differential", weight_bits, k, 8, min(dac, 8), False)
    lossy = block_mvm(x, w, enc, step_bits=step, bits=adc_bits)
    plain = block_mvm(x, w.abs(), differential, step_bits=step, bits=adc_bits)  # the magnitude's reads
    assert torch.equal(lossy, plain * torch.tensor([1, -1, 1, -1, 1]))


# ---- the report -----------------------------------------------------------------------------------

def _brute_zero_skip(netlist, layer, x: torch.Tensor) -> tuple[int, int]:
    """Zero-skip counts by the definition: per image, output position, fragment read and DAC cycle, all digits 0."""
    q = layer.quant
    g = layer.geometry
    xq = torch.floor(x.double() * 2.0 ** -q.input_exponent + 0.5).clamp(*( (-(1 << (q.input_bits - 1)), (1 << (q.input_bits - 1)) - 1) if q.input_signed else (0, (1 << q.input_bits) - 1)))
    cols = torch.nn.functional.unfold(xq, tuple(g.kernel), dilation=tuple(g.dilation), padding=tuple(g.padding),
                                      stride=tuple(g.stride))  # [B, K, L] (one group)
    pattern = cols.to(torch.int64) & ((1 << q.input_bits) - 1)
    skipped = total = 0
    for c in q.cycles:
        digit = (pattern >> c.lo) & ((1 << c.bits) - 1)
        for block in q.row_blocks:
            rows = np.concatenate([np.arange(lo, hi) for lo, hi in block.rows])
            zero = (digit[:, rows] == 0).all(1)
            skipped, total = skipped + int(zero.sum()), total + zero.numel()
    return skipped, total


def test_report_counts_fragment_reads_lossless_bits_and_zero_skips(tmp_path, capsys):
    from xbcompiler.report.costs import cost_report

    model, x = polarized_case("digits_cnn")
    polar = compile_forms(model, x, LOSSY_FORMS).netlist
    plain = compile_forms(model, x, {**LOSSY_FORMS, "encoding.signed": "differential"}).netlist
    images = torch.rand(3, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    images[0] = 0  # an all-zero image skips every cycle of the first layer
    report, base = cost_report(polar, images), cost_report(plain)
    first = report.layers[0]
    assert first.fragment_rows == 8 and first.adc_lossless_bits == 5
    assert [lc.adc_lossless_bits for lc in report.layers] == [5, 5, 5, 5]
    assert [lc.adc_lossless_bits for lc in base.layers] == [5, 9, 9, 8]  # 9, 144, 512 (128 per crossbar), 64 rows
    assert all(lc.fragment_rows == 0 and lc.fragment_cycles is None for lc in base.layers)
    assert (first.zero_skipped_cycles, first.fragment_cycles) == _brute_zero_skip(polar, polar.layers[0], images)
    assert 0 < first.zero_skipped_cycles < first.fragment_cycles
    assert first.zero_skipped_cycles >= first.fragment_cycles // 3  # the zero image
    assert report.totals["fragment_cycles"] == sum(lc.fragment_cycles for lc in report.layers)
    # a polarized column is read once per fragment: conversions = phases * cycles * m_c * (column reads)
    target = xb.load_target("isaac-like", LOSSY_FORMS)
    layer = polar.layers[2]  # classifier_0: 512 rows, 64 fragments per column
    reads = sum((s.cols[1] - s.cols[0]) * -(-(s.rows[1] - s.rows[0]) // 8) for x in polar.layer_crossbars(layer)
                for s in x.slices) + sum((b.out_channels[1] - b.out_channels[0]) * layer.w_o *
                                         len(set(np.asarray(xb.netlist.placement.block_matrix_rows(layer, b)) // 8))
                                         for x in polar.layer_crossbars(layer) for b in x.blocks)
    assert report.layers[2].adc_conversions == layer.phases * target.input_cycles * target.m_c * reads
    out = tmp_path / "n"
    polar.save(out)
    np.save(tmp_path / "x.npy", images.numpy())
    assert main(["report", str(out), "--inputs", str(tmp_path / "x.npy")]) == 0
    text = capsys.readouterr().out
    assert "features_0: polarized, 8-row fragments, lossless ADC 5 bits, zero-skip" in text
