"""The inter-tile traffic model and the min-traffic placement heuristic (``xbcompiler.mapping``)."""

from __future__ import annotations

import warnings
from math import ceil, log2

import torch
from torch import nn

import xbcompiler as xb
from xbcompiler.mapping.tiles import fill, min_traffic, place
from xbcompiler.mapping.traffic import layer_graph, psum_bits, psum_groups, tile_traffic
from xbcompiler.pipeline import PassContext, PassManager


def mapped(model: nn.Module, x: torch.Tensor, target, mapping: str = "map-semi-folded"):
    from xbcompiler.frontend.trace import trace

    tgt = xb.load_target(target) if isinstance(target, str) else target
    ctx = PassContext(target=tgt, properties={"traced", "shapes"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        program = PassManager(f"fold-batchnorm,lower-im2col,lower-to-xbar,{mapping}").run(trace(model, (x,)), ctx)
    return program, tgt


def chain() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 1)).eval()
    return model, torch.randn(1, 4, 8, 8)


def test_layer_graph_follows_data_through_host_ops():
    model, x = chain()
    program, target = mapped(model, x, "isaac-like")
    g = layer_graph(program, target)
    (u, v, data), = g.edges(data=True)
    assert [u, v] == [n.target for n in program.nodes if n.op == "xbar"]
    assert data["bits"] == 8 * 4 * 4 * target.precision.input_bits  # the pooled 8x4x4 input of the 1x1 conv


def test_traffic_is_zero_on_one_tile_and_the_activation_volume_across_two():
    model, x = chain()
    program, target = mapped(model, x, "isaac-like")
    first, second = [n.target for n in program.nodes if n.op == "xbar"]
    assert all(p.partial_sum_fanin == 1 for p in program.plans.values())
    together = {xb_.index: (0,) for xb_ in program.crossbars}
    assert sum(tile_traffic(program, target, together).values()) == 0
    apart = {xb_.index: (0 if xb_.layer == first else 1,) for xb_ in program.crossbars}
    traffic = tile_traffic(program, target, apart)
    assert traffic == {first: 0, second: 8 * 4 * 4 * target.precision.input_bits}


def test_a_split_partial_sum_group_moves_its_partial_sums():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Conv2d(40, 4, 1)).eval(), torch.randn(1, 40, 3, 3)  # 40 channels: 3 row groups on tiny
    program, target = mapped(model, x, "tiny")
    groups = psum_groups(program)
    (name, layer_groups), = groups.items()
    assert all(len(xs) == program.plans[name].partial_sum_fanin for xs, _ in layer_groups)
    xs, outputs = layer_groups[0]
    tiles = {xb_.index: (0,) for xb_ in program.crossbars}
    tiles[xs[-1]] = (1,)
    assert tile_traffic(program, target, tiles) == {name: outputs * psum_bits(target)}
    assert psum_bits(target) == 4 + 4 + ceil(log2(16))


def test_min_traffic_keeps_partial_sum_groups_on_one_tile():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(40, 4, 1), nn.ReLU(), nn.Conv2d(4, 40, 1), nn.ReLU(), nn.Conv2d(40, 4, 1)).eval()
    program, target = mapped(model, torch.randn(1, 40, 3, 3), xb.load_target("tiny", {"hierarchy.crossbars_per_tile": 4}))
    per_tile = 4
    sites = min_traffic(program, per_tile, layer_graph(program, target), psum_groups(program))
    for xs, _ in (g for gs in psum_groups(program).values() for g in gs):
        assert len({sites[x][0][0] for x in xs}) == 1  # 3 crossbars fit one tile of 4: never split
    assert sorted(s for ss in sites.values() for s in ss) == sorted({s for ss in sites.values() for s in ss})
    assert all(slot < per_tile for ss in sites.values() for _, slot in ss)
    placed_fill = fill(program, per_tile)
    fill_bits = sum(tile_traffic(program, target, {x: tuple(t for t, _ in s) for x, s in placed_fill.items()}).values())
    heuristic_bits = sum(tile_traffic(program, target, {x: tuple(t for t, _ in s) for x, s in sites.items()}).values())
    assert heuristic_bits < fill_bits
    placed, report = place(program, target, "min-traffic")
    assert report["chosen"] == "min-traffic" and report["objective_bits"] == heuristic_bits < report["fill_bits"]
    assert sum(p.tile_traffic_bits for p in placed.plans.values()) == heuristic_bits
    placed.verify(target)
