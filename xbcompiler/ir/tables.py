"""The crossbars and blocks of a crossbar program as integer arrays, for the vectorised checks and sums.

A ResNet-50 mapped semi-folded has 130,000 crossbars and as many blocks; the verifier (after each pass)
and the traffic model read them as arrays, not object by object. A table is built once per tuple:
passes that keep the blocks (``place-tiles``) hand the same tuple on, and the tables are memoised on the
tuple's identity (the memo holds the tuple, so its identity cannot be reused while the entry lives;
the tuple and its frozen records cannot change). Lists are not memoised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

COLUMNS = ("crossbar", "group", "slice", "out_row", "c0", "c1", "d0", "d1", "o0", "o1", "xrow", "xcol")
"""Columns of :attr:`BlockTable.fields`: ``channels`` is ``[c0, c1)``, ``kernel_rows`` ``[d0, d1)``,
``out_channels`` ``[o0, o1)``, ``(xrow, xcol)`` the block's offset on its crossbar."""


@dataclass(frozen=True)
class BlockTable:
    """Every block's fields (``fields[i]``, columns :data:`COLUMNS`) and, per layer, its blocks' positions."""

    fields: np.ndarray
    positions: dict[str, np.ndarray]

    def of(self, layer: str) -> np.ndarray:
        """Positions (in ``program.blocks``) of the blocks of ``layer``, ascending."""
        return self.positions.get(layer, np.zeros(0, dtype=np.int64))


@dataclass(frozen=True)
class CrossbarTable:
    """Every crossbar's layer, size and placement (-1 where not placed), by position in ``program.crossbars``."""

    layer: np.ndarray  # object array of layer names
    index: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    tile: np.ndarray
    slot: np.ndarray


T = TypeVar("T")
_MEMO: list[tuple[Callable, Sequence, object]] = []
_MEMO_SIZE = 4


def _memoised(records: Sequence, build: Callable[[Sequence], T]) -> T:
    for made_by, seen, table in _MEMO:
        if made_by is build and seen is records:
            return table  # type: ignore[return-value]
    table = build(records)
    if isinstance(records, tuple):  # immutable: safe to memoise
        _MEMO.insert(0, (build, records, table))
        del _MEMO[_MEMO_SIZE:]
    return table


def _blocks(blocks: Sequence) -> BlockTable:
    fields = np.array([(b.crossbar, b.group, b.slice, b.out_row, *b.channels, *b.kernel_rows, *b.out_channels,
                        b.xrow, b.xcol) for b in blocks], dtype=np.int64).reshape(-1, len(COLUMNS))
    by_layer: dict[str, list[int]] = {}
    for i, b in enumerate(blocks):
        by_layer.setdefault(b.layer, []).append(i)
    return BlockTable(fields, {name: np.array(pos, dtype=np.int64) for name, pos in by_layer.items()})


def _crossbars(crossbars: Sequence) -> CrossbarTable:
    rows = np.array([(x.index, x.rows, x.cols, -1 if x.tile is None else x.tile, -1 if x.slot is None else x.slot)
                     for x in crossbars], dtype=np.int64).reshape(-1, 5)
    return CrossbarTable(np.array([x.layer for x in crossbars], dtype=object), *rows.T)


def block_table(blocks: Sequence) -> BlockTable:
    """The table of ``blocks`` (``ToeplitzBlock`` records), memoised on the identity of a tuple."""
    return _memoised(blocks, _blocks)


def crossbar_table(crossbars: Sequence) -> CrossbarTable:
    """The table of ``crossbars`` (``Crossbar`` records), memoised on the identity of a tuple."""
    return _memoised(crossbars, _crossbars)
