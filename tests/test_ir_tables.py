"""Array views of the crossbar IR (``xbcompiler.ir.tables``) and the collector pause (``xbcompiler.gcpause``)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from xbcompiler.gcpause import fewer_collections
from xbcompiler.ir.program import Crossbar, ToeplitzBlock
from xbcompiler.ir.tables import COLUMNS, block_table, crossbar_table


def blocks() -> tuple[ToeplitzBlock, ...]:
    return (ToeplitzBlock("a", 0, 0, (0, 2), (0, 3), (0, 4), 0),
            ToeplitzBlock("b", 1, 1, (2, 4), (1, 2), (4, 8), 1, 3, 5, 6),
            ToeplitzBlock("a", 2, 0, (2, 4), (0, 3), (0, 4), 1))


def test_block_table_holds_every_field_in_column_order():
    table = block_table(blocks())
    assert table.fields.shape == (3, len(COLUMNS))
    assert dict(zip(COLUMNS, table.fields[1].tolist())) == {
        "crossbar": 1, "group": 1, "slice": 1, "out_row": 3, "c0": 2, "c1": 4, "d0": 1, "d1": 2, "o0": 4, "o1": 8,
        "xrow": 5, "xcol": 6}
    assert table.of("a").tolist() == [0, 2] and table.of("b").tolist() == [1] and table.of("c").size == 0


def test_tables_are_memoised_on_tuples_only():
    bs = blocks()
    assert block_table(bs) is block_table(bs)
    assert block_table(list(bs)) is not block_table(list(bs))  # a list can change: never memoised
    other = blocks()  # equal but another tuple: its own table
    assert block_table(other) is not block_table(bs)
    assert np.array_equal(block_table(other).fields, block_table(bs).fields)


def test_empty_tuples_get_a_table_of_each_kind():
    assert block_table(()).fields.shape == (0, len(COLUMNS))
    assert crossbar_table(()).index.size == 0  # () is one object: the memo keeps the kinds apart


def test_crossbar_table_marks_unplaced_crossbars():
    xs = (Crossbar(0, "a", 128, 64), Crossbar(1, "a", 100, 32, tile=3, slot=7, chip=0))
    t = crossbar_table(xs)
    assert t.layer.tolist() == ["a", "a"] and t.rows.tolist() == [128, 100] and t.cols.tolist() == [64, 32]
    assert t.tile.tolist() == [-1, 3] and t.slot.tolist() == [-1, 7]


def test_fewer_collections_raises_the_young_threshold_and_restores_it():
    before = gc.get_threshold()
    with fewer_collections(young=max(before[0], 50_000) + 1):
        assert gc.get_threshold()[0] == max(before[0], 50_000) + 1
        assert gc.get_threshold()[1:] == before[1:]
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_fewer_collections_never_lowers_a_threshold_the_caller_raised():
    before = gc.get_threshold()
    gc.set_threshold(10**6, *before[1:])
    try:
        with fewer_collections(young=1000):
            assert gc.get_threshold()[0] == 10**6
    finally:
        gc.set_threshold(*before)


def test_netlist_records_stay_out_of_the_cyclic_collector():
    from xbcompiler.netlist import types as nt

    block = nt.Block(channels=(0, 1), kernel_rows=(0, 1), out_channels=(0, 2))
    crossbar = nt.Crossbar(layer="a", tile=0, slot=0, chip=0, rows=4, cols=4, physical_cols=4, blocks=[block])
    assert not gc.is_tracked(block) and not gc.is_tracked(crossbar)
