"""The crossbar program verifier: ids, capacity, overlap, exact weight coverage, node references."""

from __future__ import annotations

import numpy as np

from ..frontend.ops import HOST_OPS
from .program import XbarProgram, fail
from .values import refs
from .verify_toeplitz import TOEPLITZ, verify_blocks


def verify_program(program: XbarProgram, target=None) -> None:
    _verify_nodes(program)
    if not program.crossbars and not program.slices:
        return
    _verify_crossbars(program, target)
    _verify_coverage(program)
    verify_blocks(program)


def _verify_nodes(program: XbarProgram) -> None:
    seen: set[str] = set()
    for node in program.nodes:
        if node.name in seen:
            raise fail(f"duplicate node name '{node.name}'", node=node.name)
        missing = [r for r in refs((node.args, node.kwargs)) if r not in seen]
        if missing:
            raise fail(f"node '{node.name}' uses {missing} before they are defined", node=node.name)
        if node.op == "host" and node.target not in HOST_OPS:
            raise fail(f"host op '{node.target}' is not in the allow-list", node=node.name)
        if node.op == "xbar" and node.target not in program.matrices:
            raise fail(f"crossbar node '{node.name}' names unknown layer '{node.target}'", node=node.name)
        if node.op == "const" and node.target not in program.constants:
            raise fail(f"constant '{node.target}' missing", node=node.name)
        seen.add(node.name)
    missing = [r for r in refs(program.output) if r not in seen]
    if missing:
        raise fail(f"output uses undefined nodes {missing}")


def _verify_crossbars(program: XbarProgram, target) -> None:
    ids = [x.id for x in program.crossbars]
    if len(set(ids)) != len(ids):
        raise fail("crossbar ids are not unique")
    if [x.index for x in program.crossbars] != list(range(len(program.crossbars))):
        raise fail("crossbar indices must be 0..n-1 in order")
    for x in program.crossbars:
        if target is not None and (x.rows > target.crossbar.rows or x.cols > target.logical_cols):
            raise fail(f"crossbar {x.id} is {x.rows}x{x.cols}, larger than the target allows", crossbar=x.id)
        if target is not None and program.placed and x.slot >= target.hierarchy.crossbars_per_tile:
            raise fail(f"crossbar {x.id} exceeds the tile capacity", crossbar=x.id)
    sites = [(x.tile, x.slot) for x in program.crossbars] + \
        [(t, s) for x in program.crossbars for t, s, _ in x.replica_sites]
    if program.placed and len(set(sites)) != len(sites):
        raise fail("two crossbars (or replicas) share a tile slot")
    if target is not None and program.placed and any(s >= target.hierarchy.crossbars_per_tile for _, s in sites):
        raise fail("a replica exceeds the tile capacity")
    used = {x.index: np.zeros((x.rows, x.cols), dtype=bool) for x in program.crossbars}
    for s in program.slices:
        x = program.crossbars[s.crossbar]
        h, w = s.row_hi - s.row_lo, s.col_hi - s.col_lo
        if s.layer != x.layer:
            raise fail(f"slice of layer {s.layer} placed on crossbar of {x.layer}", crossbar=x.id)
        if h <= 0 or w <= 0 or s.xrow < 0 or s.xcol < 0 or s.xrow + h > x.rows or s.xcol + w > x.cols:
            raise fail(f"slice {s} does not fit crossbar {x.id}", crossbar=x.id)
        cells = used[x.index][s.xrow:s.xrow + h, s.xcol:s.xcol + w]
        if cells.any():
            raise fail(f"slices overlap on crossbar {x.id}", crossbar=x.id)
        cells[...] = True


def _verify_coverage(program: XbarProgram) -> None:
    counts = {name: np.zeros(m.weight.shape, dtype=np.int64) for name, m in program.matrices.items()}
    for s in program.slices:
        if not (0 <= s.group < counts[s.layer].shape[0]):
            raise fail(f"slice names group {s.group} of layer {s.layer}", node=s.layer)
        block = counts[s.layer][s.group, s.row_lo:s.row_hi, s.col_lo:s.col_hi]
        if block.shape != (s.row_hi - s.row_lo, s.col_hi - s.col_lo):
            raise fail(f"slice {s} lies outside the matrix of {s.layer}", node=s.layer)
        block += 1
    for name, c in counts.items():
        if name in program.plans and program.plans[name].strategy in TOEPLITZ:
            continue  # verify_blocks checks these
        copies = program.plans[name].copies if name in program.plans else 1
        pruned = program.plans[name].pruned_weights if name in program.plans else 0
        absent = (c == 0) & (program.matrices[name].weight == 0) & (pruned > 0)  # compact-pruned-rows
        if int(absent.sum()) != pruned:
            raise fail(f"{int(absent.sum())} zero weights of layer {name} are placed nowhere, the plan says "
                       f"{pruned} are pruned", node=name)
        ok = (c == copies) | absent
        if not ok.all():
            bad = np.argwhere(~ok)[0]
            raise fail(f"weight (group {bad[0]}, row {bad[1]}, col {bad[2]}) of layer {name} is placed "
                       f"{c[tuple(bad)]} times, expected {copies}", node=name)
