"""The parametric mapping family of background §2.2: one layer's :class:`MappingPlan` for a given strategy.

``fully-folded`` tiles the im2col matrix (one window per phase); ``semi-folded`` folds output rows
(one per phase) and unfolds output columns into block-Toeplitz crossbars, ``w_o`` output columns per
width slice; ``fully-unfolded`` gives every output row its own copy of the semi-folded crossbars
(``row_copies = H'``, one phase). Counts are compute crossbars of one copy under the foundation's
column convention (``m_c`` adjacent physical columns per logical column, docs/mapping.md);
``logical_crossbars`` is the same count with one physical column per weight (SemiMap's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from ..ir.program import MappingPlan
from .shape import LayerShape

STRATEGIES = ("fully-folded", "semi-folded", "fully-unfolded")


@dataclass(frozen=True)
class ArraySpec:
    """A crossbar as the cost model sees it: rows and physical columns, ``m_c`` physical per logical."""

    rows: int
    physical_cols: int
    m_c: int = 1

    @property
    def cols(self) -> int:
        """Logical (weight) columns."""
        return self.physical_cols // self.m_c

    @classmethod
    def of(cls, target) -> ArraySpec:
        return cls(target.crossbar.rows, target.crossbar.cols, target.m_c)


def fully_folded_count(groups: int, rows: int, cols: int, xbar_rows: int, xbar_cols: int) -> tuple[int, int]:
    """(crossbars, groups per crossbar) for ``groups`` blocks of ``rows x cols`` on ``xbar_rows x xbar_cols``.

    Blocks that fit are packed block-diagonally, ``min(R // rows, C // cols)`` per crossbar; larger
    blocks are tiled alone: ``ceil(rows / R) * ceil(cols / C)`` crossbars each.
    """
    if groups > 1 and rows <= xbar_rows and cols <= xbar_cols:
        per = min(xbar_rows // rows, xbar_cols // cols)
        return ceil(groups / per), per
    return groups * ceil(rows / xbar_rows) * ceil(cols / xbar_cols), 1


def accumulation_crossbars(outputs_per_phase: int, fanin: int, arr: ArraySpec) -> int:
    """Crossbars in add mode that reduce ``fanin`` partial sums of ``outputs_per_phase`` outputs at once.

    One add-mode crossbar sums ``fanin`` rows into each of ``min(C, R // fanin)`` columns (background §2.2,
    SemiMap's FunC vector-add mode); none are needed when there is nothing to add.
    """
    if fanin <= 1:
        return 0
    return ceil(outputs_per_phase / min(arr.cols, max(1, arr.rows // fanin)))


def fully_folded(shape: LayerShape, arr: ArraySpec, layer: str = "") -> MappingPlan:
    """The im2col tiling: ``ceil(K / R) * ceil(C_out / C)`` crossbars, ``H' * W'`` phases."""
    kh, kw = shape.kernel
    k_g = shape.c_in * kh * kw
    count, per = fully_folded_count(shape.groups, k_g, shape.c_out, arr.rows, arr.cols)
    logical, _ = fully_folded_count(shape.groups, k_g, shape.c_out, arr.rows, arr.physical_cols)
    row_tiles, col_tiles = ceil(k_g / arr.rows), ceil(shape.c_out / arr.cols)
    phases = shape.out_hw[0] * shape.out_hw[1]
    fanin = row_tiles
    return MappingPlan(
        layer, "fully-folded", count, phases, row_tiles, col_tiles, per, copies=1,
        kin=min(shape.c_in, max(1, arr.rows // (kh * kw))), kout=min(shape.c_out, arr.cols),
        w_o=1, w_i=shape.input_cols(1), n_w=1, phases=phases, partial_sum_fanin=fanin,
        logical_crossbars=logical,
        accumulation_crossbars=accumulation_crossbars(shape.groups * shape.c_out, fanin, arr),
        partial_sum_additions=(fanin - 1) * shape.outputs,
        input_words=shape.groups * k_g * col_tiles * phases,
        utilisation=shape.weights / (count * arr.rows * arr.cols))


@dataclass(frozen=True)
class Toeplitz:
    """The block structure of a semi-folded layer at one slice width (background §2.2)."""

    w_o: int
    w_i: int
    kin: int
    kernel_rows_per_split: int
    kernel_row_splits: int
    kout: int
    n_w: int
    in_groups: int  # ceil(c_in / kin)
    out_groups: int  # ceil(c_out / kout)
    groups_per_crossbar: int  # conv groups packed block-diagonally into one crossbar
    crossbars: int  # one output row's worth (one row copy)


def toeplitz(shape: LayerShape, rows: int, cols: int, w_o: int) -> Toeplitz | None:
    """Kin, Kout, n_w and the crossbar count of slice width ``w_o`` on ``rows x cols`` logical cells.

    ``Kin = min(C_in, R // (k_h w_i))``; when one channel's ``k_h`` kernel rows do not fit, they are
    split over ``ceil(k_h / (R // w_i))`` crossbars (balanced) with ``Kin = 1``. ``Kout = min(C_out,
    C // w_o)``. Conv groups whose whole block fits one crossbar are packed block-diagonally.
    None when even one kernel row or one output channel does not fit.
    """
    kh = shape.kernel[0]
    w_i = shape.input_cols(w_o)
    if w_i > rows or w_o > cols:
        return None
    if kh * w_i <= rows:
        kin, splits = min(shape.c_in, rows // (kh * w_i)), 1
    else:
        kin, splits = 1, ceil(kh / (rows // w_i))
    per_split = ceil(kh / splits)
    kout = min(shape.c_out, cols // w_o)
    n_w = ceil(shape.out_hw[1] / w_o)
    g_in, g_out = ceil(shape.c_in / kin), ceil(shape.c_out / kout)
    per = 1
    if shape.groups > 1 and g_in == g_out == splits == 1:
        per = min(rows // (shape.c_in * kh * w_i), cols // (shape.c_out * w_o))
    crossbars = n_w * ceil(shape.groups / per) * g_in * splits * g_out
    return Toeplitz(w_o, w_i, kin, per_split, splits, kout, n_w, g_in, g_out, per, crossbars)


def toeplitz_plan(strategy: str, shape: LayerShape, arr: ArraySpec, w_o: int, layer: str = "") -> MappingPlan | None:
    """The semi-folded or fully-unfolded plan at slice width ``w_o``; None if ``w_o`` does not fit.

    Fully-unfolded gives each of the ``H'`` output rows its own copy of the semi-folded crossbars
    (``row_copies = H'``, one phase): exactly ``H' x`` the semi-folded count at the same ``w_o``.
    """
    t = toeplitz(shape, arr.rows, arr.cols, w_o)
    if t is None:
        return None
    logical = toeplitz(shape, arr.rows, arr.physical_cols, w_o)
    h_out = shape.out_hw[0]
    row_copies = h_out if strategy == "fully-unfolded" else 1
    phases = h_out // row_copies
    fanin = t.in_groups * t.kernel_row_splits
    crossbars = t.crossbars * row_copies
    copies = w_o * t.n_w * row_copies
    return MappingPlan(
        layer, strategy, crossbars, phases, fanin, t.out_groups, t.groups_per_crossbar, copies=copies,
        kin=t.kin, kout=t.kout, w_o=w_o, w_i=t.w_i, n_w=t.n_w, kernel_row_splits=t.kernel_row_splits,
        kernel_rows_per_split=t.kernel_rows_per_split, row_copies=row_copies, phases=phases,
        partial_sum_fanin=fanin, logical_crossbars=logical.crossbars * row_copies,
        accumulation_crossbars=accumulation_crossbars(shape.groups * shape.c_out * t.n_w * w_o * row_copies,
                                                      fanin, arr),
        partial_sum_additions=(fanin - 1) * shape.outputs,
        input_words=t.n_w * t.out_groups * shape.groups * shape.c_in * shape.kernel[0] * t.w_i * h_out,
        utilisation=shape.weights * copies / (crossbars * arr.rows * arr.cols))
