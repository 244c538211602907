"""The cost report (``xbcompiler.report``), ``xbc report`` with its plots, and the ImageNet savings example."""

from __future__ import annotations

import json
from math import ceil

import pytest
import torch
from torch import nn

import xbcompiler as xb
from tests.models import replicated_net
from xbcompiler.cli import main
from xbcompiler.report import compare_netlist, cost_report


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    compiled = replicated_net()
    out = tmp_path_factory.mktemp("report")
    compiled.save(out)
    return out, compiled


def used_extent(layer, x) -> tuple[int, int]:
    """Rows and logical columns of crossbar ``x`` up to the last its placement records cover (docs/netlist.md)."""
    rows = cols = 0
    for s in x.slices:
        rows = max(rows, s.at[0] + s.rows[1] - s.rows[0])
        cols = max(cols, s.at[1] + s.cols[1] - s.cols[0])
    for b in x.blocks:
        n_c, n_dy = b.channels[1] - b.channels[0], b.kernel_rows[1] - b.kernel_rows[0]
        rows = max(rows, b.at[0] + n_c * n_dy * layer.w_i)
        cols = max(cols, b.at[1] + (b.out_channels[1] - b.out_channels[0]) * layer.w_o)
    return rows, cols


def test_layer_costs_follow_the_documented_counts(saved):
    _, compiled = saved
    netlist, target = compiled.netlist, compiled.target
    summary = netlist.summary
    report = cost_report(netlist)
    c, cycles = target.costs, target.input_cycles
    assert cycles == 16 and target.m_c == 8
    assert len(report.layers) == len(netlist.layers)
    for layer, lc in zip(netlist.layers, report.layers):
        used = [used_extent(layer, x) for x in netlist.layer_crossbars(layer)]
        assert all(r > 0 and col > 0 for r, col in used)
        reads = layer.phases * cycles
        assert lc.adc_conversions == reads * sum(col * 8 for _, col in used)
        assert lc.dac_drives == reads * sum(r for r, _ in used)
        assert lc.cell_reads == reads * sum(r * col * 8 for r, col in used)
        assert lc.period == ceil(layer.phases / layer.replicas)
        assert lc.latency_ns == lc.period * cycles * c.phase_ns
        energy = (lc.adc_conversions * (c.adc_conversion_pj + c.shift_add_pj) + lc.dac_drives * c.dac_drive_pj
                  + lc.cell_reads * c.cell_read_pj + lc.partial_sum_additions * c.partial_sum_add_pj
                  + lc.tile_bits * c.tile_bit_moved_pj)
        assert lc.energy_pj == pytest.approx(energy)
    t = report.totals
    assert t["crossbars"] == summary["crossbars"] and t["pipeline_period"] == summary["pipeline_period"]
    assert t["crossbars_with_replicas"] == summary["crossbars_with_replicas"] > t["crossbars"]
    assert t["area_um2"] == pytest.approx((t["crossbars_with_replicas"] + t["accumulation_crossbars"])
                                          * (c.xbar_area_um2 + c.adc_area_um2) + t["tiles"] * c.tile_area_um2)
    assert t["period_ns"] == t["pipeline_period"] * cycles * c.phase_ns


def test_costs_come_from_the_target_file():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Conv2d(2, 4, 3)).eval(), torch.randn(1, 2, 6, 6)
    base = cost_report(xb.compile(model, (x,), "isaac-like").netlist).totals["energy_pj"]
    doubled = cost_report(xb.compile(model, (x,), "isaac-like", overrides={"costs.adc_conversion_pj": 4.0}).netlist)
    assert doubled.totals["energy_pj"] == pytest.approx(base + 2.0 * doubled.totals["adc_conversions"])


def test_strategy_comparison_of_a_netlist(saved):
    _, compiled = saved
    comparison = compare_netlist(compiled.netlist)
    totals = comparison.to_dict()["totals"]
    assert totals["semi-folded"]["crossbars"] == compiled.summary["crossbars"]
    assert totals["fully-unfolded"]["phases"] == len(compiled.netlist.layers)
    assert comparison.phase_saving > 1 and comparison.crossbar_saving > 1


def test_xbc_report_prints_a_table_and_writes_plots(saved, capsys):
    out, compiled = saved
    assert main(["report", str(out), "--plot"]) == 0
    text = capsys.readouterr().out
    for word in ("cost report", "total", "ADC conv", "pipeline period", "semi-folded saves"):
        assert word in text
    for name in ("occupancy.png", "layers.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["crossbars"] == compiled.summary["crossbars"]
    assert [layer["name"] for layer in data["layers"]] == [layer.name for layer in compiled.netlist.layers]
    assert data["device"]["sa1_rate"] == 0.0 and "device: ideal" in text


def test_xbc_report_shows_the_device_section(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    compiled = xb.compile(model, (torch.randn(1, 8),), xb.load_target("tiny", {"device.sa1_rate": 0.02,
                                                                              "device.program_sigma": 0.1}))
    compiled.save(tmp_path / "n")
    assert main(["report", str(tmp_path / "n")]) == 0
    text = capsys.readouterr().out
    assert "device: program_sigma 0.1, sa1_rate 0.02" in text
    assert main(["report", str(tmp_path / "n"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["device"]["program_sigma"] == 0.1


def test_xbc_report_of_a_missing_netlist_is_bad_input(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "XB501" in capsys.readouterr().err


def test_imagenet_savings_example(capsys):
    """VGG-16 and ResNet-18 on 256x256: semi-folded vs fully-unfolded crossbars, vs fully-folded phases."""
    from examples.mapping_savings import main as example

    example()
    text = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + text)
    lines = {tuple(line.split()[:2]): line for line in text.splitlines()}
    assert len(lines) == 4
    vgg = lines[("vgg16_imagenet", "256x256")]
    assert "crossbar saving vs fully-unfolded 37.8x" in vgg and "phase saving vs fully-folded 142.2x" in vgg
    resnet = lines[("resnet18_imagenet", "256x256")]
    assert "crossbar saving vs fully-unfolded 20.4x" in resnet and "phase saving vs fully-folded 51.9x" in resnet
