"""Choose the front end: ``torch.export`` (``export``), symbolic tracing (``fx``), or ``auto``.

``auto`` (the default) captures with ``torch.export`` and falls back to symbolic tracing when that
fails. Both give the same canonical graph (docs/operators.md); :class:`Captured` says which ran.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from torch import fx, nn

from ..diagnostics import CompileError
from .export import export
from .rewrites import rewrite_modules
from .trace import check_inputs, private_copy, trace_copy

FRONTENDS = ("auto", "export", "fx")

#: Codes meaning the front end captured the model and refused what it found (not a capture failure).
_REFUSALS = ("XB103", "XB104", "XB105")


@dataclass(frozen=True)
class Captured:
    """The canonical graph, the front end that produced it, and why ``auto`` fell back (else None)."""

    gm: fx.GraphModule
    frontend: str  # "export" | "fx"
    requested: str
    fallback: str | None = None

    @property
    def provenance(self) -> dict:
        """What the netlist's provenance records about the front end."""
        record = {"used": self.frontend, "requested": self.requested}
        if self.fallback:
            record["export_error"] = self.fallback
        return record


def recorded_frontend(provenance: dict) -> str:
    """The front end a netlist was compiled with (``fx`` for netlists that predate the record)."""
    record = provenance.get("frontend") if isinstance(provenance, dict) else None
    used = record.get("used") if isinstance(record, dict) else None
    return used if used in ("export", "fx") else "fx"


def check_frontend(frontend: str) -> str:
    if frontend not in FRONTENDS:
        raise CompileError("XB106", f"unknown front end '{frontend}'", hint=f"use one of {', '.join(FRONTENDS)}")
    return frontend


def capture(model: nn.Module, example_inputs, frontend: str = "auto") -> Captured:
    """The model's canonical graph from the chosen front end (never modifies ``model``)."""
    check_frontend(frontend)
    inputs = check_inputs(example_inputs)
    private = rewrite_modules(private_copy(model))
    if frontend == "fx":
        return Captured(trace_copy(private, inputs), "fx", frontend)
    if frontend == "export":
        return Captured(export(private, inputs), "export", frontend)
    try:  # export may add constants to its copy: the fallback traces an untouched one
        return Captured(export(copy.deepcopy(private), inputs), "export", frontend)
    except CompileError as exported:
        try:
            gm = trace_copy(private, inputs)
        except CompileError as traced:
            raise _both_failed(exported, traced) from None
        return Captured(gm, "fx", frontend, f"{exported.code}: {exported.message}")


def _both_failed(exported: CompileError, traced: CompileError) -> CompileError:
    """The more useful of two errors, naming the other: export's when it got further, else fx's.

    torch.export got further when symbolic tracing failed to capture the model at all, or refused a
    whole module (``nn.TransformerEncoderLayer``) that export decomposed and refused something else.
    """
    further = exported.code in _REFUSALS and (traced.code not in _REFUSALS or _outside_refused_module(exported, traced))
    first, other, name = (exported, traced, "symbolic tracing") if further else (traced, exported, "torch.export")
    return CompileError(first.code, first.message, hint=first.hint, location=first.location,
                        details=[*first.details, f"{name} also failed: {other.code}: {other.message.splitlines()[0]}"])


def _outside_refused_module(exported: CompileError, traced: CompileError) -> bool:
    """fx refused module type X at path P, and export's refusal is not inside P."""
    path, inside = _module_of(traced.message), _module_of(exported.message)
    if path is None:
        return False
    return inside is None or not (inside == path or inside.startswith(path + "."))


def _module_of(message: str) -> str | None:
    """The module path a refusal names (``module type X ('p')`` or ``... in module 'p' (X)``)."""
    found = re.match(r"module type \w+ \('([^']+)'\)", message) or re.search(r" in module '([^']+)'", message)
    return found.group(1) if found else None
