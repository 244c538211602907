"""Exporters (``xbcompiler.export``, ``xbc export``): NeuroSim's network table and Param.cpp values, CrossSim
parameters and the per-crossbar CSV, each checked field by field against the saved netlist (docs/export.md)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xbcompiler as xb
from tests import models
from xbcompiler.cli import main
from xbcompiler.export import FORMATS, crosssim, export
from xbcompiler.export.neurosim import NetworkRow
from xbcompiler.target import load_target

REPLICATE = "fold-batchnorm,lower-im2col,lower-to-xbar,map-semi-folded,replicate-layers{budget=30},place-tiles"


class PoolNet(nn.Module):
    """Conv + ReLU + 2x2 max pooling, a depthwise conv, a strided conv, a Linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.c1(x)), 2)  # 16 -> 8
        x = torch.relu(self.c3(torch.relu(self.dw(x))))  # 8 -> 4
        return self.fc(x.flatten(1))


def _save(tmp_path_factory, name, model, shape, target, pipeline="default", **kwargs) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        compiled = xb.compile(model, (torch.randn(*shape),), target, pipeline, **kwargs)
    out = tmp_path_factory.mktemp(name) / "net"
    compiled.save(out)
    return out


@pytest.fixture(scope="module")
def pool_net(tmp_path_factory):
    torch.manual_seed(0)
    return _save(tmp_path_factory, "pool", PoolNet().eval(), (1, 3, 16, 16), "tiny", "semi-folded")


@pytest.fixture(scope="module")
def conv1d_net(tmp_path_factory):
    return _save(tmp_path_factory, "conv1d", models.conv1d_net(), (2, 2, 64), "tiny")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return _save(tmp_path_factory, "tokens", models.transformer_block(), (2, 16, 32), "tiny")


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 5)).eval()
    return _save(tmp_path_factory, "replicated", model, (1, 3, 12, 12), "isaac-like", REPLICATE)


@pytest.fixture(scope="module")
def quantised(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3)).eval()
    return _save(tmp_path_factory, "quantised", model, (1, 1, 8, 8), "tiny",
                 calibration=torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)))


def table(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in line.split(",")) for line in text.splitlines()]


def param_lines(text: str) -> dict[str, str]:
    """``name = value;`` assignments of the companion file."""
    return dict(re.findall(r"^(\w+) = ([^;]+);", text, flags=re.MULTILINE))


# ------------------------------------------------------------------------------------------------ neurosim


def test_neurosim_rows_follow_the_model_geometry(pool_net):
    netlist = xb.load_netlist(pool_net)
    result = export(netlist, "neurosim")
    rows = table(result.text)
    # IFM = padded input (the values NeuroSim's valid convolution needs), pool after c1's ReLU, depthwise per group
    assert rows == [(18, 18, 3, 3, 3, 8, 1, 1), *[(10, 10, 1, 3, 3, 1, 0, 1)] * 8, (10, 10, 8, 3, 3, 16, 0, 2),
                    (1, 1, 256, 1, 1, 5, 0, 1)]
    assert len(rows) == sum(layer.groups for layer in netlist.layers)
    assert any("dw (conv2d): 8 conv groups written as 8 rows" in n for n in result.notes)
    assert any("strategy semi-folded" in n for n in result.notes)


