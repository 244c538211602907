"""Exit statuses, error rendering, and the console output of ``xbc``: rich tables, lines, reports."""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from ..diagnostics import CompileError, XBWarning

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------------------------------
# errors


def render(exc: CompileError) -> str:
    """The error's own text plus the notes the pass manager added (failing pass, repro command)."""
    notes = [f"  note: {n}" for n in getattr(exc, "__notes__", ())]
    return "\n".join([exc.render(), *notes])


def one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


# --------------------------------------------------------------------------------------------------
# console helpers


def console(stderr: bool = False):
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would raise SystemExit(1), which reads as "mismatch"
            raise BrokenPipeError

    stream = sys.stderr if stderr else sys.stdout
    tty = is_tty(stream)
    # piped output is not cut to 80 columns; colours only on a terminal
    return _Console(file=stream, width=None if tty else 200, highlight=False, soft_wrap=False,
                    no_color=not tty, emoji=False)


def is_tty(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def status_spinner(message: str):
    """A rich spinner on stderr while work runs, only when stderr is a terminal."""
    if not is_tty(sys.stderr):
        return contextlib.nullcontext()
    return console(stderr=True).status(message)


def table(title: str | None, columns: Sequence[str], right: Sequence[str] = ()):
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left", overflow="fold")
    return t


def row(t, *cells: object) -> None:
    from rich.text import Text

    t.add_row(*(Text(fmt(c)) for c in cells))


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def say(out, text: str, style: str | None = None) -> None:
    from rich.text import Text

    out.print(Text(text, style=style or ""))


@contextlib.contextmanager
def xb_warnings() -> Iterator[list[str]]:
    """Collect the compiler's coded warnings for the report; other warnings are shown as usual."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", XBWarning)
        try:
            yield found
        finally:
            for w in caught:
                if issubclass(w.category, XBWarning):
                    found.append(str(w.message))
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def merge_warnings(coded: Sequence[str], plain: Sequence[str]) -> list[str]:
    """Coded warnings, then the driver's warnings that no coded one already says."""
    out = list(dict.fromkeys(coded))
    out += [w for w in dict.fromkeys(plain) if not any(w in c for c in out)]
    return out


# --------------------------------------------------------------------------------------------------
# printing reports


def print_summary(out, netlist, warning_lines: Sequence[str] = ()) -> None:
    """The per-layer table, totals and warnings of a netlist."""
    doc = netlist.doc
    target = doc.target.get("name", "?")
    t = table(f"{len(netlist.layers)} crossbar layers for target {target}",
              ["layer", "kind", "strategy", "K", "N", "groups", "crossbars", "cycles"],
              right=["K", "N", "groups", "crossbars", "cycles"])
    for layer in netlist.layers:
        row(t, layer.name, layer.kind, layer.strategy, layer.matrix_rows, layer.matrix_cols, layer.groups,
            layer.crossbars, layer.cycles)
    out.print(t)
    s = netlist.summary
    say(out, f"pipeline: {doc.pipeline}")
    totals = [f"crossbars {s['crossbars']}", f"tiles {s['tiles']}", f"chips {s['chips']}",
              f"host_ops {s['host_ops']}"]
    if "weights" in s:
        totals.append(f"weights {s['weights']}")
    if "cell_utilisation" in s:
        totals.append(f"cell utilisation {100 * s['cell_utilisation']:.1f}%")
    say(out, "totals: " + ", ".join(totals))
    for w in warning_lines:
        say(out, f"warning: {w}", "yellow")


def print_coverage(out, rows) -> None:
    """Every node of the traced model: where it runs and why."""
    t = table(f"coverage: {len(rows)} nodes", ["node", "op", "placement", "why"])
    for r in rows:
        row(t, r.node, r.op, _PLACEMENT.get(r.placement, r.placement), r.why)
    out.print(t)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.placement] = counts.get(r.placement, 0) + 1
    say(out, "coverage: " + ", ".join(f"{_PLACEMENT.get(k, k)} {v}" for k, v in counts.items()))
    print_macs(out, rows)


def print_macs(out, rows) -> None:
    """Multiply-accumulates per sample by operator, on crossbars and on the host, and the crossbar share."""
    from ..frontend.coverage import crossbar_share, mac_shares

    shares = mac_shares(rows)
    if not shares:
        return
    t = table("MACs per sample by operator", ["operator", "on crossbar", "on host", "share of all MACs"],
              right=["on crossbar", "on host", "share of all MACs"])
    total = sum(m.crossbar + m.host for m in shares)
    for m in shares:
        row(t, m.operator, f"{m.crossbar:,}", f"{m.host:,}", f"{100 * (m.crossbar + m.host) / total:.2f}%")
    out.print(t)
    say(out, f"MACs on crossbars: {sum(m.crossbar for m in shares):,} of {total:,} "
             f"({100 * crossbar_share(rows):.2f}%); on the host: {sum(m.host for m in shares):,}")


_PLACEMENT = {"crossbar": "on crossbar", "host": "on host", "folded": "folded", "removed": "removed"}


def print_verify(out, report) -> None:
    """The per-layer error table and the output error of a :class:`VerifyReport`."""
    t = table(f"verify ({report.mode} mode, tolerance {report.tolerance:g})",
              ["layer", "reference", "max abs", "rel", "ok", "first mismatch"],
              right=["max abs", "rel"])
    for c in report.layers:
        row(t, c.name, c.reference, c.max_abs, c.rel, c.ok, mismatch_site(c))
    out.print(t)
    say(out, f"output: max abs error {report.output_max_abs:.3g}, relative error {report.output_rel:.3g}")
    if report.float_rel is not None:
        mismatches = sum(c.mismatches for c in report.layers)
        checked = "not checked: random inputs; --inputs FILE.npy checks it" if report.float_tolerance is None else \
            f"{'within' if report.float_ok else 'ABOVE'} the float tolerance {report.float_tolerance:g}"
        say(out, f"integer outputs differing from the integer reference: {mismatches}; end-to-end relative "
                 f"error against the float model: {report.float_rel:.3g} ({checked})")


def mismatch_site(check, long: bool = False) -> str | None:
    """Where a :class:`LayerCheck`'s first mismatch sits: ``t0.x1 col 2``, or ``crossbar t0.x1, column 2``."""
    if check.first_mismatch is None:
        return None
    x, col = check.first_mismatch, check.first_mismatch_column
    return f"crossbar {x}, column {col}" if long else f"{x} col {col}"


def print_verdict(out, report) -> None:
    """``verified: ...`` or ``MISMATCH: ...`` for a :class:`VerifyReport`."""
    if report.ok:
        say(out, f"verified: max relative error {report.max_rel:.3g}", "green")
        return
    if report.exact:  # only the end-to-end error against the float model is too large
        say(out, f"QUANTISATION ERROR: the integer netlist matches its reference bit for bit, but its outputs differ "
                 f"from the float model's by {report.float_rel:.3g} of their range > float tolerance "
                 f"{report.float_tolerance:g} (use more weight/input bits or better calibration data; "
                 "--float-tolerance sets the bound)", "bold red")
        return
    bad = report.first_mismatch
    where = f"first mismatching layer {bad.name}" if bad else "the outputs differ"
    if bad is not None and bad.first_mismatch:
        where += f" ({mismatch_site(bad, long=True)})"
    say(out, f"MISMATCH: {where}; max relative error {report.max_rel:.3g} > tolerance "
             f"{report.tolerance:g}", "bold red")


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
