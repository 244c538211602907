"""First-order inter-tile traffic of a placed program, on its layer graph (docs/mapping.md, "Tiles").

Per image and per consuming layer ``v``:

* activations: every producer layer ``u`` feeding ``v`` (through host ops) sends
  ``A_uv = min(|input of v|, |output of u|) * input_bits``; the share consumed on tile ``t`` is ``f_v(t)``
  (the fraction of ``v``'s crossbar copies on ``t``) and is local only for the share ``f_u(t)`` produced
  there: ``bits = A_uv * sum_t f_v(t) * (1 - f_u(t))``;
* partial sums: crossbars whose columns add into the same outputs (a partial-sum group) spread over
  ``n`` tiles move ``(n - 1)`` partial-sum vectors: ``(n - 1) * outputs * psum_bits`` with
  ``psum_bits = input_bits + weight_bits + ceil(log2 rows)``.

Model inputs come from off-chip and are not counted.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from math import ceil, log2, prod

import networkx as nx

from ..ir.program import XbarProgram
from ..ir.values import refs
from .shape import shape_of


def layer_graph(program: XbarProgram, target) -> nx.DiGraph:
    """Crossbar layers as nodes; an edge ``u -> v`` with ``bits`` when ``u``'s output reaches ``v`` via host ops."""
    g = nx.DiGraph()
    by_name = {n.name: n for n in program.nodes}
    order = {n.name: i for i, n in enumerate(program.nodes)}
    bits = target.precision.input_bits
    for node in program.nodes:
        if node.op != "xbar":
            continue
        m = program.matrices[node.target]
        g.add_node(node.target, inputs=prod(m.input_shape), outputs=prod(m.output_shape))
    for node in program.nodes:
        if node.op != "xbar":
            continue
        for u in _producers(node, by_name, order):
            size = min(g.nodes[node.target]["inputs"], g.nodes[u]["outputs"])
            g.add_edge(u, node.target, bits=size * bits)
    return g


def _producers(node, by_name, order) -> list[str]:
    """Crossbar layers whose outputs reach ``node``'s inputs through host ops only, in program order.

    The order fixes the order of the graph's edges, which the placement heuristic and the traffic
    sums follow: it must not depend on string hashing (PYTHONHASHSEED), or compiles differ.
    """
    found, stack, seen = {}, list(refs(node.args)), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        n = by_name[name]
        if n.op == "xbar":
            found[n.target] = min(order[name], found.get(n.target, order[name]))
        else:
            stack.extend(refs((n.args, n.kwargs)))
    return sorted(found, key=found.__getitem__)


def psum_groups(program: XbarProgram) -> dict[str, list[tuple[tuple[int, ...], int]]]:
    """Per layer: (crossbars whose columns add into the same outputs, outputs per image), for groups of 2+."""
    members: dict[tuple, set[int]] = defaultdict(set)
    outputs: dict[tuple, int] = {}
    widths: dict[str, int] = {}
    for b in program.blocks:
        plan = program.plans[b.layer]
        if b.layer not in widths:
            widths[b.layer] = shape_of(program.matrices[b.layer]).out_hw[1]
        pixels = min(widths[b.layer], (b.slice + 1) * plan.w_o) - b.slice * plan.w_o
        key = (b.layer, b.out_row, b.slice, b.group, b.out_channels)
        members[key].add(b.crossbar)
        outputs[key] = (b.out_channels[1] - b.out_channels[0]) * pixels * plan.phases
    for s in program.slices:
        key = (s.layer, s.group, s.col_lo, s.col_hi)
        members[key].add(s.crossbar)
        outputs[key] = (s.col_hi - s.col_lo) * program.plans[s.layer].phases
    out = defaultdict(list)
    for key, xs in members.items():
        if len(xs) > 1:
            out[key[0]].append((tuple(sorted(xs)), outputs[key]))
    return out


def psum_bits(target) -> int:
    return target.precision.input_bits + target.precision.weight_bits + ceil(log2(target.crossbar.rows))


def tile_traffic(program: XbarProgram, target, tiles_of: dict[int, tuple[int, ...]],
                 graph: nx.DiGraph | None = None, groups=None) -> dict[str, int]:
    """Bits per image reaching each layer from other tiles; ``tiles_of[crossbar]`` lists the tile of each copy."""
    graph = layer_graph(program, target) if graph is None else graph
    groups = psum_groups(program) if groups is None else groups
    share: dict[str, Counter] = defaultdict(Counter)
    for x in program.crossbars:
        for t in tiles_of[x.index]:
            share[x.layer][t] += 1
    frac = {layer: {t: n / sum(c.values()) for t, n in c.items()} for layer, c in share.items()}
    bits = psum_bits(target)
    traffic = {}
    for v in graph.nodes:
        total = 0.0
        for u, _, data in graph.in_edges(v, data=True):
            total += data["bits"] * sum(f * (1 - frac[u].get(t, 0.0)) for t, f in frac[v].items())
        replicas = program.plans[v].replicas
        for xs, outputs in groups.get(v, ()):
            for copy in range(replicas):
                spread = len({tiles_of[x][copy] for x in xs})
                total += (spread - 1) * outputs / replicas * bits
        traffic[v] = round(total)
    return traffic
