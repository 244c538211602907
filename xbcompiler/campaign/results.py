"""A sweep's directory: ``sweep.json`` (what ran), ``results.csv`` (one row per finished trial), Parquet.

Rows are appended as trials finish, each flushed and synced, so a killed sweep loses no finished trial;
a row cut short by the kill is dropped when the directory is opened again. Only the driver writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..diagnostics import CompileError, Location
from .work import TrialResult

RESULTS = "results.csv"
PARQUET = "results.parquet"
META = "sweep.json"
#: The measured columns, after ``trial`` and the varied and derived keys.
METRICS = ("accuracy", "crossbars", "chips", "energy_uj", "latency_us", "seconds")
TAIL = ("status", *METRICS, "fingerprint", "message")


@dataclass(frozen=True)
class Row:
    """One row of ``results.csv``: the trial id, its keys' values, the status and the measured metrics."""

    trial: str
    values: dict[str, Any]  #: varied and derived keys
    status: str
    metrics: dict[str, float | None]
    fingerprint: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class SweepMeta:
    """``sweep.json``: the spec's lock (see :meth:`SweepSpec.lock`), its name and the key columns."""

    name: str
    lock: str
    varied: tuple[str, ...]
    derived: tuple[str, ...]
    spec: dict

    @property
    def columns(self) -> list[str]:
        return ["trial", *self.varied, *self.derived, *TAIL]


def read_meta(out_dir: Path) -> SweepMeta | None:
    path = Path(out_dir, META)
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        return SweepMeta(d["name"], d["lock"], tuple(d["varied"]), tuple(d["derived"]), d["spec"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CompileError("XB707", f"cannot read {path}: {exc}", location=Location(file=str(path))) from None


class ResultStore:
    """The results of one sweep directory, opened for appending."""

    def __init__(self, out_dir: Path, meta: SweepMeta):
        self.dir = Path(out_dir)
        self.meta = meta
        self.path = self.dir / RESULTS
        self.rows = read_rows(self.dir, meta)
        self._fh = None

    @classmethod
    def open(cls, out_dir: str | Path, meta: SweepMeta, force: bool = False) -> ResultStore:
        """Check ``out_dir`` against ``meta`` (XB706 for another sweep unless ``force``, which clears it), then
        write ``sweep.json``."""
        out = Path(out_dir)
        old = read_meta(out)
        used = old is not None or (out / RESULTS).exists()
        if used and (old is None or old.lock != meta.lock or old.columns != meta.columns):
            if not force:
                raise CompileError("XB706", f"{out} holds the results of another sweep "
                                            f"({old.name if old else 'no sweep.json'})",
                                   location=Location(file=str(out)),
                                   hint="use another -o DIR, or --force to discard those results")
            for name in (RESULTS, PARQUET, META):
                with contextlib.suppress(FileNotFoundError):
                    (out / name).unlink()
        data = {"name": meta.name, "lock": meta.lock, "varied": list(meta.varied), "derived": list(meta.derived),
                "spec": meta.spec}
        try:
            out.mkdir(parents=True, exist_ok=True)
            _write_text(out / META, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
        except OSError as exc:
            raise CompileError("XB004", f"cannot write the sweep into {out}: {exc.strerror or exc}",
                               location=Location(file=str(out))) from None
        return cls(out, meta)

    @property
    def done(self) -> set[str]:
        return {r.trial for r in self.rows}

    def append(self, values: dict[str, Any], result: TrialResult) -> Row:
        """Write one finished trial's row and sync it to disk."""
        row = Row(result.trial, values, result.status, {m: getattr(result, m) for m in METRICS},
                  result.fingerprint, result.message)
        if self._fh is None:
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._fh = self.path.open("a", newline="", encoding="utf-8")
            if new:
                self._write(self.meta.columns)
        self._write(_cells(row, self.meta))
        self.rows.append(row)
        return row

    def _write(self, cells: Sequence[str]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        self._fh.write(buf.getvalue())
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def write_parquet(self) -> Path | None:
        """``results.parquet`` from every row, when pyarrow is installed (else nothing)."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return None
        table = pa.table({c: [_value(row, c) for row in self.rows] for c in self.meta.columns})
        tmp = self.dir / f".{PARQUET}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.dir / PARQUET)
        return self.dir / PARQUET


def read_rows(out_dir: Path, meta: SweepMeta) -> list[Row]:
    """The rows of ``results.csv`` (none when absent); a last line cut short by a kill is removed first."""
    path = Path(out_dir, RESULTS)
    if not path.exists():
        return []
    _drop_partial_line(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            lines = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CompileError("XB707", f"cannot read {path}: {exc}", location=Location(file=str(path))) from None
    if not lines:
        return []
    if lines[0] != meta.columns:
        raise CompileError("XB707", f"{path} has other columns than its sweep.json says",
                           location=Location(file=str(path)), details=[f"found {lines[0]}",
                                                                     f"expected {meta.columns}"])
    keys = [*meta.varied, *meta.derived]
    rows = []
    for n, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(meta.columns):
            raise CompileError("XB707", f"{path} line {n} has {len(cells)} cells, not {len(meta.columns)}",
                               location=Location(file=str(path)))
        d = dict(zip(meta.columns, cells))
        rows.append(Row(d["trial"], {k: parse_cell(d[k]) for k in keys}, d["status"],
                        {m: _number(d[m]) for m in METRICS}, d["fingerprint"], d["message"]))
    return rows


def _drop_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _cells(row: Row, meta: SweepMeta) -> list[str]:
    return [_text(_value(row, c)) for c in meta.columns]


def _value(row: Row, column: str) -> Any:
    if column in row.values:
        return row.values[column]
    if column in row.metrics:
        return row.metrics[column]
    return getattr(row, column)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def parse_cell(text: str) -> Any:
    """A key's value as written by :func:`_text`: int, float, bool or the string itself."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _number(text: str) -> float | None:
    return None if text == "" else float(text)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
