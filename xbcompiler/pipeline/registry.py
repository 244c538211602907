"""Pass discovery: the ``xbcompiler.passes`` entry points plus passes registered in code, and
``parse_pipeline``, which looks the names of a textual pipeline up here.

The core never imports the built-in ``passes`` package; it finds it exactly as it finds an
out-of-tree plugin, through entry points named after the pass they load.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from importlib.metadata import entry_points

from xbcompiler.diagnostics import CompileError
from xbcompiler.pipeline.base import STAGE_IO, Pass
from xbcompiler.pipeline.text import build, parse_items

GROUP = "xbcompiler.passes"
_KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_registered: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Register a pass class under its ``name`` (usable as a decorator); a later one replaces it."""
    problem = _problem(cls)
    if problem:
        raise TypeError(problem)
    _registered[cls.name] = cls
    return cls


def unregister_pass(name: str) -> None:
    """Forget a pass registered with ``register_pass`` (entry points stay)."""
    _registered.pop(name, None)


def registered_passes() -> dict[str, type[Pass]]:
    """Every known pass by name: entry points, overridden by passes registered in code."""
    return {**_entry_points()[0], **_registered}


def load_failures() -> dict[str, str]:
    """Entry points that were skipped, by pass name, with the reason (failed import, not a pass)."""
    return dict(_entry_points()[1])


def parse_pipeline(text: str) -> list[Pass]:
    """Parse the textual form into pass instances (XB601 unknown pass, XB602 syntax, XB604 option)."""
    return [build(get_pass(item.name), item, text) for item in parse_items(text)]


def get_pass(name: str) -> type[Pass]:
    """The pass class called ``name``; XB601 with the nearest names if there is none."""
    passes = registered_passes()
    if name in passes:
        return passes[name]
    failed = _entry_points()[1]
    if name in failed:
        raise CompileError("XB601", f"pass '{name}' could not be loaded", details=[failed[name]],
                           hint="fix the plugin's import error or reinstall the package")
    close = difflib.get_close_matches(name, passes, n=3, cutoff=0.5)
    hint = "did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else None
    raise CompileError("XB601", f"unknown pass '{name}'", hint=hint,
                       details=[f"known passes: {', '.join(sorted(passes)) or '(none)'}"])


@functools.cache
def _entry_points() -> tuple[dict[str, type[Pass]], dict[str, str]]:
    """Load the entry points once: (passes by name, skip reason by name)."""
    found: dict[str, type[Pass]] = {}
    failed: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 -- a broken plugin must not break the compiler
            failed[ep.name] = f"entry point '{ep.name}' = '{ep.value}' failed to load: {exc!r}"
            continue
        problem = _problem(cls) or (cls.name != ep.name and f"{cls.__name__}.name is '{cls.name}'")
        if problem:
            failed[ep.name] = f"entry point '{ep.name}' = '{ep.value}' skipped: {problem}"
            continue
        found[ep.name] = cls
    return found, failed


def _problem(cls: object) -> str | None:
    """Why ``cls`` cannot be a pass, or None."""
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        return f"{cls!r} is not a subclass of Pass"
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        return f"{cls.__name__} must be a @dataclass(frozen=True)"
    if not _KEBAB.fullmatch(cls.name or ""):
        return f"{cls.__name__}.name must be kebab-case, got {cls.name!r}"
    if cls.stage not in STAGE_IO:
        return f"{cls.__name__}.stage must be one of {sorted(STAGE_IO)}, got {cls.stage!r}"
    return None
