"""Summaries of a sweep directory: per grid point the mean and 95% interval of each metric, and plots.

A grid point is a combination of the varied keys other than ``seed``: its trials are the chips (seeds)
of one setting. Intervals come from :func:`xbcompiler.report.interval` (Student t); the line plots from
:func:`xbcompiler.report.plot_accuracy`, the Pareto front from :func:`xbcompiler.prune.report.write_pareto`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..diagnostics import CompileError, Location
from ..report import Interval, interval
from .results import METRICS, RESULTS, Row, SweepMeta, read_meta, read_rows

#: Keys that tell chips of one setting apart (not grid points of their own).
REPLICA_KEYS = ("seed",)
LABELS = {"accuracy": "test accuracy (%)", "crossbars": "crossbars", "chips": "chips",
          "energy_uj": "energy per inference (uJ)", "latency_us": "latency per inference (us)",
          "seconds": "trial time (s)"}


@dataclass(frozen=True)
class Point:
    """One grid point: its key values, its trials (ok and failed) and an interval per metric over the ok ones."""

    values: dict[str, Any]
    trials: int
    failed: int
    metrics: dict[str, Interval | None]


def load(out_dir: str | Path) -> tuple[SweepMeta, list[Row]]:
    """``sweep.json`` and the rows of ``results.csv`` of a sweep directory (XB707 when there is none)."""
    meta = read_meta(Path(out_dir))
    if meta is None:
        raise CompileError("XB707", f"{out_dir} holds no sweep (no sweep.json)", location=Location(file=str(out_dir)),
                           hint="run xbc sweep SPEC.toml -o DIR first")
    return meta, read_rows(Path(out_dir), meta)


def point_keys(meta: SweepMeta) -> list[str]:
    """The keys that make a grid point: the varied ones, less the seed."""
    return [k for k in meta.varied if k not in REPLICA_KEYS]


def summarise(meta: SweepMeta, rows: Sequence[Row]) -> list[Point]:
    """Grid points in the order their first trial appears in ``rows``."""
    keys = point_keys(meta)
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault(tuple(repr(r.values[k]) for k in keys), []).append(r)
    out = []
    for members in groups.values():
        ok = [r for r in members if r.ok]
        metrics = {}
        for m in METRICS:
            values = [r.metrics[m] for r in ok if r.metrics[m] is not None]
            metrics[m] = interval(values) if values else None
        out.append(Point({k: members[0].values[k] for k in keys}, len(members), len(members) - len(ok), metrics))
    return out


def line_series(points: Sequence[Point], x: str, lines: str | None, metric: str) -> dict[str, list[tuple[float, Interval]]]:
    """``metric`` against key ``x``, one series per value of key ``lines`` (one series without)."""
    series: dict[str, list[tuple[float, Interval]]] = {}
    for p in points:
        if p.metrics[metric] is None:
            continue
        label = f"{lines} = {p.values[lines]}" if lines else metric
        series.setdefault(label, []).append((float(p.values[x]), p.metrics[metric]))
    return series


def check_keys(meta: SweepMeta, x: str | None, lines: str | None, metrics: Sequence[str]) -> None:
    """XB003 for a plot key that is not a numeric grid key, or an unknown metric."""
    keys = point_keys(meta)
    for flag, key in (("--x", x), ("--lines", lines)):
        if key is not None and key not in keys:
            raise CompileError("XB003", f"bad {flag} '{key}': not a varied key of this sweep",
                               hint=f"varied keys: {', '.join(keys) or '(none)'}")
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise CompileError("XB003", f"bad --metric {', '.join(bad)}", hint=f"metrics: {', '.join(METRICS)}")


def default_axes(meta: SweepMeta, rows: Sequence[Row]) -> tuple[str | None, str | None]:
    """The first numeric varied key with more than one value as x, the first other varied key as lines."""
    keys = point_keys(meta)
    distinct = {k: {repr(r.values[k]) for r in rows} for k in keys}
    numeric = [k for k in keys if len(distinct[k]) > 1
               and all(isinstance(r.values[k], (int, float)) and not isinstance(r.values[k], bool) for r in rows)]
    x = numeric[0] if numeric else None
    others = [k for k in keys if k != x and len(distinct[k]) > 1]
    return x, others[0] if others else None


def plot_lines(path: Path, points: Sequence[Point], x: str, lines: str | None, metric: str, *,
               log_x: bool = False, title: str = "") -> Path:
    from ..report import plot_accuracy

    series = line_series(points, x, lines, metric)
    return plot_accuracy(path, series, x, title, log_x=log_x, ylabel=LABELS[metric], bands=True)


def plot_pareto(path: Path, points: Sequence[Point], cost: str, lines: str | None, title: str = "") -> Path:
    """Mean accuracy against mean ``cost`` (``crossbars`` or ``energy_uj``) of every point, front per series."""
    from ..prune.report import write_pareto

    series: dict[str, list[tuple[float, float]]] = {}
    for p in points:
        if p.metrics["accuracy"] is None or p.metrics[cost] is None:
            continue
        label = f"{lines} = {p.values[lines]}" if lines else "grid points"
        series.setdefault(label, []).append((p.metrics[cost].mean, p.metrics["accuracy"].mean))
    return write_pareto(path, series, title=title, xlabel=LABELS[cost])


def plot_all(out: Path, meta: SweepMeta, points: Sequence[Point], x: str | None, lines: str | None,
             metrics: Sequence[str], log_x: bool) -> list[Path]:
    """The line plots (``METRIC-vs-X.png``) and the two Pareto plots, written into ``out``."""
    written = []
    if x is not None:
        for m in metrics:
            written.append(plot_lines(out / f"{m}-vs-{_safe(x)}.png", points, x, lines, m, log_x=log_x,
                                      title=meta.name))
    for cost in ("crossbars", "energy_uj"):
        written.append(plot_pareto(out / f"pareto-accuracy-{cost}.png", points, cost, lines, title=meta.name))
    return written


def _safe(key: str) -> str:
    return key.replace(".", "_")


__all__ = ["RESULTS", "Point", "check_keys", "default_axes", "load", "plot_all", "plot_lines", "plot_pareto",
           "point_keys", "summarise"]
