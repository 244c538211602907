"""The inter-tile traffic model and the min-traffic placement heuristic (``xbcompiler.mapping``)."""

from __future__ import annotations

import warnings
from math import ceil, log2

import numpy as np
import pytest
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
    together = np.zeros(len(program.crossbars), dtype=np.int64)
    assert sum(tile_traffic(program, target, together).values()) == 0
    apart = np.array([0 if xb_.layer == first else 1 for xb_ in program.crossbars])
    traffic = tile_traffic(program, target, apart)
    assert traffic == {first: 0, second: 8 * 4 * 4 * target.precision.input_bits}


def test_a_split_partial_sum_group_moves_its_partial_sums():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Conv2d(40, 4, 1)).eval(), torch.randn(1, 40, 3, 3)  # 40 channels: 3 row groups on tiny
    program, target = mapped(model, x, "tiny")
    groups = psum_groups(program)
    (name, layer_groups), = groups.items()
    assert all(len(xs) == program.plans[name].partial_sum_fanin for xs, _ in layer_groups)
    xs, outputs = next(iter(layer_groups))
    tiles = np.zeros(len(program.crossbars), dtype=np.int64)
    tiles[xs[-1]] = 1
    assert tile_traffic(program, target, tiles) == {name: outputs * psum_bits(target)}
    assert psum_bits(target) == 4 + 4 + ceil(log2(16))


def test_min_traffic_keeps_partial_sum_groups_on_one_tile():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(40, 4, 1), nn.ReLU(), nn.Conv2d(4, 40, 1), nn.ReLU(), nn.Conv2d(40, 4, 1)).eval()
    program, target = mapped(model, torch.randn(1, 40, 3, 3), xb.load_target("tiny", {"hierarchy.crossbars_per_tile": 4}))
    per_tile = 4
    sites = min_traffic(program, per_tile, layer_graph(program, target), psum_groups(program))
    for xs, _ in (g for gs in psum_groups(program).values() for g in gs):
        assert len({sites.of(x)[0][0] for x in xs}) == 1  # 3 crossbars fit one tile of 4: never split
    all_sites = [s for x in range(len(program.crossbars)) for s in sites.of(x)]
    assert len(all_sites) == len(set(all_sites)) == len(program.crossbars)
    assert all(slot < per_tile for _, slot in all_sites)
    placed_fill = fill(program, per_tile)
    fill_bits = sum(tile_traffic(program, target, placed_fill.tile).values())
    heuristic_bits = sum(tile_traffic(program, target, sites.tile).values())
    assert heuristic_bits < fill_bits
    placed, report = place(program, target, "min-traffic")
    assert report["chosen"] == "min-traffic" and report["objective_bits"] == heuristic_bits < report["fill_bits"]
    assert sum(p.tile_traffic_bits for p in placed.plans.values()) == heuristic_bits
    placed.verify(target)


def reference_min_traffic(program, per_tile, graph, groups):
    """The heuristic crossbar by crossbar, as docs/mapping.md states it: the oracle for the run-wise code."""
    from collections import Counter, defaultdict

    group_of = {x: (name, g) for name, gs in groups.items() for g, (xs, _) in enumerate(gs) for x in xs}
    free, held, sites = [], defaultdict(Counter), defaultdict(list)

    def open_tile():
        free.append(per_tile)
        return len(free) - 1

    names = [n.target for n in program.nodes if n.op == "xbar"]
    for name in names:
        xs = [x.index for x in program.crossbars if x.layer == name]
        if not xs:
            continue
        near = Counter()
        for u in graph.predecessors(name):
            near.update(held[u])
        roomy = sorted((t for t in near if free[t] > 0), key=lambda t: (-near[t], t))
        cur = roomy[0] if roomy else (len(free) - 1 if free and free[-1] > 0 else open_tile())
        chunks = []
        for x in xs:
            if chunks and x in group_of and group_of.get(chunks[-1][-1]) == group_of[x]:
                chunks[-1].append(x)
            else:
                chunks.append([x])
        for _ in range(program.plans[name].replicas):
            for chunk in chunks:
                if len(chunk) <= per_tile and free[cur] < len(chunk):
                    cur = len(free) - 1 if free[-1] >= len(chunk) else open_tile()
                for x in chunk:
                    if free[cur] == 0:
                        cur = len(free) - 1 if free[-1] > 0 else open_tile()
                    sites[x].append((cur, per_tile - free[cur]))
                    free[cur] -= 1
                    held[name][cur] += 1
    return sites


@pytest.mark.parametrize("per_tile", [1, 2, 3, 5, 8, 64])
@pytest.mark.parametrize("mapping", ["map-semi-folded", "map-fully-folded",
                                     "map-fully-folded,replicate-layers{budget=200,method=greedy}"])
def test_min_traffic_places_every_copy_where_the_crossbar_by_crossbar_heuristic_does(per_tile, mapping):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(40, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 40, 1), nn.ReLU(),
                          nn.Conv2d(40, 4, 1)).eval()
    program, target = mapped(model, torch.randn(1, 40, 6, 6), "tiny", mapping)
    assert "replicate" not in mapping or all(p.replicas > 1 for p in program.plans.values())
    graph, groups = layer_graph(program, target), psum_groups(program)
    assert groups
    sites = min_traffic(program, per_tile, graph, groups)
    expected = reference_min_traffic(program, per_tile, graph, groups)
    assert {x: sites.of(x) for x in range(len(program.crossbars))} == dict(expected)
