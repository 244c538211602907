"""Assign crossbar copies to tile slots: in order (``fill``), or to cut inter-tile traffic (``min-traffic``).

``min-traffic`` is a heuristic on the layer graph (docs/mapping.md, "Tiles"): layers in program
(topological) order; each layer starts on the tile holding most of its producers' crossbars when that
tile has room, and a partial-sum group (crossbars adding into the same outputs) never straddles a tile
boundary when it fits in one tile. It is kept only when its traffic (:mod:`.traffic`) beats ``fill``
without needing more chips.

Both work on arrays of copies (a ResNet-50 mapped semi-folded has 130,000 crossbars): a copy's slot is
the number of copies placed on its tile before it, so the heuristic only decides tiles, run by run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, replace

import numpy as np

from ..ir.program import Crossbar, XbarProgram
from .traffic import PsumGroups, layer_graph, psum_groups, tile_traffic


@dataclass(frozen=True)
class Sites:
    """Tile and slot of every crossbar copy: ``tile[x, r]`` and ``slot[x, r]`` for copy ``r`` of crossbar
    ``x`` (-1 past the replicas of ``x``'s layer)."""

    tile: np.ndarray
    slot: np.ndarray

    def of(self, index: int) -> list[tuple[int, int]]:
        """``(tile, slot)`` of each copy of crossbar ``index``."""
        return [(int(t), int(s)) for t, s in zip(self.tile[index], self.slot[index]) if t >= 0]


@dataclass(frozen=True)
class _Layer:
    name: str
    crossbars: np.ndarray  # indices, ascending
    replicas: int


def _layers(program: XbarProgram) -> list[_Layer]:
    xs = defaultdict(list)
    for x in program.crossbars:
        xs[x.layer].append(x.index)
    names = [n.target for n in program.nodes if n.op == "xbar"]
    return [_Layer(name, np.array(xs[name], dtype=np.int64), program.plans[name].replicas)
            for name in names if xs[name]]


def _sites(program: XbarProgram, layers: list[_Layer], tiles: np.ndarray, per_tile: int) -> Sites:
    """Sites from the tile of each copy, copies in placement order (layer, replica, crossbar)."""
    width = max((layer.replicas for layer in layers), default=1)
    xbar = np.concatenate([np.tile(layer.crossbars, layer.replicas) for layer in layers] or [np.zeros(0, np.int64)])
    copy = np.concatenate([np.repeat(np.arange(layer.replicas), layer.crossbars.size) for layer in layers]
                          or [np.zeros(0, np.int64)])
    order = np.argsort(tiles, kind="stable")
    starts = np.searchsorted(tiles[order], tiles[order])  # first position of each copy's tile in sorted order
    slots = np.empty_like(tiles)
    slots[order] = np.arange(tiles.size) - starts
    if slots.size and slots.max() >= per_tile:
        raise AssertionError("a tile got more copies than it has slots")
    n = len(program.crossbars)
    tile, slot = np.full((n, width), -1, dtype=np.int64), np.full((n, width), -1, dtype=np.int64)
    tile[xbar, copy], slot[xbar, copy] = tiles, slots
    return Sites(tile, slot)


def fill(program: XbarProgram, per_tile: int) -> Sites:
    """Copy after copy of each layer, layers in program order, tiles filled slot by slot."""
    layers = _layers(program)
    units = sum(layer.crossbars.size * layer.replicas for layer in layers)
    return _sites(program, layers, np.arange(units, dtype=np.int64) // per_tile, per_tile)


def _runs(xs: np.ndarray, group_of: np.ndarray, per_tile: int) -> list[tuple[int, bool]]:
    """The layer's crossbars cut into runs ``(length, keep_together)``.

    A partial-sum group that fits one tile (consecutive crossbars of one group) is kept together; a
    stretch of crossbars in no such group flows over tile boundaries freely.
    """
    g = group_of[xs]
    if xs.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (g[1:] < 0)])
    lengths = np.diff(np.r_[starts, xs.size])
    together = (g[starts] >= 0) & (lengths > 1) & (lengths <= per_tile)
    runs: list[tuple[int, bool]] = []
    for length, keep in zip(lengths.tolist(), together.tolist()):
        if not keep and runs and not runs[-1][1]:
            runs[-1] = (runs[-1][0] + length, False)
        else:
            runs.append((length, keep))
    return runs


