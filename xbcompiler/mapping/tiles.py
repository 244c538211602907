"""Assign crossbar copies to tile slots: in order (``fill``), or to cut inter-tile traffic (``min-traffic``).

``min-traffic`` is a heuristic on the layer graph (docs/mapping.md, "Tiles"): layers in program
(topological) order; each layer starts on the tile holding most of its producers' crossbars when that
tile has room, and a partial-sum group (crossbars adding into the same outputs) never straddles a tile
boundary when it fits in one tile. It is kept only when its traffic (:mod:`.traffic`) beats ``fill``
without needing more chips.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

from ..ir.program import Crossbar, XbarProgram
from .traffic import layer_graph, psum_groups, tile_traffic

Sites = dict[int, list[tuple[int, int]]]  # crossbar index -> (tile, slot) of each copy


def _layers(program: XbarProgram) -> list[tuple[str, list[int], int]]:
    xs = defaultdict(list)
    for x in program.crossbars:
        xs[x.layer].append(x.index)
    names = [n.target for n in program.nodes if n.op == "xbar"]
    return [(name, xs[name], program.plans[name].replicas) for name in names if xs[name]]


def fill(program: XbarProgram, per_tile: int) -> Sites:
    """Copy after copy of each layer, layers in program order, tiles filled slot by slot."""
    sites: Sites = defaultdict(list)
    pos = 0
    for _, xs, replicas in _layers(program):
        for _ in range(replicas):
            for x in xs:
                sites[x].append(divmod(pos, per_tile))
                pos += 1
    return sites


def _chunks(xs: list[int], group_of: dict[int, int]) -> list[list[int]]:
    """Runs of consecutive crossbars of one partial-sum group (single crossbars stand alone)."""
    chunks: list[list[int]] = []
    for x in xs:
        if chunks and x in group_of and group_of.get(chunks[-1][-1]) == group_of[x]:
            chunks[-1].append(x)
        else:
            chunks.append([x])
    return chunks


def min_traffic(program: XbarProgram, per_tile: int, graph, groups) -> Sites:
    """The layer-graph heuristic described in the module docstring (``groups``: :func:`psum_groups`)."""
    group_of = {x: i for i, (xs, _) in enumerate(g for gs in groups.values() for g in gs) for x in xs}
    free: list[int] = []
    held: dict[str, Counter] = defaultdict(Counter)
    sites: Sites = defaultdict(list)

    def open_tile() -> int:
        free.append(per_tile)
        return len(free) - 1

    for name, xs, replicas in _layers(program):
        near = Counter()
        for u in graph.predecessors(name):
            near.update(held[u])
        # most producer crossbars first, ties to the lower tile: independent of the order of ``near``
        roomy = sorted((t for t in near if free[t] > 0), key=lambda t: (-near[t], t))
        cur = roomy[0] if roomy else (len(free) - 1 if free and free[-1] > 0 else open_tile())
        for _ in range(replicas):
            for chunk in _chunks(xs, group_of):
                if len(chunk) <= per_tile and free[cur] < len(chunk):
                    cur = len(free) - 1 if free[-1] >= len(chunk) else open_tile()
                for x in chunk:
                    if free[cur] == 0:
                        cur = len(free) - 1 if free[-1] > 0 else open_tile()
                    sites[x].append((cur, per_tile - free[cur]))
                    free[cur] -= 1
                    held[name][cur] += 1
    return sites


def place(program: XbarProgram, target, method: str) -> tuple[XbarProgram, dict]:
    """The placed program (tile, slot, chip of each copy; ``tile_traffic_bits`` per plan) and a report."""
    per_tile, tiles_per_chip = target.hierarchy.crossbars_per_tile, target.hierarchy.tiles
    graph = layer_graph(program, target)
    groups = psum_groups(program)

    def evaluate(sites: Sites) -> tuple[dict[str, int], int]:
        tiles_of = {x: tuple(t for t, _ in s) for x, s in sites.items()}
        traffic = tile_traffic(program, target, tiles_of, graph, groups)
        chips = max((t // tiles_per_chip for s in sites.values() for t, _ in s), default=0) + 1
        return traffic, chips

    sites = fill(program, per_tile)
    traffic, chips = evaluate(sites)
    report = {"method": method, "fill_bits": sum(traffic.values())}
    if method == "min-traffic":
        other = min_traffic(program, per_tile, graph, groups)
        other_traffic, other_chips = evaluate(other)
        report["min_traffic_bits"] = sum(other_traffic.values())
        if sum(other_traffic.values()) < sum(traffic.values()) and other_chips <= chips:
            sites, traffic, chips = other, other_traffic, other_chips
            report["chosen"] = "min-traffic"
        else:
            report["chosen"] = "fill"
    report.update(objective_bits=sum(traffic.values()), chips=chips,
                  tiles=len({t for s in sites.values() for t, _ in s}))
    placed = []
    for x in program.crossbars:
        (tile, slot), *rest = sites[x.index]
        placed.append(Crossbar(index=x.index, layer=x.layer, rows=x.rows, cols=x.cols, tile=tile, slot=slot,
                               chip=tile // tiles_per_chip,
                               replica_sites=tuple((t, s, t // tiles_per_chip) for t, s in rest)))
    plans = {name: replace(plan, tile_traffic_bits=traffic.get(name, 0)) for name, plan in program.plans.items()}
    return program.replace(crossbars=tuple(placed), plans=plans, placed=True), report
