"""Diagnostic codes, locations and the one exception type the compiler raises on bad input.

Codes are stable and tests match them, never the prose:

- ``XB0xx`` command line and files (missing file, failing model factory)
- ``XB1xx`` front end (tracing, unsupported operators)
- ``XB2xx`` graph passes
- ``XB3xx`` mapping and placement
- ``XB4xx`` target descriptions
- ``XB5xx`` netlist and emulator
- ``XB6xx`` pass framework and pipelines
- ``XB7xx`` sweeps (campaigns of trials)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

#: Every code the compiler emits, with a one-line title (documented in docs/diagnostics.md).
CODES: dict[str, str] = {
    "XB001": "file not found",
    "XB002": "model file or factory failed",
    "XB003": "bad command-line value",
    "XB004": "output directory cannot be written",
    "XB005": "optional dependency not installed",
    "XB006": "input too large for this machine",
    "XB101": "model cannot be traced",
    "XB102": "data-dependent control flow",
    "XB103": "operator not supported",
    "XB104": "bad example inputs",
    "XB105": "unsupported operand of a weight-stationary op",
    "XB106": "unknown front end",
    "XB120": "non-finite parameter or buffer",
    "XB121": "crossbar layer with zero inputs or outputs",
    "XB122": "model returns no tensor",
    "XB201": "graph pass failed a numeric check",
    "XB202": "graph annotation missing",
    "XB220": "quantisation needs calibration data",
    "XB221": "floating-point multiply left in a crossbar segment",
    "XB222": "calibration data does not fit the model",
    "XB223": "calibration data empty or not finite",
    "XB230": "reorder solver fell back to the heuristic (warning)",
    "XB250": "polarization needs a polarized target",
    "XB251": "a crossbar fragment holds weights of both signs (model not polarized)",
    "XB301": "layer cannot be mapped on this target",
    "XB302": "model needs more chips than allowed",
    "XB303": "crossbar program failed verification",
    "XB320": "block-Toeplitz crossbars disagree with their placement",
    "XB321": "replication solver fell back to the greedy result",
    "XB350": "a pruned layer's routing table disagrees with its crossbars",
    "XB310": "model placed on several chips (warning)",
    "XB401": "unknown target key",
    "XB402": "wrong type for target key",
    "XB403": "missing target key",
    "XB404": "impossible target combination",
    "XB405": "malformed target file",
    "XB406": "unknown target name",
    "XB407": "bad override",
    "XB501": "netlist file missing",
    "XB502": "netlist does not match its schema",
    "XB503": "netlist blob checksum mismatch",
    "XB504": "netlist version not supported",
    "XB505": "bad emulator input",
    "XB506": "model does not match the netlist",
    "XB507": "no such crossbar or layer in the netlist",
    "XB508": "a host operation of the netlist failed",
    "XB510": "netlist index or range out of bounds",
    "XB511": "netlist placement records overlap",
    "XB512": "netlist weight not placed exactly `copies` times",
    "XB513": "netlist crossbar sites inconsistent with the target's hierarchy",
    "XB514": "netlist target section does not match its fingerprint",
    "XB515": "netlist file or array larger than declared or allowed",
    "XB516": "netlist archive holds a member the netlist does not name",
    "XB517": "netlist bookkeeping inconsistent",
    "XB520": "integer mode needs a quantised netlist",
    "XB521": "row blocks disagree with the quantised netlist",
    "XB530": "bad fault map",
    "XB531": "device mode needs a quantised netlist programmed onto a chip",
    "XB532": "remap-faults stopped at its time limit (warning)",
    "XB535": "polarized layer's fragment signs disagree with its weights",
    "XB540": "column-gain compensation needs calibration data",
    "XB601": "unknown pass",
    "XB602": "bad pipeline text",
    "XB603": "pipeline contract violated",
    "XB604": "bad pass option",
    "XB605": "unknown pipeline name",
    "XB606": "no verifier for the IR",
    "XB701": "unknown sweep spec key",
    "XB702": "wrong type for sweep spec key",
    "XB703": "missing sweep spec key",
    "XB704": "bad value in a sweep spec",
    "XB705": "malformed sweep spec file",
    "XB706": "sweep directory holds another sweep",
    "XB707": "sweep results unreadable",
    "XB708": "bad sweep evaluation data",
    "XB710": "sweep trial raised an unexpected error",
}


@dataclass(frozen=True)
class Location:
    """Where a diagnostic points: an fx node, the user's source line, a file/key, a crossbar id."""

    node: str | None = None
    source: str | None = None
    file: str | None = None
    key: str | None = None
    crossbar: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(f"file {self.file}")
        if self.key:
            parts.append(f"key '{self.key}'")
        if self.node:
            parts.append(f"node '{self.node}'")
        if self.crossbar:
            parts.append(f"crossbar {self.crossbar}")
        text = ", ".join(parts)
        if self.source:
            text += ("\n  " if text else "") + f"at {self.source}"
        return text


class CompileError(Exception):
    """A coded error about the user's input; the CLI prints it and exits with status 2."""

    exit_status = 2

    def __init__(self, code: str, message: str, *, hint: str | None = None,
                 location: Location | None = None, details: list[str] | None = None):
        if code not in CODES:
            raise ValueError(f"unregistered diagnostic code {code}")
        self.code = code
        self.message = message
        self.hint = hint
        self.location = location or Location()
        self.details = list(details or [])
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"error[{self.code}]: {self.message}"]
        loc = str(self.location)
        if loc:
            lines.append(f"  --> {loc}")
        lines.extend(f"  - {d}" for d in self.details)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class XBWarning(UserWarning):
    """A lossy or unusual decision the compiler made on the user's behalf."""


def warn(code: str, message: str) -> None:
    """Emit a coded warning (never silent about lossy decisions)."""
    warnings.warn(f"[{code}] {message}", XBWarning, stacklevel=2)


def source_of(node) -> str | None:
    """The user's source line for an fx node, from the stack trace the tracer recorded."""
    trace = node.meta.get("stack_trace") if node is not None else None
    if not trace:
        return None
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("File "):
            code = lines[i + 1] if i + 1 < len(lines) else ""
            return f"{lines[i]}: {code}".strip()
    return lines[-1] if lines else None
