"""The relative optimality gap every solver-backed result reports (provenance, ``prune.json``, reports)."""

from __future__ import annotations


def relative_gap(objective: float, bound: float) -> float:
    """``|objective - bound| / max(|objective|, |bound|)``, 0 when both are 0: for a minimisation
    ``(objective - bound) / objective``, for a maximisation ``(bound - objective) / bound``."""
    scale = max(abs(objective), abs(bound))
    return abs(objective - bound) / scale if scale else 0.0