def test_neurosim_counts_the_netlists_output_positions(pool_net, conv1d_net, tokens):
    """NeuroSim's (IFM - K + 1) / stride per axis is the layer's number of output positions, for every row."""
    for directory in (pool_net, conv1d_net, tokens):
        netlist = xb.load_netlist(directory)
        expanded = [layer for layer in netlist.layers for _ in range(layer.groups)]
        rows = table(export(netlist, "neurosim").text)
        assert len(rows) == len(expanded)
        for layer, values in zip(expanded, rows):
            row = NetworkRow(layer.name, None, *values)
            positions = layer.output_shape[-1] * (layer.output_shape[-2] if layer.kind == "conv2d" else 1)
            if layer.kind == "linear":
                positions = max(1, int(torch.tensor(layer.output_shape).prod()) // layer.matrix_cols)
            assert row.input_vectors == positions, layer.name
            assert row.ifm_c * row.k_h * row.k_w == layer.matrix_rows  # one group's im2col rows
            assert row.ofm_c * layer.groups == layer.matrix_cols


def test_neurosim_conv1d_dilation_groups_and_pooling(conv1d_net):
    netlist = xb.load_netlist(conv1d_net)
    result = export(netlist, "neurosim")
    rows = table(result.text)
    assert [layer.name for layer in netlist.layers] == ["features_0", "features_4", "features_7", "features_11", "fc"]
    assert rows[0] == (1, 68, 2, 1, 5, 16, 1, 1)  # k5 p2 on 64, then BN+ReLU+MaxPool1d(2)
    assert rows[1] == (1, 34, 16, 1, 3, 32, 0, 1)  # dilation 2: 32 outputs need 34 undilated inputs
    assert rows[2:6] == [(1, 18, 8, 1, 3, 8, 0, 1)] * 4  # groups=4, stride (1, 2) written as stride 1
    assert rows[6] == (1, 10, 32, 1, 3, 48, 0, 1)
    assert rows[7] == (1, 1, 48, 1, 1, 10, 0, 1)
    notes = "\n".join(result.notes)
    for expected in ("features_4 (conv1d): dilation 1x2", "features_7 (conv1d): 4 conv groups",
                     "features_7 (conv1d): stride 1x2 is not one value", "features_7 (conv1d): followed by avg_pool1d",
                     "features_0 (conv1d): followed by max_pool1d"):
        assert expected in notes


def test_neurosim_linear_layers_on_tokens(tokens):
    netlist = xb.load_netlist(tokens)
    rows = table(export(netlist, "neurosim").text)
    assert len(rows) == len(netlist.layers)  # no groups: one row per crossbar layer
    by_name = dict(zip((layer.name for layer in netlist.layers), rows))
    assert by_name["q"] == (1, 16, 32, 1, 1, 32, 0, 1)  # 16 tokens: 16 input vectors
    assert by_name["mlp_0"] == (1, 16, 32, 1, 1, 64, 0, 1)
    assert by_name["head"] == (1, 1, 32, 1, 1, 10, 0, 1)


def test_neurosim_params_are_the_targets_values(pool_net, replicated):
    for directory, rows, cols, cell_bits, adc_bits, weight_bits, input_bits in (
            (pool_net, 16, 16, 2, 6, 4, 4), (replicated, 128, 128, 2, 8, 16, 16)):
        netlist = xb.load_netlist(directory)
        result = export(netlist, "neurosim")
        (companion,) = result.companions
        assert companion.suffix == ".param.txt"
        params = param_lines(companion.text)
        assert params["numRowSubArray"] == str(rows) and params["numColSubArray"] == str(cols)
        assert params["cellBit"] == str(cell_bits)
        assert params["levelOutput"] == str(2 ** adc_bits)
        assert params["numColMuxed"] == str(cols)
        assert params["operationmode"] == "2" and params["memcelltype"] == "2"
        assert f"--wl_weight {weight_bits} --wl_activate {input_bits} --subArray {rows}" in companion.text
        assert f"--ADCprecision {adc_bits} --cellBit {cell_bits}" in companion.text
        legend = re.findall(r"^// \d+: (\w+)", companion.text, flags=re.MULTILINE)
        assert legend == [layer.name for layer in netlist.layers for _ in range(layer.groups)]
        for note in result.notes:
            assert f"// - {note}" in companion.text


def test_neurosim_device_and_lossless_adc(pool_net):
    netlist = xb.load_netlist(pool_net)
    target = load_target("tiny", {"adc.mode": "lossless", "device.on_off_ratio": 20.0, "device.program_sigma": 0.1})
    from xbcompiler.export import neurosim

    params = {p.name: p.value for p in neurosim.param_values(netlist, target)}
    assert params["levelOutput"] == str(2 ** target.lossless_adc_bits(16))
    assert params["resistanceOff"] == "resistanceOn*20"
    wrapper = {a.name: a.value for a in neurosim.wrapper_args(netlist, target)}
    assert wrapper["--onoffratio"] == "20" and wrapper["--vari"] == "0.1"


# ------------------------------------------------------------------------------------------------ crosssim


def test_crosssim_json_is_the_targets_parameters(pool_net, replicated):
    tiny = json.loads(export(xb.load_netlist(pool_net), "crosssim").text)
    assert set(tiny) == {"core", "xbar"} and set(tiny["xbar"]) == {"device", "adc", "dac"}
    assert tiny["core"] == {"style": "BITSLICED", "rows_max": 16, "cols_max": 4, "weight_bits": 4,
                            "balanced": {"style": "ONE_SIDED", "interleaved_posneg": True,
                                         "subtract_current_in_xbar": False},
                            "bit_sliced": {"style": "BALANCED", "num_slices": 2}}
    assert tiny["xbar"]["device"] == {"cell_bits": 2, "Rmin": 1000.0, "infinite_on_off_ratio": True}
    assert tiny["xbar"]["adc"] == {"_match": True, "mvm": tiny["xbar"]["adc"]["vmm"], "vmm": tiny["xbar"]["adc"]["mvm"]}
    assert tiny["xbar"]["adc"]["mvm"] == {"model": "QuantizerADC", "bits": 6, "signed": False,
                                          "stochastic_rounding": False, "adc_per_ibit": True,
                                          "adc_range_option": "MAX"}
    assert tiny["xbar"]["dac"]["mvm"] == {"model": "SignMagnitudeDAC", "bits": 4, "input_bitslicing": True,
                                          "signed": True, "slice_size": 1}

    netlist = xb.load_netlist(replicated)
    result = export(netlist, "crosssim")
    isaac, target = json.loads(result.text), load_target("isaac-like")
    assert isaac["core"] == {"style": "BITSLICED", "rows_max": 128, "cols_max": target.logical_cols,
                             "weight_bits": 16, "offset": {"style": "DIGITAL_OFFSET"},
                             "bit_sliced": {"style": "OFFSET", "num_slices": target.weight_slices}}
    assert target.weight_slices == 8 and target.logical_cols == 16
    assert isaac["xbar"]["adc"]["mvm"]["bits"] == 8 and isaac["xbar"]["dac"]["mvm"]["bits"] == 16
    assert any("flip_columns" in n for n in result.notes)


def test_crosssim_follows_each_target_key():
    lossless = load_target("tiny", {"adc.mode": "lossless"})
    assert crosssim.adc(lossless) == {"model": "IdealADC", "bits": 0, "signed": False, "adc_per_ibit": True}
    one_cycle = load_target("tiny", {"precision.dac_bits": 4, "adc.mode": "calibrated"})
    assert crosssim.adc(one_cycle)["adc_per_ibit"] is False
    assert crosssim.adc(one_cycle)["adc_range_option"] == "CALIBRATED"
    offset = load_target("tiny", {"encoding.signed": "offset", "crossbar.cell_bits": 4})
    assert crosssim.core(offset) == {"style": "OFFSET", "rows_max": 16, "cols_max": 16, "weight_bits": 4,
                                     "offset": {"style": "DIGITAL_OFFSET"}}
    device = load_target("tiny", {"device.on_off_ratio": 50.0, "device.program_sigma": 0.05})
    assert crosssim.device(device) == {
        "cell_bits": 2, "Rmin": 1000.0, "Rmax": 50000.0, "infinite_on_off_ratio": False,
        "programming_error": {"enable": True, "model": "NormalProportionalDevice", "magnitude": 0.05}}


def test_crosssim_unsigned_inputs_of_a_quantised_netlist(quantised):
    netlist = xb.load_netlist(quantised)
    signed = [layer.quant.input_signed for layer in netlist.layers]
    dac = json.loads(export(netlist, "crosssim").text)["xbar"]["dac"]["mvm"]
    assert dac["signed"] is any(signed)
    assert dac["model"] == ("SignMagnitudeDAC" if any(signed) else "QuantizerDAC")


# ------------------------------------------------------------------------------------------------ csv


def crossbar_table(netlist) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(export(netlist, "csv").text)))


