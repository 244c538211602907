"""Progress of long work on stderr: a rich bar on a terminal, plain periodic lines otherwise.

One helper for every long loop (training, sweeps, the demo), so logs and CI output stay readable:
when stderr is not a terminal, a whole line ``description: done/total (pct), h:mm:ss elapsed, h:mm:ss left  info``
is written at most every :data:`PLAIN_INTERVAL_S` seconds and once at the end (when anything changed since the
last line), never a cut-off bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

#: Seconds between two plain progress lines (stderr not a terminal).
PLAIN_INTERVAL_S = 10.0


class Advance(Protocol):
    """What :func:`progress` yields: ``advance(n=1, info=None, completed=None)``."""

    def __call__(self, n: int = 1, *, info: str | None = None, completed: int | None = None) -> None: ...


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(description: str, total: int | None, *, enabled: bool = True,
             interval_s: float = PLAIN_INTERVAL_S, stream=None) -> Iterator[Advance]:
    """Report progress of ``total`` steps (None: unknown) under ``description``.

    Yields ``advance(n=1, info=None, completed=None)``: ``n`` more steps done (or ``completed`` steps in
    all), ``info`` a short note shown after the count. ``enabled=False`` prints nothing.
    """
    stream = sys.stderr if stream is None else stream
    if not enabled:
        yield lambda n=1, *, info=None, completed=None: None
        return
    if _is_terminal(stream):
        with _rich_bar(description, total, stream) as advance:
            yield advance
        return
    with _plain_lines(description, total, interval_s, stream) as advance:
        yield advance


@contextmanager
def _rich_bar(description: str, total: int | None, stream) -> Iterator[Advance]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=Console(file=stream)) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, *, info: str | None = None, completed: int | None = None) -> None:
            fields = {} if info is None else {"info": info}
            if completed is None:
                bar.update(task, advance=n, **fields)
            else:
                bar.update(task, completed=completed, **fields)

        yield advance


def clock(seconds: float) -> str:
    """``h:mm:ss``, as rich's elapsed column shows it."""
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@contextmanager
def _plain_lines(description: str, total: int | None, interval_s: float, stream) -> Iterator[Advance]:
    start = time.monotonic()
    state = {"done": 0, "info": "", "last": start, "changed": False}

    def line() -> str:
        done, elapsed = state["done"], time.monotonic() - start
        count = f"{done}/{total} ({100 * done / total:.0f} %)" if total else f"{done}"
        left = f", {clock(elapsed * (total - done) / done)} left" if total and 0 < done < total else ""
        info = f"  {state['info']}" if state["info"] else ""
        return f"{description}: {count}, {clock(elapsed)} elapsed{left}{info}"

    def emit() -> None:
        print(line(), file=stream, flush=True)
        state["last"], state["changed"] = time.monotonic(), False

    def advance(n: int = 1, *, info: str | None = None, completed: int | None = None) -> None:
        state["done"] = completed if completed is not None else state["done"] + n
        if info is not None:
            state["info"] = info
        state["changed"] = True
        if time.monotonic() - state["last"] >= interval_s:
            emit()

    yield advance
    if state["changed"]:
        emit()
