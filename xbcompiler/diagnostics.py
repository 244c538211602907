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


@dataclass(frozen=True)
class Code:
    """One diagnostic code: its title, and the next step a user takes when a raise site gives no hint."""

    title: str
    next_step: str


#: Where every code is explained, named in every rendered error.
DOC = "docs/diagnostics.md"

#: Every code the compiler emits, with its title and default next step (docs/diagnostics.md is generated
#: from this table by tests/test_diagnostics.py).
REGISTRY: dict[str, Code] = {
    # XB0xx command line and files
    "XB001": Code("file not found",
                  "check the path: a relative path starts at the current directory"),
    "XB002": Code("model file or factory failed",
                  "fix the model file so that FILE.py:FACTORY names a function that returns a torch.nn.Module "
                  "(rerun with --debug for the traceback)"),
    "XB003": Code("bad command-line value",
                  "correct the flag's value; `xbc COMMAND --help` shows each flag's form and examples"),
    "XB004": Code("output directory cannot be written",
                  "choose another output path: a new name, or an earlier output of the same kind, where "
                  "you have write permission"),
    "XB005": Code("optional dependency not installed",
                  "install the extra that provides it: pip install 'xbcompiler[plot]', '[data]' or '[sweep]'"),
    "XB006": Code("input too large for this machine",
                  "use a smaller batch, input shape or file"),
    # XB1xx front end
    "XB101": Code("model cannot be traced",
                  "try the other front end (--frontend fx or --frontend export), or move Python-side logic out "
                  "of forward()"),
    "XB102": Code("data-dependent control flow",
                  "branch on Python values or shapes only, or compute both branches and pick with torch.where"),
    "XB103": Code("operator not supported",
                  "rewrite that part with a supported operator (docs/operators.md lists them and their "
                  "replacements)"),
    "XB104": Code("bad example inputs",
                  "give inputs the model runs on: check --input-shape (batch first) or the file's INPUT_SHAPE"),
    "XB105": Code("unsupported operand of a weight-stationary op",
                  "keep the weight an nn.Parameter used directly by the layer (F.linear, F.conv2d, x @ W), or "
                  "computed from parameters and buffers alone (--frontend export), with zero padding"),
    "XB106": Code("unknown front end",
                  "use --frontend auto, export or fx"),
    "XB120": Code("non-finite parameter or buffer",
                  "fix the NaN or infinite weights (a diverged training run?) before compiling"),
    "XB121": Code("crossbar layer with zero inputs or outputs",
                  "give every layer at least one input and one output channel, or remove it"),
    "XB122": Code("model returns no tensor",
                  "return the tensor(s) computed from the inputs from forward()"),
    # XB2xx graph passes
    "XB201": Code("graph pass failed a numeric check",
                  "report it with the reproduce: command if it is a built-in pass; in your own pass, keep the "
                  "function the model computes unchanged"),
    "XB202": Code("graph annotation missing",
                  "run the pass that records the annotation before this one (xbc passes shows what each pass "
                  "needs)"),
    "XB220": Code("quantisation needs calibration data",
                  "pass calibration data: --calibrate FILE.npy or --calibrate-random N (library: "
                  "compile(..., calibration=x))"),
    "XB221": Code("floating-point multiply left in a crossbar segment",
                  "compile with calibration data so that fold-pow2-scales runs, and keep custom passes from "
                  "inserting float scales after it"),
    "XB222": Code("calibration data does not fit the model",
                  "give calibration batches with the example inputs' shape (any batch size)"),
    "XB223": Code("calibration data empty or not finite",
                  "calibrate on a non-empty batch of typical, finite inputs"),
    "XB230": Code("reorder solver fell back to the heuristic (warning)",
                  "nothing, the heuristic's order is used; raise the reorder time limit (time-limit-s) for the "
                  "exact solver"),
    "XB250": Code("polarization needs a polarized target",
                  "use a target with --set encoding.signed=polarized --set crossbar.fragment_rows=N"),
    "XB251": Code("a crossbar fragment holds weights of both signs (model not polarized)",
                  "polarize the model first (xbc polarize, or xb.polarize) for this target's fragment_rows"),
    # XB3xx mapping and placement
    "XB301": Code("layer cannot be mapped on this target",
                  "map it with --pipeline fully-folded, or use a target with larger crossbars"),
    "XB302": Code("model needs more chips than allowed",
                  "use a larger target, prune the model, or raise --max-chips"),
    "XB303": Code("crossbar program failed verification",
                  "use a pipeline that ends with lower-to-xbar, a map-* pass and place-tiles; with only built-in "
                  "passes this is a bug: report it with the reproduce: command"),
    "XB310": Code("model placed on several chips (warning)",
                  "nothing if several chips are intended; else use a larger target or prune the model "
                  "(--max-chips 1 makes it an error)"),
    "XB320": Code("block-Toeplitz crossbars disagree with their placement",
                  "recompile the netlist: its crossbar cells were changed after it was written"),
    "XB321": Code("replication solver fell back to the greedy result",
                  "nothing, the greedy replication is used; raise replicate-layers{time-limit-s=...} for CP-SAT"),
    "XB322": Code("budgeted-mapping solver fell back to the greedy result",
                  "nothing, the greedy mapping (an exact enumeration) is used; raise map-budgeted{time-limit-s=...} "
                  "for CP-SAT"),
    "XB350": Code("a pruned layer's routing table disagrees with its crossbars",
                  "recompile the netlist (xbc prune writes it consistently); it was changed after it was written"),
    # XB4xx target descriptions
    "XB401": Code("unknown target key",
                  "correct the key's spelling; `xbc targets NAME` lists every key"),
    "XB402": Code("wrong type for target key",
                  "give the key a value of the type `xbc targets NAME` shows (quote strings in TOML)"),
    "XB403": Code("missing target key",
                  "add the key to the target file; docs/targets.md lists the required keys"),
    "XB404": Code("impossible target combination",
                  "change the named keys to a supported range or combination (docs/targets.md)"),
    "XB405": Code("malformed target file",
                  "fix the TOML syntax at the line given, or pass a built-in target name"),
    "XB406": Code("unknown target name",
                  "use a built-in name (`xbc targets` lists them) or the path of a .toml file"),
    "XB407": Code("bad override",
                  "write the override as KEY=VALUE with a dotted key, e.g. --set crossbar.rows=256"),
    # XB5xx netlist and emulator
    "XB501": Code("netlist file missing",
                  "pass the directory that `xbc compile -o DIR` wrote, with both netlist.json and weights.npz"),
    "XB502": Code("netlist does not match its schema",
                  "recompile the netlist with this xbcompiler: the file was edited, truncated or written by "
                  "another tool"),
    "XB503": Code("netlist blob checksum mismatch",
                  "recompile: weights.npz was changed or truncated after netlist.json recorded its checksum"),
    "XB504": Code("netlist version not supported",
                  "recompile the model with this xbcompiler (or read the netlist with the version that wrote it)"),
    "XB505": Code("bad emulator input",
                  "give inputs of the netlist's input shapes (batch first) as numeric .npy arrays, and a mode "
                  "of ideal, integer or device"),
    "XB506": Code("model does not match the netlist",
                  "verify against the model (and factory) the netlist was compiled from"),
    "XB507": Code("no such crossbar or layer in the netlist",
                  "use a layer name or crossbar id (like t0.x1) that `xbc inspect DIR` lists"),
    "XB508": Code("a host operation of the netlist failed",
                  "recompile the netlist: its records do not fit the tensors it computes (was it edited?)"),
    "XB510": Code("netlist index or range out of bounds",
                  "recompile the netlist: the record named was edited or corrupted"),
    "XB511": Code("netlist placement records overlap",
                  "recompile the netlist: the placement records named were edited or corrupted"),
    "XB512": Code("netlist weight not placed exactly `copies` times",
                  "recompile the netlist: its placement records were edited or corrupted"),
    "XB513": Code("netlist crossbar sites inconsistent with the target's hierarchy",
                  "recompile the netlist for the target it records: sites or hierarchy were edited"),
    "XB514": Code("netlist target section does not match its fingerprint",
                  "recompile the model for the intended target instead of editing the netlist's target section"),
    "XB515": Code("netlist file or array larger than declared or allowed",
                  "recompile the netlist with this xbcompiler (arrays stored uncompressed, as declared)"),
    "XB516": Code("netlist archive holds a member the netlist does not name",
                  "recompile: weights.npz holds arrays that netlist.json does not declare"),
    "XB517": Code("netlist bookkeeping inconsistent",
                  "recompile the netlist: its lists and counts were edited out of step"),
    "XB520": Code("integer mode needs a quantised netlist",
                  "for integer mode compile with --calibrate FILE.npy or --calibrate-random N; run a quantised "
                  "netlist in --mode integer, a float one in --mode ideal"),
    "XB521": Code("row blocks disagree with the quantised netlist",
                  "recompile the netlist: its crossbar cells or row blocks were edited"),
    "XB530": Code("bad fault map",
                  "write the fault map as docs/faults.md describes (xb.save_fault_map), for this netlist's "
                  "crossbars"),
    "XB531": Code("device mode needs a quantised netlist programmed onto a chip",
                  "compile with --calibrate or --calibrate-random, then run with --mode device (library: "
                  "xb.program first)"),
    "XB532": Code("remap-faults stopped at its time limit (warning)",
                  "nothing, the remaining crossbars keep their order; raise remap-faults{time-limit-s=...} to "
                  "remap them all"),
    "XB535": Code("polarized layer's fragment signs disagree with its weights",
                  "recompile the polarized model: the netlist's signs or weights were edited"),
    "XB540": Code("column-gain compensation needs calibration data",
                  "give a non-empty calibration batch: xbc emulate --calibrate FILE.npy (library: "
                  "xb.program(..., calibration=x))"),
    # XB6xx pass framework and pipelines
    "XB601": Code("unknown pass",
                  "use a pass name that `xbc passes` lists (or install the plug-in that provides it)"),
    "XB602": Code("bad pipeline text",
                  "write the pipeline as pass-a,pass-b{option=value,...}, e.g. fold-batchnorm,lower-im2col{rtol=1e-4}"),
    "XB603": Code("pipeline contract violated",
                  "reorder or add passes so that each one's needs are established before it (`xbc passes`); a "
                  "complete pipeline ends with lower-to-xbar, a map-* pass and place-tiles"),
    "XB604": Code("bad pass option",
                  "use the options and value types that `xbc passes` lists for this pass"),
    "XB605": Code("unknown pipeline name",
                  "use a named pipeline that `xbc passes` lists, or write the passes out"),
    "XB606": Code("no verifier for the IR",
                  "give the PassContext a verify_ir that checks this IR, or leave it at its default"),
    # XB7xx sweeps
    "XB701": Code("unknown sweep spec key",
                  "correct the key's spelling; docs/sweeps.md lists every spec key"),
    "XB702": Code("wrong type for sweep spec key",
                  "give the key a value of the type docs/sweeps.md lists"),
    "XB703": Code("missing sweep spec key",
                  "add the key to the spec (docs/sweeps.md lists the required keys)"),
    "XB704": Code("bad value in a sweep spec",
                  "change the named values to ones in range that exist (paths are relative to the spec file)"),
    "XB705": Code("malformed sweep spec file",
                  "fix the TOML syntax at the line given"),
    "XB706": Code("sweep directory holds another sweep",
                  "use another -o DIR, or add --force to discard the results already there"),
    "XB707": Code("sweep results unreadable",
                  "pass a directory written by `xbc sweep SPEC.toml -o DIR`; rerun the sweep there to rewrite "
                  "damaged results"),
    "XB708": Code("bad sweep evaluation data",
                  "set data.source to \"digits\" or to an .npz holding x_test and y_test (and x_train, y_train) "
                  "with one integer label per sample"),
    "XB710": Code("sweep trial raised an unexpected error",
                  "read the trial's message in results.csv; rerun the trial's compile alone with --debug to see "
                  "the traceback"),
}

#: The title of every code: ``CODES[code]``, ``code in CODES``.
CODES: dict[str, str] = {code: entry.title for code, entry in REGISTRY.items()}


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

    @property
    def next_step(self) -> str:
        """What to do: the raise site's hint, else the code's default next step."""
        return self.hint or REGISTRY[self.code].next_step

    def render(self) -> str:
        lines = [f"error[{self.code}]: {self.message}"]
        loc = str(self.location)
        if loc:
            lines.append(f"  --> {loc}")
        lines.extend(f"  - {d}" for d in self.details)
        lines.append(f"  hint: {self.next_step}")
        lines.append(f"  see: {DOC}, {self.code}")
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
