"""``xbc report DIR``: the cost report of a saved netlist as a table, as JSON (``--json``), as one
self-contained HTML page (``--html``); ``--plot`` writes the PNG plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import load_netlist
from ..diagnostics import CompileError, Location
from ..report.compare import compare_netlist
from ..report.costs import cost_report
from .args import command_parser
from .files import write_atomically

#: ``--html`` without a file name: this file in DIR.
HTML_NAME = "report.html"


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "report", run,
                       "print the cost report of a compiled netlist; --plot writes PNG plots, --html one page")
    p.add_argument("netlist", metavar="DIR", help="directory written by xbc compile -o")
    p.add_argument("--plot", action="store_true", help="write occupancy.png and layers.png into DIR")
    p.add_argument("--plot-dir", metavar="OUT", help="write the plots here instead of DIR")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--html", nargs="?", const="", metavar="FILE",
                   help=f"write one self-contained HTML page (tables and plots inlined; default DIR/{HTML_NAME})")
    p.add_argument("--inputs", metavar="FILE.npy",
                   help="a batch of inputs: count the FORMS zero-skipped fragment-cycles of polarized layers on it")
    return p


def _not_a_directory(path: Path, flag: str) -> None:
    if path.exists() and not path.is_dir():
        raise CompileError("XB004", f"{flag} {path} exists and is not a directory", location=Location(file=str(path)))


def run(args: argparse.Namespace) -> int:
    want_plots = bool(args.plot or args.plot_dir)
    plot_dir = Path(args.plot_dir or args.netlist)
    if want_plots:
        _not_a_directory(plot_dir, "--plot-dir")
    html_path = None if args.html is None else Path(args.html or Path(args.netlist) / HTML_NAME)
    if html_path is not None and html_path.is_dir():
        raise CompileError("XB004", f"--html {html_path} is a directory", hint="give a file name, e.g. report.html",
                           location=Location(file=str(html_path)))
    netlist = load_netlist(args.netlist)
    inputs = None
    if args.inputs is not None:
        from .models import load_npy

        inputs = load_npy(Path(args.inputs), netlist.doc.inputs[0])
    report = cost_report(netlist, inputs)
    comparison = compare_netlist(netlist)
    pngs: dict[str, bytes] = {}
    if want_plots or html_path is not None:
        from ..report.plots import netlist_figures, png_bytes

        pngs = {name: png_bytes(fig) for name, fig in netlist_figures(netlist).items()}
    plots = []
    if want_plots:
        plot_dir.mkdir(parents=True, exist_ok=True)
        plots = [write_atomically(plot_dir / name, lambda fh, png=png: fh.write(png)) for name, png in pngs.items()]
    if html_path is not None:
        from ..report.html_page import report_page

        page = report_page(report, comparison, pngs, title=f"xbc report: {Path(args.netlist).resolve().name}")
        write_atomically(html_path, lambda fh: fh.write(page.encode("utf-8")))
    if args.json:
        print(json.dumps({"netlist": str(args.netlist), **report.to_dict(), "strategies": comparison.to_dict(),
                          "plots": [str(p) for p in plots], "html": None if html_path is None else str(html_path)},
                         indent=1, sort_keys=True))
        return 0
    _print(report, comparison, [*plots, *([] if html_path is None else [html_path])])
    return 0


def _print(report, comparison, written: list[Path]) -> None:
    from ..report.table import (
        LAYER_COLUMNS,
        TEXT_COLUMNS,
        device_line,
        layer_rows,
        polarized_lines,
        saving_line,
        summary_line,
        total_row,
    )
    from .console import console, say, table

    out = console()
    t = table(f"cost report ({report.target}, per image)", LAYER_COLUMNS,
              right=[c for c in LAYER_COLUMNS if c not in TEXT_COLUMNS])
    for cells in layer_rows(report):
        t.add_row(*cells)
    t.add_row(*total_row(report), style="bold")
    out.print(t)
    for line in [summary_line(report), *polarized_lines(report), device_line(report)]:
        say(out, line)
    d = comparison.to_dict()
    say(out, "strategies (cost model): " + ", ".join(
        f"{s} {v['crossbars']} crossbars / {v['phases']} phases" for s, v in d["totals"].items()))
    say(out, saving_line(comparison))
    for p in written:
        say(out, f"wrote {p}")
