"""FORMS fragments on the compiler's side (background §4.1, docs/polarize.md).

A fragment is ``fragment_rows`` consecutive rows ``[j F, (j + 1) F)`` of one column of a layer's
matrix (per conv group). With ``encoding.signed = "polarized"`` the ADC reads every fragment alone:
each row block (the rows one crossbar drives together) is cut along the fragment grid into *fragment
reads*, and each read's column carries one sign, so the layer's weights must have one sign per
fragment and column (XB251 otherwise).
"""

from __future__ import annotations

import numpy as np

from ..diagnostics import CompileError, Location


def split_blocks(blocks: list[tuple[int, np.ndarray]], fragment_rows: int) -> list[tuple[int, np.ndarray]]:
    """Row blocks ``(group, sorted rows)`` cut along the fragment grid, in reading order (group, then rows)."""
    out = []
    for g, rows in blocks:
        frag = rows // fragment_rows
        out += [(g, rows[frag == f]) for f in np.unique(frag)]
    return sorted(out, key=lambda gr: (gr[0], _ranges(gr[1])))


def _ranges(rows: np.ndarray) -> tuple[tuple[int, int], ...]:
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return tuple((int(r[0]), int(r[-1]) + 1) for r in np.split(rows, breaks))


def read_signs(weight: np.ndarray) -> np.ndarray:
    """int8 ``[cols]``: -1 for a column of a fragment read ``weight [rows, cols]`` holding a negative weight, else +1."""
    return np.where((weight < 0).any(0), -1, 1).astype(np.int8)


def check_polarized(name: str, weight: np.ndarray, fragment_rows: int) -> None:
    """XB251 unless every fragment of the matrix ``weight [G, K, N_g]`` holds weights of one sign."""
    g, k, n = weight.shape
    pad = (-k) % fragment_rows
    w = np.concatenate([weight, np.zeros((g, pad, n), dtype=weight.dtype)], axis=1) if pad else weight
    w = w.reshape(g, -1, fragment_rows, n)
    mixed = (w > 0).any(2) & (w < 0).any(2)  # [G, fragments, N_g]
    if not mixed.any():
        return
    group, frag, col = (int(v[0]) for v in np.nonzero(mixed))
    lo, hi = frag * fragment_rows, min(k, (frag + 1) * fragment_rows)
    where = f"group {group}, " if g > 1 else ""
    raise CompileError("XB251", f"layer '{name}' is not polarized: fragment rows [{lo}, {hi}) of {where}column {col} "
                                f"hold weights of both signs ({int(mixed.sum())} of {mixed.size} fragments do)",
                       location=Location(node=name),
                       hint="polarize the model first: xb.polarize(model, target, (x, y)) or xbc polarize")
