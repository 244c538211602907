"""Option introspection: the options of a pass (or instrument) are the fields of its dataclass.

Each field is documented by the string literal right under it. This module depends on nothing else
in the framework, so the pass base class and the textual form can both use it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import textwrap
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PassOption:
    """One option of a pass: its field, command-line spelling, type, default and documentation."""

    name: str
    kebab: str
    type: Any
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def pass_options(cls: type) -> list[PassOption]:
    """The options of a pass class (any dataclass works), in field order."""
    return list(_options(cls))


@functools.cache
def _options(cls: type) -> tuple[PassOption, ...]:
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError, AttributeError):  # unresolvable: keep raw annotations, the parser says so
        hints = {}
    docs = _field_docs(cls)
    options = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        options.append(PassOption(f.name, f.name.replace("_", "-"), hints.get(f.name, f.type),
                                  default, docs.get(f.name, "")))
    return tuple(options)


def _field_docs(cls: type) -> dict[str, str]:
    """Field docstrings: a string literal right under an annotated assignment, base classes first."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, nxt in itertools.pairwise(body):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs
