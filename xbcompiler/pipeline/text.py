"""The textual pipeline form used on the command line and recorded in every netlist.

    fold-batchnorm,reorder-input-channels{time-limit-s=10,seed=0},lower-to-xbar

Whitespace and newlines between tokens are ignored; a trailing comma is allowed. Option names are the
field names in kebab case; values are converted by the field's annotated type:

- ``bool``: ``true`` / ``false``;  ``int``, ``float``: Python literals (``inf`` works);
- ``str``, ``Path``: bare (``out/dumps``) or double-quoted with backslash escapes (``"a, b"``);
- ``X | None``: ``none``;  ``Literal[...]`` and ``Enum``: one of the members (enums by name);
- tuples of numbers: ``1:2:3``, one element ``5``, empty ``()``.

This module is the syntax alone: it looks no name up. ``parse_pipeline`` (in :mod:`.registry`) turns
the items into passes; the instruments use the same syntax.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union

from xbcompiler.diagnostics import CompileError
from xbcompiler.pipeline.options import pass_options

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_BARE = re.compile(r'[^\s,{}="]+')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_PLAIN_STR = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_KEYWORDS = {"true", "false", "none"}
_SYNTAX_HINT = "the form is name{option=value,...},name,...  (quote values with spaces or commas)"


@dataclass(frozen=True)
class Value:
    """An option value as written: its text (unescaped), whether it was quoted, offsets of key and value."""

    raw: str
    quoted: bool
    pos: int
    key_pos: int = 0


@dataclass(frozen=True)
class Item:
    """One ``name{key=value,...}`` item of a pipeline text, with the offset of its name."""

    name: str
    pos: int
    options: dict[str, Value]


def format_pipeline(passes: Sequence[Any]) -> str:
    """The textual form, printing only options that differ from their defaults, in field order."""
    return ",".join(format_item(p) for p in passes)


def format_item(obj: Any) -> str:
    """One item: the class's ``name`` and its non-default options."""
    opts = [f"{o.kebab}={format_value(getattr(obj, o.name))}" for o in pass_options(type(obj))
            if o.required or getattr(obj, o.name) != o.default]
    return f"{type(obj).name}{{{','.join(opts)}}}" if opts else type(obj).name


def parse_items(text: str) -> list[Item]:
    """Split pipeline text into items without looking anything up (XB602 on bad syntax)."""
    s = _Scanner(text)
    items = []
    while not s.done():
        pos = s.pos
        name = s.take(_NAME, "a name").group()
        items.append(Item(name, pos, s.options() if s.peek("{") else {}))
        if not s.done():
            s.expect(",", "expected ',' between items")
    return items


def build(cls: type, item: Item, text: str = "", kind: str = "pass") -> Any:
    """Instantiate ``cls`` from a parsed item, converting each value by its field's type (XB604)."""
    options = {o.kebab: o for o in pass_options(cls)}
    kwargs = {}
    for key, value in item.options.items():
        opt = options.get(key)
        if opt is None:
            close = [k for k in options if k.replace("-", "_") == key.replace("-", "_")]
            close = close or difflib.get_close_matches(key, options, n=1)
            raise CompileError("XB604", f"{kind} '{cls.name}' has no option '{key}'{_at(text, value.key_pos)}",
                               hint=f"did you mean '{close[0]}'?" if close else None,
                               details=option_lines(cls))
        try:
            kwargs[opt.name] = parse_value(value.raw, value.quoted, opt.type)
        except ValueError as exc:
            raise CompileError("XB604", f"bad value for option '{key}' of {kind} '{cls.name}'"
                               f"{_at(text, value.pos)}: {exc}", details=option_lines(cls)) from None
    missing = [o.kebab for o in options.values() if o.required and o.name not in kwargs]
    if missing:
        raise CompileError("XB604", f"{kind} '{cls.name}' needs option(s) {', '.join(missing)}"
                           f"{_at(text, item.pos)}", details=option_lines(cls))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CompileError("XB604", f"{kind} '{cls.name}' rejected its options{_at(text, item.pos)}: {exc}",
                           details=option_lines(cls)) from exc


def option_lines(cls: type) -> list[str]:
    """One line per option: spelling, type, default and the first line of its documentation."""
    lines = []
    for o in pass_options(cls):
        default = "required" if o.required else f"default {format_value(o.default)}"
        doc = o.doc.splitlines()[0] if o.doc else ""
        lines.append(f"{o.kebab}: {type_name(o.type)}, {default}" + (f"; {doc}" if doc else ""))
    return lines or [f"'{cls.name}' takes no options"]


def parse_value(raw: str, quoted: bool, tp: Any) -> Any:
    """Convert option text to ``tp``; ValueError on a bad value, TypeError on an unsupported type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if raw == "none" and not quoted and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if quoted and str in inner:
            return raw
        for t in sorted(inner, key=lambda t: t is str):  # a bare word is a string only as a last resort
            try:
                return parse_value(raw, quoted, t)
            except ValueError:
                pass
        raise ValueError(f"expected {type_name(tp)}, got {raw!r}")
    if origin is Literal:
        for a in args:
            if raw == (a if isinstance(a, str) else format_value(a)):
                return a
        raise ValueError(f"expected one of {', '.join(map(format_value, args))}, got {raw!r}")
    if origin is tuple:
        items = [] if raw == "()" else raw.split(":")
        elems = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if str in elems or Path in elems:
            raise TypeError(f"tuples of strings are not supported in pipeline text ({type_name(tp)})")
        if len(elems) != len(items):
            raise ValueError(f"expected {len(elems)} values separated by ':', got {raw!r}")
        return tuple(parse_value(x, False, t) for x, t in zip(items, elems))
    if tp is bool:
        if raw in ("true", "false"):
            return raw == "true"
        raise ValueError(f"expected true or false, got {raw!r}")
    if tp in (int, float, str, Path):
        try:
            return tp(raw)
        except ValueError:
            raise ValueError(f"expected {tp.__name__}, got {raw!r}") from None
    if isinstance(tp, type) and issubclass(tp, Enum):
        if raw in tp.__members__:
            return tp[raw]
        raise ValueError(f"expected one of {', '.join(tp.__members__)}, got {raw!r}")
    raise TypeError(f"option type {type_name(tp)} is not supported in pipeline text")


def format_value(value: Any) -> str:
    """The text ``parse_value`` turns back into ``value``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, tuple):
        return ":".join(map(format_value, value)) if value else "()"
    if isinstance(value, (str, Path)):
        s = str(value)
        return s if _is_plain(s) else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {type(value).__name__} value {value!r} in pipeline text")


def type_name(tp: Any) -> str:
    """A readable spelling of a type annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(map(type_name, args))
    if origin is Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is tuple:
        return f"tuple[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _is_plain(s: str) -> bool:
    """True if a string can be written bare: a word that reads as no number or keyword."""
    if not _PLAIN_STR.fullmatch(s) or s in _KEYWORDS:
        return False
    try:
        float(s)
    except ValueError:
        return True
    return False


def _at(text: str, pos: int) -> str:
    """`` at column C`` (or ``line L, column C`` for multi-line text), empty without text."""
    if not text:
        return ""
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f" at line {line}, column {col}" if "\n" in text else f" at column {col}"


class _Scanner:
    """A cursor over pipeline text that skips whitespace and raises XB602 with a caret."""

    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def done(self) -> bool:
        self.skip()
        return self.pos >= len(self.text)

    def peek(self, token: str) -> bool:
        self.skip()
        return self.text.startswith(token, self.pos)

    def expect(self, token: str, message: str) -> None:
        if not self.peek(token):
            self.fail(message)
        self.pos += len(token)

    def take(self, pattern: re.Pattern, what: str) -> re.Match:
        self.skip()
        m = pattern.match(self.text, self.pos)
        if not m:
            self.fail(f"expected {what}")
        self.pos = m.end()
        return m

    def options(self) -> dict[str, Value]:
        self.expect("{", "expected '{'")
        opts: dict[str, Value] = {}
        while not self.peek("}"):
            self.skip()
            key_pos = self.pos
            key = self.take(_NAME, "an option name").group()
            if key in opts:
                self.fail(f"option '{key}' given twice", key_pos)
            self.expect("=", f"expected '=' after option '{key}'")
            opts[key] = dataclasses.replace(self.value(), key_pos=key_pos)
            if not self.peek("}"):
                self.expect(",", "expected ',' or '}' after an option value")
        self.pos += 1
        return opts

    def value(self) -> Value:
        self.skip()
        pos = self.pos
        m = _QUOTED.match(self.text, pos)
        if m:
            self.pos = m.end()
            return Value(re.sub(r"\\(.)", r"\1", m.group(1), flags=re.DOTALL), True, pos)
        if self.text.startswith('"', pos):
            self.fail("unterminated string")
        return Value(self.take(_BARE, "a value").group(), False, pos)

    def fail(self, message: str, pos: int | None = None) -> typing.NoReturn:
        pos = self.pos if pos is None else pos
        found = repr(self.text[pos]) if pos < len(self.text) else "end of text"
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        line = self.text[start:end if end >= 0 else len(self.text)]
        raise CompileError("XB602", f"bad pipeline text{_at(self.text, pos)}: {message}, found {found}",
                           hint=_SYNTAX_HINT, details=[line, " " * (pos - start) + "^"])