def test_csv_has_one_row_per_crossbar_site(pool_net, replicated):
    for directory in (pool_net, replicated):
        netlist = xb.load_netlist(directory)
        rows = crossbar_table(netlist)
        assert len(rows) == netlist.doc.summary.crossbars_with_replicas
        assert len({(r["tile"], r["slot"]) for r in rows}) == len(rows)
        sites = [(i, site) for i, x in enumerate(netlist.crossbars) for site in x.site_ids]
        assert [(int(r["index"]), r["id"]) for r in rows] == sites
        for r in rows:
            x = netlist.crossbars[int(r["index"])]
            assert r["layer"] == x.layer and int(r["rows"]) == x.rows and int(r["cols"]) == x.cols
            assert int(r["physical_cols"]) == x.physical_cols
            assert 0 < float(r["utilisation"]) <= 1
            assert 0 < int(r["rows_used"]) <= x.rows and 0 < int(r["cols_used"]) <= x.cols
            assert int(r["weights"]) <= int(r["rows_used"]) * int(r["cols_used"])
            assert r["holds"].count(";") + 1 == len(x.slices) + len(x.blocks)
            assert int(r["chip"]) == int(r["tile"]) // netlist.doc.target["hierarchy"]["tiles"]
    replicas = [r for r in crossbar_table(xb.load_netlist(replicated)) if r["site"] != "0"]
    assert replicas  # the replicate-layers pipeline replicated something


def test_csv_weights_are_the_layers_copies_and_utilisation(pool_net, replicated):
    for directory in (pool_net, replicated):
        netlist = xb.load_netlist(directory)
        rows = crossbar_table(netlist)
        for layer in netlist.layers:
            mine = [r for r in rows if r["layer"] == layer.name and r["site"] == "0"]
            assert len(mine) == layer.crossbars
            weights = sum(int(r["weights"]) for r in mine)
            assert weights == layer.copies * layer.matrix_rows * layer.matrix_cols
            cells = sum(int(r["rows"]) * int(r["cols"]) for r in mine)
            assert weights / cells == pytest.approx(layer.utilisation, abs=1e-6)


