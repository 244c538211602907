"""Encode op arguments as JSON-able values (the netlist form) and decode them back.

``{"ref": name}`` names a node; tuples, dicts, slices, ``...``, dtypes and non-finite floats have
one-key wrappers; lists, strings, numbers, booleans and ``None`` are themselves.
"""

from __future__ import annotations

import math

import torch
from torch import fx

from ..diagnostics import CompileError


def encode(value, node_name=None):
    """JSON-able form of an fx argument (``node_name`` maps fx nodes to program node names)."""
    if isinstance(value, fx.Node):
        return {"ref": node_name(value) if node_name else value.name}
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (tuple, torch.Size)):
        return {"tuple": [encode(v, node_name) for v in value]}
    if isinstance(value, list):
        return [encode(v, node_name) for v in value]
    if isinstance(value, dict):
        return {"dict": [[str(k), encode(v, node_name)] for k, v in value.items()]}
    if isinstance(value, slice):
        return {"slice": [encode(value.start, node_name), encode(value.stop, node_name), encode(value.step, node_name)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise CompileError("XB103", f"argument of type {type(value).__name__} cannot be stored in a netlist: {value!r}")


_DTYPES = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"}
_FORMATS = {"contiguous_format", "channels_last", "preserve_format"}


def decode(value, env: dict):
    """Inverse of :func:`encode`, resolving refs through ``env``; only the wrappers above are accepted."""
    if isinstance(value, list):
        return [decode(v, env) for v in value]
    if not isinstance(value, dict):
        return value
    (key, inner), = value.items()
    if key == "ref":
        return env[inner]
    if key == "tuple":
        return tuple(decode(v, env) for v in inner)
    if key == "dict":
        return {k: decode(v, env) for k, v in inner}
    if key == "slice":
        return slice(*(decode(v, env) for v in inner))
    if key == "ellipsis":
        return Ellipsis
    if key == "float" and inner in ("inf", "-inf", "nan"):
        return float(inner)
    if key == "dtype" and inner in _DTYPES:
        return getattr(torch, inner)
    if key == "memory_format" and inner in _FORMATS:
        return getattr(torch, inner)
    raise ValueError(f"unknown encoded value {value!r}")


_WRAPPERS = {"ref", "tuple", "dict", "slice", "ellipsis", "float", "dtype", "memory_format"}


def check_encoded(value) -> None:
    """Raise ValueError if an encoded value uses a wrapper :func:`decode` does not know."""
    if isinstance(value, list):
        for v in value:
            check_encoded(v)
    elif isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in _WRAPPERS:
            raise ValueError(f"unknown encoded value {value!r}")
        key, inner = next(iter(value.items()))
        if key in ("tuple", "slice"):
            check_encoded(inner)
        elif key == "dict":
            for _, v in inner:
                check_encoded(v)


def refs(value) -> list[str]:
    """Every node name an encoded value refers to."""
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in refs(v)]
    if isinstance(value, dict):
        if set(value) == {"ref"}:
            return [value["ref"]]
        return [r for v in value.values() for r in refs(v)]
    return []
