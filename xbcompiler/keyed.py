"""Typed sections of dotted keys (targets, sweep specs): each key a dataclass field that carries its
documentation and the range or choices it is validated against."""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import MISSING, field, fields
from typing import Any, get_type_hints

#: How a key's type is named in messages.
TYPE_WORDS = {int: "an integer", float: "a number", bool: "a boolean", str: "a string", list: "an array"}


def key(doc: str, default: Any = MISSING, *, lo: float | None = None, hi: float | None = None,
        choices: tuple | None = None):
    """A dataclass field carrying its documentation and the range or choices it is validated against."""
    return field(default=default, metadata={"doc": doc, "lo": lo, "hi": hi, "choices": choices})


def flatten(sections: list[tuple[str, type]]) -> dict[str, tuple[type, dataclasses.Field]]:
    """``prefix + name`` -> (type, field) of every field of every ``(prefix, dataclass)``."""
    out = {}
    for prefix, cls in sections:
        hints = get_type_hints(cls)
        out.update({prefix + f.name: (hints[f.name], f) for f in fields(cls)})
    return out


def type_ok(tp: type, value: Any) -> bool:
    """Whether ``value`` has type ``tp`` (a bool is no number; an int is a float)."""
    if isinstance(value, bool):
        return tp is bool
    return isinstance(value, (int, float)) if tp is float else isinstance(value, tp)


def range_problem(name: str, value: Any, spec: dataclasses.Field) -> str | None:
    """Why ``value`` breaks the choices or range of the key ``name`` declared by ``spec``, or None."""
    meta = spec.metadata
    lo, hi, choices = meta["lo"], meta["hi"], meta["choices"]
    if choices is not None and value not in choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        allowed = ", ".join(repr(c) for c in choices)
        return f"{name} = {value!r}: must be one of {allowed}" + (f" (did you mean '{near[0]}'?)" if near else "")
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} = {value!r}: must be a finite number"
    if isinstance(value, (int, float)) and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        return f"{name} = {value!r}: " + (f"must be in {lo}..{hi}" if hi is not None else f"must be >= {lo}")
    return None
