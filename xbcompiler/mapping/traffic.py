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

from collections import defaultdict
from dataclasses import dataclass
from math import ceil, log2, prod

import networkx as nx
import numpy as np

from ..ir.program import XbarProgram
from ..ir.tables import block_table
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


@dataclass(frozen=True)
class PsumGroups:
    """One layer's partial-sum groups: crossbars whose columns add into the same outputs, 2+ per group.

    Group ``g`` holds the crossbars ``members[owner == g]`` (ascending) and produces ``outputs[g]``
    values per image.
    """

    members: np.ndarray
    owner: np.ndarray
    outputs: np.ndarray

    def __iter__(self):
        """``(crossbars, outputs)`` of each group."""
        for g, n in enumerate(self.outputs.tolist()):
            yield tuple(self.members[self.owner == g].tolist()), n

    def __len__(self) -> int:
        return int(self.outputs.size)


def psum_groups(program: XbarProgram) -> dict[str, PsumGroups]:
    """Per layer with any: its partial-sum groups.

    Crossbars share a group when their blocks have the same output row, width slice, conv group and
    output channels, or their slices the same conv group and matrix columns.
    """
    keys = {}  # layer -> rows (crossbar, outputs, *key)
    table = block_table(program.blocks)
    for layer, positions in table.positions.items():
        plan = program.plans[layer]
        xb, group, sl, out_row, _, _, _, _, o0, o1, _, _ = table.fields[positions].T
        pixels = np.minimum(shape_of(program.matrices[layer]).out_hw[1], (sl + 1) * plan.w_o) - sl * plan.w_o
        keys[layer] = np.stack([xb, (o1 - o0) * pixels * plan.phases, out_row, sl, group, o0, o1], axis=1)
    slices = defaultdict(list)
    for s in program.slices:
        slices[s.layer].append((s.crossbar, (s.col_hi - s.col_lo) * program.plans[s.layer].phases, 0, 0, s.group,
                                s.col_lo, s.col_hi))
    keys.update({layer: np.array(rows, dtype=np.int64) for layer, rows in slices.items()})
    out = {}
    for layer, rows in keys.items():
        rows = np.unique(rows, axis=0)  # one row per (crossbar, key)
        _, first, owner, size = np.unique(rows[:, 2:], axis=0, return_index=True, return_inverse=True,
                                          return_counts=True)
        owner = owner.reshape(-1)
        shared = size > 1
        if not shared.any():
            continue
        renumber = np.cumsum(shared) - 1  # groups of 2+ only, in key order
        keep = shared[owner]
        order = np.lexsort((rows[keep, 0], renumber[owner[keep]]))
        out[layer] = PsumGroups(members=rows[keep, 0][order], owner=renumber[owner[keep]][order],
                                outputs=rows[first[shared], 1])
    return out


def psum_bits(target) -> int:
    return target.precision.input_bits + target.precision.weight_bits + ceil(log2(target.crossbar.rows))


def tile_traffic(program: XbarProgram, target, tiles: np.ndarray, graph: nx.DiGraph | None = None,
                 groups: dict[str, PsumGroups] | None = None) -> dict[str, int]:
    """Bits per image reaching each layer from other tiles; ``tiles[x, r]`` is the tile of copy ``r`` of
    crossbar ``x`` (-1 past the layer's replicas)."""
    graph = layer_graph(program, target) if graph is None else graph
    groups = psum_groups(program) if groups is None else groups
    tiles = np.asarray(tiles, dtype=np.int64)
    tiles = tiles.reshape(len(program.crossbars), -1) if tiles.ndim == 1 else tiles
    n_tiles = int(tiles.max(initial=0)) + 1
    layer_of = defaultdict(list)
    for x in program.crossbars:
        layer_of[x.layer].append(x.index)
    frac = {}
    for layer, xs in layer_of.items():
        copies = tiles[xs, :program.plans[layer].replicas].ravel()
        counts = np.bincount(copies, minlength=n_tiles)
        frac[layer] = counts / counts.sum()
    bits = psum_bits(target)
    none = np.zeros(n_tiles)
    traffic = {}
    for v in graph.nodes:
        total = 0.0
        for u, _, data in graph.in_edges(v, data=True):
            total += data["bits"] * float(np.sum(frac.get(v, none) * (1 - frac.get(u, none))))
        replicas = program.plans[v].replicas
        g = groups.get(v)
        if g is not None and len(g):
            for copy in range(replicas):  # a group spread over n tiles moves n - 1 partial sums per output
                pairs = np.unique(g.owner * n_tiles + tiles[g.members, copy])
                spread = np.bincount(pairs // n_tiles, minlength=len(g))
                total += float(np.sum((spread - 1) * g.outputs)) / replicas * bits
        traffic[v] = round(total)
    return traffic
