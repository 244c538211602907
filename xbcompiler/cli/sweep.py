"""``xbc sweep`` and ``xbc sweep-report``: campaigns of trials on Ray, and their summaries (docs/sweeps.md).

``xbc sweep SPEC.toml -o DIR`` validates the spec (nothing is written or started when it is bad), then
runs its trials into ``DIR/results.csv`` with its progress on stderr and a summary line on stdout.
``xbc sweep-report DIR`` prints per grid point the mean and 95% interval of each metric and writes the
plots.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ..diagnostics import CompileError
from ..progress import clock, progress
from .args import command_parser, int_arg
from .console import EXIT_MISMATCH, EXIT_OK, console, row, say, table


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "sweep", run, "run a sweep of compile-and-emulate trials on Ray")
    p.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (docs/sweeps.md)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory of results.csv (resumed)")
    p.add_argument("--workers", metavar="N", help="trials in flight (default: the cluster's CPUs; locally, "
                                                  "the CPUs of the Ray instance started)")
    p.add_argument("--address", metavar="ADDR", help="join an existing Ray cluster (e.g. auto, ray://host:10001)")
    p.add_argument("--force", action="store_true", help="discard the results of another sweep in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    r = command_parser(sub, common, "sweep-report", run_report,
                       "mean and 95%% interval per grid point of a sweep, and its plots")
    r.add_argument("dir", metavar="DIR", help="a sweep directory (xbc sweep -o DIR)")
    r.add_argument("--x", metavar="KEY", help="varied key on the x axis (default: the first numeric one)")
    r.add_argument("--lines", metavar="KEY", help="varied key with one line per value (default: the next one)")
    r.add_argument("--metric", action="append", default=[], metavar="NAME",
                   help="metric plotted against --x (repeatable; default accuracy)")
    r.add_argument("--log-x", action="store_true", help="symmetric log scale on x (rates over decades)")
    r.add_argument("--plot-dir", metavar="OUT", help="where the PNGs go (default DIR)")
    r.add_argument("--no-plot", action="store_true", help="only print the table")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    from ..campaign import load_spec, sweep
    from ..campaign.runner import import_ray

    workers = None if args.workers is None else int_arg(args.workers, "--workers", lo=1)
    spec = load_spec(args.spec)  # every check before anything is written or started
    import_ray()
    with _progress(not args.quiet) as show:
        outcome = sweep(spec, args.output, workers=workers, address=args.address, force=args.force, progress=show)
    rate = outcome.ran / outcome.trials_s if outcome.trials_s else 0.0
    summary = {"trials": outcome.trials, "ran": outcome.ran, "failed": outcome.failed, "skipped": outcome.skipped,
               "lost": outcome.lost, "compiles": outcome.compiles, "workers": outcome.workers,
               "wall_s": round(outcome.wall_s, 2), "trials_s": round(outcome.trials_s, 2),
               "trials_per_s": round(rate, 4), "results": str(Path(args.output) / "results.csv")}
    if args.json:
        print(json.dumps(summary))
    else:
        out = console()
        say(out, f"{outcome.trials} trials: ran {outcome.ran} ({outcome.failed} failed), skipped {outcome.skipped} "
                 f"finished before, lost {outcome.lost}; {outcome.compiles} compiles; {outcome.workers} workers; "
                 f"{outcome.wall_s:.1f} s ({rate:.3g} trials/s); wrote {summary['results']}")
        if outcome.lost:
            say(out, f"warning: {outcome.lost} trials were lost by Ray; run the same command again to finish them",
                "yellow")
    sys.stdout.flush()
    return EXIT_MISMATCH if outcome.lost else EXIT_OK


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable | None]:
    """The runner's progress callback: done of total, failed, running, skipped and ETA on stderr
    (:func:`xbcompiler.progress.progress`: a bar on a terminal, plain lines otherwise), opened at the first
    report, which carries the total."""
    if not enabled:
        yield None
        return
    with contextlib.ExitStack() as stack:
        advance = None

        def update(p) -> None:
            nonlocal advance
            if advance is None:
                advance = stack.enter_context(progress("sweep", p.total))
            eta = "-" if p.eta_s is None else clock(p.eta_s)
            advance(completed=p.done, info=f"failed {p.failed}, running {p.running}, skipped {p.skipped}, ETA {eta}")

        yield update


def run_report(args: argparse.Namespace) -> int:
    from ..campaign import report

    meta, rows = report.load(args.dir)
    metrics = args.metric or ["accuracy"]
    x, lines = report.default_axes(meta, rows)
    x, lines = args.x or x, args.lines or (lines if args.x is None or lines != args.x else None)
    report.check_keys(meta, x, lines, metrics)
    points = report.summarise(meta, rows)
    if args.json:
        print(json.dumps([{"values": p.values, "trials": p.trials, "failed": p.failed,
                           "metrics": {m: None if i is None else {"mean": i.mean, "half": i.half, "n": i.n}
                                       for m, i in p.metrics.items()}} for p in points]))
    else:
        _print_points(meta, rows, points)
    if not args.no_plot and rows:
        out = Path(args.plot_dir or args.dir)
        if not out.is_dir():
            raise CompileError("XB004", f"cannot write plots into {out}: not a directory")
        written = report.plot_all(out, meta, points, x, lines, metrics, args.log_x)
        if not args.json:
            say(console(), "plots: " + ", ".join(str(p) for p in written))
    return EXIT_OK


def _print_points(meta, rows, points) -> None:
    from ..campaign.report import point_keys

    out = console()
    keys = point_keys(meta)
    metrics = ("accuracy", "crossbars", "chips", "energy_uj", "latency_us", "seconds")
    t = table(f"{meta.name}: {len(rows)} trials, {len(points)} grid points (mean ± 95% interval over the seeds)",
              [*keys, "trials", "failed", *metrics], right=["trials", "failed", *metrics])
    for p in points:
        cells = [("-" if (i := p.metrics[m]) is None else f"{i.mean:.4g} ± {i.half:.2g}" if i.half
                  else f"{i.mean:.4g}") for m in metrics]
        row(t, *(p.values[k] for k in keys), p.trials, p.failed, *cells)
    out.print(t)
    failed = [r for r in rows if not r.ok]
    for code in sorted({r.status for r in failed}):
        first = next(r for r in failed if r.status == code)
        say(out, f"{sum(r.status == code for r in failed)} trials failed with {code}: {first.message}", "yellow")
