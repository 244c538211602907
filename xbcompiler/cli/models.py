"""Loading the user's model (``FILE.py:FACTORY``, :mod:`xbcompiler.modelfile`) and input arrays, and seeded random
inputs."""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..diagnostics import CompileError, Location
from ..modelfile import load_model, load_module, split_model_spec
from .args import SHAPE_HINT, check_elements, parse_shape, shape_text
from .console import one_line

__all__ = ["load_model", "load_module", "split_model_spec"]


def module_shapes(module: types.ModuleType, spec: str) -> list[tuple[int, ...]]:
    """The model file's ``INPUT_SHAPE`` (one shape or a list of shapes) when --input-shape is absent."""
    value = getattr(module, "INPUT_SHAPE", None)
    if value is None:
        raise CompileError("XB003", "compile needs --input-shape",
                           hint=f"{SHAPE_HINT}; or define INPUT_SHAPE in {split_model_spec(spec)[0]}")
    try:
        shapes = [value] if all(isinstance(d, int) for d in value) else list(value)
        return [parse_shape(s if isinstance(s, str) else shape_text(s)) for s in shapes]
    except TypeError:
        raise CompileError("XB003", f"bad INPUT_SHAPE {value!r} in {split_model_spec(spec)[0]}",
                           hint="a tuple of ints, or a list of such tuples for several inputs") from None


def random_inputs(shapes: Sequence[Sequence[int]], seed: int) -> tuple:
    """Seeded ``torch.randn`` tensors of ``shapes`` (one generator, in order)."""
    import torch

    for s in shapes:
        check_elements(s, "a random input")
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(tuple(s), generator=gen) for s in shapes)


def load_npy(path: Path, spec: Any | None):
    """A numeric ``.npy`` array as a tensor of the netlist input ``spec``'s dtype; XB001 / XB505."""
    import numpy as np
    import torch

    if not path.is_file():
        raise CompileError("XB001", f"input file {path} not found", location=Location(file=str(path)))
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CompileError("XB505", f"cannot read {path} as a .npy array: {one_line(exc)}",
                           location=Location(file=str(path))) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise CompileError("XB505", f"{path} does not hold a numeric array", location=Location(file=str(path)))
    if spec is not None and list(arr.shape) == list(spec.shape):
        arr = arr[None]  # one sample without its batch dimension
    dtype = getattr(torch, spec.dtype, torch.float32) if spec is not None else torch.float32
    return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
