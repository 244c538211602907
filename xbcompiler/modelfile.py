"""A user's model file, ``FILE.py:FACTORY``: executed as a fresh module, its factory found and called.

Used by the command line (docs/cli.md, "Models") and by sweeps, whose workers build the model
themselves. Errors: XB001 (no such file), XB002 (the import, the lookup or the call fails, or the
factory returns no ``nn.Module``), XB003 (no ``:``).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .diagnostics import CompileError, Location


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


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
        raise CompileError("XB002", f"importing {path} failed: {type(exc).__name__}: {_one_line(exc)}",
                           location=Location(file=str(path)),
                           hint="rerun with --debug to see the traceback") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def find_factory(spec: str) -> tuple[Callable[[], Any], types.ModuleType]:
    """Import ``FILE.py`` and look ``FACTORY`` up (dotted names allowed) without calling it."""
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
    return obj, module


def load_model(spec: str) -> tuple[Any, types.ModuleType]:
    """Import ``FILE.py`` and call ``FACTORY()``; returns (model, module). XB001, XB002, XB003."""
    from torch import nn

    factory, module = find_factory(spec)
    path, factory_name = split_model_spec(spec)
    where = Location(file=str(path))
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        model = factory()
    except (Exception, SystemExit) as exc:
        raise CompileError("XB002", f"factory {path}:{factory_name}() raised {type(exc).__name__}: "
                                    f"{_one_line(exc)}", location=where,
                           hint="rerun with --debug to see the traceback") from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    if not isinstance(model, nn.Module):
        raise CompileError("XB002", f"factory {path}:{factory_name}() returned {type(model).__name__}, "
                                    "not a torch.nn.Module", location=where)
    return model, module
