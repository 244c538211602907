"""Loading the user's model (``FILE.py:FACTORY``) and input arrays, and seeded random inputs."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..diagnostics import CompileError, Location
from .args import SHAPE_HINT, parse_shape, shape_text
from .console import one_line


def split_model_spec(spec: str) -> tuple[Path, str]:
    """``path/to/file.py:factory`` -> (path, factory name); XB003 without the colon."""
    path, sep, name = str(spec).rpartition(":")
    if not sep or not path or not name.strip():
        raise CompileError("XB003", f"bad model '{spec}': expected FILE.py:FACTORY",
                           hint="name the Python file and the function in it that returns the model, "
                                "e.g. models.py:make_model")
    return Path(path), name.strip()


def load_module(path: Path) -> types.ModuleType:
    """Execute a Python file as a fresh module (never from a stale bytecode cache); XB001 / XB002."""
    if not path.is_file():
        what = "is a directory, not a Python file" if path.is_dir() else "not found"
        raise CompileError("XB001", f"model file {path} {what}", location=Location(file=str(path)))
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_xbc_model_{path.stem.replace('-', '_')}_{digest}"
    module = types.ModuleType(name)
    module.__file__ = str(path.resolve())
    folder = str(path.resolve().parent)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        source = path.read_bytes()
        exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 -- the user's own model file
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise CompileError("XB002", f"importing {path} failed: {type(exc).__name__}: {one_line(exc)}",
                           location=Location(file=str(path)),
                           hint="rerun with --debug to see the traceback") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def load_model(spec: str) -> tuple[Any, types.ModuleType]:
    """Import ``FILE.py`` and call ``FACTORY()``; returns (model, module). XB001, XB002, XB003."""
    from torch import nn

    path, factory_name = split_model_spec(spec)
    module = load_module(path)
    where = Location(file=str(path))
    obj: Any = module
    for part in factory_name.split("."):
        if not hasattr(obj, part):
            names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
            close = difflib.get_close_matches(factory_name, names, n=1)
            raise CompileError("XB002", f"{path} has no factory '{factory_name}'", location=where,
                               hint=f"did you mean '{close[0]}'?" if close else None,
                               details=[f"callables in the file: {', '.join(sorted(names)) or '(none)'}"])
        obj = getattr(obj, part)
    if not callable(obj):
        raise CompileError("XB002", f"'{factory_name}' in {path} is not callable ({type(obj).__name__})",
                           location=where)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        model = obj()
    except (Exception, SystemExit) as exc:
        raise CompileError("XB002", f"factory {path}:{factory_name}() raised {type(exc).__name__}: "
                                    f"{one_line(exc)}", location=where,
                           hint="rerun with --debug to see the traceback") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    if not isinstance(model, nn.Module):
        raise CompileError("XB002", f"factory {path}:{factory_name}() returned {type(model).__name__}, "
                                    "not a torch.nn.Module", location=where)
    return model, module


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