def test_csv_names_what_each_crossbar_holds(pool_net):
    netlist = xb.load_netlist(pool_net)
    first = crossbar_table(netlist)[0]
    (block,) = netlist.crossbars[0].blocks
    assert first["holds"] == (f"g{block.group}:c{block.channels[0]}-{block.channels[1]},dy{block.kernel_rows[0]}-"
                              f"{block.kernel_rows[1]},o{block.out_channels[0]}-{block.out_channels[1]},"
                              f"s{block.slice}@{block.at[0]},{block.at[1]}")
    assert first["adc_bits"] == "" and first["remapped"] == "0"


def test_csv_adc_bits_of_a_quantised_netlist(quantised):
    netlist = xb.load_netlist(quantised)
    rows = crossbar_table(netlist)
    assert [int(r["adc_bits"]) for r in rows] == [x.adc.bits for x in netlist.crossbars]


# ------------------------------------------------------------------------------------------------ command line


@pytest.fixture
def workdir(pool_net, tmp_path):
    """A private copy of the netlist directory (the CLI writes into it by default)."""
    out = tmp_path / "net"
    shutil.copytree(pool_net, out)
    return out


def test_cli_writes_each_format_into_the_netlist_by_default(workdir, capsys):
    netlist = xb.load_netlist(workdir)
    for name, form in FORMATS.items():
        assert main(["export", str(workdir), "--format", name]) == 0
        written = workdir / form.default_file
        assert written.read_text() == export(netlist, name).text
        out, err = capsys.readouterr()
        assert f"wrote {written}" in out
        assert err == "".join(f"note: {n}\n" for n in export(netlist, name).notes)
    assert (workdir / "NetWork.param.txt").read_text() == export(netlist, "neurosim").companions[0].text
    xb.load_netlist(workdir)  # the extra files leave the netlist loadable


def test_cli_output_file_and_stdout(workdir, tmp_path, capsys):
    out = tmp_path / "layers.csv"
    assert main(["export", str(workdir), "--format", "neurosim", "-o", str(out)]) == 0
    assert out.is_file() and (tmp_path / "layers.param.txt").is_file()
    capsys.readouterr()
    assert main(["export", str(workdir), "--format", "csv", "-o", "-"]) == 0
    assert capsys.readouterr().out == export(xb.load_netlist(workdir), "csv").text
    assert main(["export", str(workdir), "--format", "neurosim", "-o", "-"]) == 2
    assert "XB003" in capsys.readouterr().err


def test_cli_bad_input(workdir, tmp_path, capsys):
    assert main(["export", str(tmp_path / "absent"), "--format", "csv", "-o", str(tmp_path / "x.csv")]) == 2
    assert "XB501" in capsys.readouterr().err
    assert main(["export", str(workdir), "--format", "neurosimm"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["export", str(workdir)]) == 2  # --format is required
    capsys.readouterr()
    assert main(["export", str(workdir), "--format", "csv", "-o", str(tmp_path)]) == 2
    assert "XB004" in capsys.readouterr().err
    missing = tmp_path / "no" / "such" / "x.csv"
    assert main(["export", str(workdir), "--format", "csv", "-o", str(missing)]) == 2
    assert "XB004" in capsys.readouterr().err and not (tmp_path / "no").exists()
    (workdir / "netlist.json").write_text("{")
    assert main(["export", str(workdir), "--format", "crosssim", "-o", str(tmp_path / "x.json")]) == 2
    assert "XB502" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_cli_leaves_no_partial_file(workdir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "crossbars.csv"
    out.write_text("earlier\n")

    def half_then_fail(text):
        def write(fh):
            fh.write(text.encode()[:10])
            raise OSError(28, "No space left on device")
        return write

    monkeypatch.setattr("xbcompiler.cli.export._bytes", half_then_fail)
    assert main(["export", str(workdir), "--format", "csv", "-o", str(out)]) == 2
    assert "XB004" in capsys.readouterr().err
    assert out.read_text() == "earlier\n"
    assert sorted(os.listdir(tmp_path)) == sorted(["crossbars.csv", "net"])  # no temporary file left


def test_cli_help_has_an_example(capsys):
    assert main(["export", "--help"]) == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "xbc export out --format" in text and "{neurosim,crosssim,csv}" in text


def test_unknown_format_is_a_coded_error(pool_net):
    with pytest.raises(xb.CompileError) as info:
        export(xb.load_netlist(pool_net), "onnx")
    assert info.value.code == "XB003"