def min_traffic(program: XbarProgram, per_tile: int, graph, groups: dict[str, PsumGroups]) -> Sites:
    """The layer-graph heuristic described in the module docstring (``groups``: :func:`psum_groups`)."""
    group_of = np.full(len(program.crossbars), -1, dtype=np.int64)
    offset = 0
    for layer_groups in groups.values():
        group_of[layer_groups.members] = layer_groups.owner + offset
        offset += layer_groups.outputs.size
    free: list[int] = []
    held: dict[str, Counter] = defaultdict(Counter)
    segments: list[list[int]] = []  # [tile, copies] in placement order, neighbours on one tile merged

    def open_tile() -> int:
        free.append(per_tile)
        return len(free) - 1

    def put(tile: int, count: int, name: str) -> None:
        free[tile] -= count
        held[name][tile] += count
        if segments and segments[-1][0] == tile:
            segments[-1][1] += count
        else:
            segments.append([tile, count])

    layers = _layers(program)
    for layer in layers:
        near = Counter()
        for u in graph.predecessors(layer.name):
            near.update(held[u])
        # most producer crossbars first, ties to the lower tile: independent of the order of ``near``
        roomy = sorted((t for t in near if free[t] > 0), key=lambda t: (-near[t], t))
        cur = roomy[0] if roomy else (len(free) - 1 if free and free[-1] > 0 else open_tile())
        runs = _runs(layer.crossbars, group_of, per_tile)
        for _ in range(layer.replicas):
            for length, together in runs:
                if together and free[cur] < length:
                    cur = len(free) - 1 if free[-1] >= length else open_tile()
                while length:
                    if free[cur] == 0:
                        cur = len(free) - 1 if free[-1] > 0 else open_tile()
                    k = min(free[cur], length)
                    put(cur, k, layer.name)
                    length -= k
    tiles = np.repeat(np.array([t for t, _ in segments], dtype=np.int64),
                      np.array([n for _, n in segments], dtype=np.int64))
    return _sites(program, layers, tiles, per_tile)


def place(program: XbarProgram, target, method: str) -> tuple[XbarProgram, dict]:
    """The placed program (tile, slot, chip of each copy; ``tile_traffic_bits`` per plan) and a report."""
    per_tile, tiles_per_chip = target.hierarchy.crossbars_per_tile, target.hierarchy.tiles
    graph = layer_graph(program, target)
    groups = psum_groups(program)

    def evaluate(sites: Sites) -> tuple[dict[str, int], int]:
        traffic = tile_traffic(program, target, sites.tile, graph, groups)
        return traffic, int(sites.tile.max(initial=0)) // tiles_per_chip + 1

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
    used = sites.tile[sites.tile >= 0]
    report.update(objective_bits=sum(traffic.values()), chips=chips, tiles=int(np.unique(used).size))
    tiles, slots = sites.tile[:, 0].tolist(), sites.slot[:, 0].tolist()
    rest = [()] * len(tiles)
    for x, r in zip(*np.nonzero(sites.tile[:, 1:] >= 0)):  # copies 2.. of replicated layers
        t = int(sites.tile[x, r + 1])
        rest[x] += ((t, int(sites.slot[x, r + 1]), t // tiles_per_chip),)
    placed = [Crossbar(x.index, x.layer, x.rows, x.cols, t, s, t // tiles_per_chip, r)
              for x, t, s, r in zip(program.crossbars, tiles, slots, rest)]
    plans = {name: replace(plan, tile_traffic_bits=traffic.get(name, 0)) for name, plan in program.plans.items()}
    return program.replace(crossbars=tuple(placed), plans=plans, placed=True), report
