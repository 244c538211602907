"""``remap-faults``: permute each crossbar's rows and columns so that its stuck cells cost least (issue 12, item 5)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from xbcompiler.diagnostics import CompileError, warn
from xbcompiler.emit import emit_netlist
from xbcompiler.emulator.programming import SA0, SA1, load_fault_map
from xbcompiler.ir.program import XbarProgram
from xbcompiler.mapping.remap_solve import RemapProblem, RemapResult, solve
from xbcompiler.netlist import Netlist
from xbcompiler.netlist.encoding import Encoding
from xbcompiler.netlist.placement import permutations, read_cells, row_classes
from xbcompiler.netlist.types import Crossbar
from xbcompiler.optimality import relative_gap
from xbcompiler.pipeline import Pass, PassContext

#: Warning code of a remap stopped at its time limit.
TIME_LIMIT_CODE = "XB532"


@dataclass(frozen=True)
class RemapFaultsPass(Pass):
    """Read a fault map and, per crossbar, choose the row (input) and column (output) permutations that put
    its stuck cells where the stored level already is what they are stuck at, or is least significant.

    A cell stuck at ``G_min`` holding level ``L`` of a plane of shift ``k*s`` costs ``L * 2**(k*s)``, one stuck
    at ``G_max`` ``(M - L) * 2**(k*s)``, over every cell a read sums (both cells of a differential pair;
    cells no weight occupies hold level 0). Rows stay within their row block or move to spare rows;
    columns move anywhere. Solved by alternating exact linear assignments (OR-Tools) from the identity
    (``xbcompiler.mapping.remap_solve``). The permutations go into the netlist's crossbars
    (``row_permutation``, ``column_permutation``) and are undone by the routing, so every emulator mode
    computes the same outputs on a fault-free chip. Cost before and after, lower bound, gap, status and
    assignments per layer go into the report and the netlist's provenance (docs/remap_faults.md).
    """

    fault_map: Path | None = None
    """The ``.npz`` fault map (docs/faults.md); none: the target's ``device.fault_map``."""
    time_limit_s: float = 60.0
    """Time limit of the whole pass; crossbars left at the deadline keep what they have (warning XB532)."""
    restarts: int = 2
    """Alternations from random column orders after the one from the identity, per faulty crossbar."""
    seed: int | None = None
    """Seed of those column orders; none: the compile seed."""

    name: ClassVar[str] = "remap-faults"
    stage: ClassVar[str] = "xbar"
    needs: ClassVar[frozenset[str]] = frozenset({"placed", "periphery"})
    establishes: ClassVar[frozenset[str]] = frozenset({"remapped"})

    def run(self, program: XbarProgram, ctx: PassContext) -> XbarProgram:
        path = self.fault_map or ctx.target.device.fault_map
        if not path:
            raise CompileError("XB530", "remap-faults needs a fault map",
                               hint="remap-faults{fault-map=PATH}, or set device.fault_map in the target")
        netlist = emit_netlist(program, ctx.target, "")
        faults = load_fault_map(netlist, path)
        deadline = time.perf_counter() + self.time_limit_s
        seed = ctx.seed if self.seed is None else self.seed
        results: dict[str, tuple[str, RemapResult]] = {}
        for x in netlist.crossbars:
            layer = netlist.layer(x.layer)
            sites = [faults[site] for site in x.site_ids]  # the crossbar and its replicas share the permutation
            if layer.quant is None or not any(s.any() for s in sites):
                continue
            problem = crossbar_problem(netlist, x, sites)
            results[x.id] = (x.layer, solve(problem, deadline=deadline, restarts=self.restarts, seed=seed))
        report = summarise(results, str(path), len(netlist.crossbars))
        if report["total"]["status"] == "time-limit":
            message = (f"remap-faults reached its {self.time_limit_s} s time limit; crossbars past it keep their "
                       "best permutations so far")
            warn(TIME_LIMIT_CODE, message)
            ctx.warnings.append(message)
        ctx.report[self.name] = report
        crossbars = tuple(_with_permutations(x, results.get(x.id)) for x in program.crossbars)
        provenance = {**program.provenance, self.name: {k: v for k, v in report.items() if k != "crossbars"}}
        return program.replace(crossbars=crossbars, provenance=provenance)


def crossbar_problem(netlist: Netlist, x: Crossbar, sites: list[np.ndarray]) -> RemapProblem:
    """The costs of crossbar ``x``'s cells in placement coordinates against the physical stuck cells
    ``[rows, physical_cols]`` (:data:`SA0` / :data:`SA1`) of each of its copies (itself, then its replicas)."""
    layer = netlist.layer(x.layer)
    enc = Encoding(layer.quant.encoding)
    m, planes = x.physical_cols // x.cols, enc.planes
    rows, cols = permutations(x)
    cells = netlist.crossbar_cells(x.id).reshape(x.rows, x.cols, m)
    levels = cells[np.ix_(rows, cols)][:, :, :planes].astype(np.int64)  # back to placement coordinates
    weight = (np.int64(1) << np.array(enc.plane_shifts, dtype=np.int64))[None, None, :]
    read = read_cells(layer, x)[:, :, None]
    stuck = np.stack(sites).reshape(len(sites), x.rows, x.cols, m)[..., :planes]
    return RemapProblem(cost0=np.where(read, levels * weight, 0),
                        cost1=np.where(read, (enc.max_level - levels) * weight, 0),
                        sa0=(stuck == SA0).sum(0), sa1=(stuck == SA1).sum(0), row_class=row_classes(layer, x))


_STATUS_ORDER = ("optimal", "feasible", "time-limit")


def _totals(results: list[RemapResult]) -> dict:
    before, after = sum(r.before for r in results), sum(r.after for r in results)
    bound = sum(r.bound for r in results)
    return {"faulty_crossbars": len(results),
            "remapped_crossbars": sum(1 for r in results if _moved(r.rows) or _moved(r.cols)),
            "cost_before": before, "cost_after": after, "lower_bound": bound,
            "gap": round(relative_gap(after, bound), 6),
            "status": max((r.status for r in results), key=_STATUS_ORDER.index, default="optimal"),
            "assignments": sum(r.iterations for r in results)}


def summarise(results: dict[str, tuple[str, RemapResult]], path: str, crossbars: int) -> dict:
    """The pass report: totals, per-layer totals and per-crossbar results of the crossbars with faults."""
    layers: dict[str, list[RemapResult]] = {}
    for layer, r in results.values():
        layers.setdefault(layer, []).append(r)
    return {"fault_map": path, "crossbars": [
                {"id": i, "layer": layer, "cost_before": r.before, "cost_after": r.after, "lower_bound": r.bound,
                 "gap": round(r.gap, 6), "status": r.status, "assignments": r.iterations}
                for i, (layer, r) in results.items()],
            "layers": {name: _totals(rs) for name, rs in layers.items()},
            "total": {"crossbars": crossbars, **_totals([r for _, r in results.values()])}}


def _moved(perm: np.ndarray) -> bool:
    return bool((perm != np.arange(len(perm))).any())


def _with_permutations(x, result: tuple[str, RemapResult] | None):
    if result is None:
        return x._replace(row_permutation=None, column_permutation=None)
    r = result[1]
    return x._replace(row_permutation=tuple(int(v) for v in r.rows) if _moved(r.rows) else None,
                      column_permutation=tuple(int(v) for v in r.cols) if _moved(r.cols) else None)
