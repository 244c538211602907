"""Typed annotations of the graph stage: what the front end and the graph passes record on the fx graph.

Each annotation is a frozen dataclass stored in an fx node's (or the ``GraphModule``'s) ``meta`` under
a key only this module spells, and read back by its type::

    from xbcompiler.ir import annotations as ann

    ann.set(node, ann.Reference("bn1"))
    ann.get(node, ann.Reference)        # required: XB202 naming what establishes it when missing
    ann.get(node, ann.Reference, None)  # optional: None when missing

Each class names, in ``established_by``, the pass (or front-end step) that records it, so a pass that
needs an annotation nobody recorded stops with XB202 saying what to run first. torch.fx's own keys
(``tensor_meta`` from ShapeProp, ``stack_trace``) stay as torch.fx writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, overload

from torch import fx

from ..diagnostics import CompileError, Location, source_of

A = TypeVar("A", bound="Annotation")
D = TypeVar("D")
_REQUIRED: Any = object()
_TRACE = "the front end (xbcompiler.frontend.trace.trace, which gives the property 'traced')"


@dataclass(frozen=True)
class Annotation:
    """Base of every annotation; subclasses are frozen dataclasses."""

    established_by: ClassVar[str] = "?"
    """The pass (or front-end step) that records this annotation."""


@dataclass(frozen=True)
class Source(Annotation):
    """On a crossbar ``call_module`` node: the module path whose parameters the layer holds."""

    module: str
    established_by: ClassVar[str] = _TRACE


@dataclass(frozen=True)
class LayerKind(Annotation):
    """On a crossbar ``call_module`` node: the operator the user wrote where it is not the module type.

    ``"matmul"`` for ``x @ W`` with a parameter ``W`` (traced into a bias-free Linear). A layer without
    this annotation is of its module's kind.
    """

    kind: str
    established_by: ClassVar[str] = _TRACE


@dataclass(frozen=True)
class FromModule(Annotation):
    """On a host ``call_function`` node the front end made from a module (ReLU, BatchNorm, ...): its path."""

    module: str
    established_by: ClassVar[str] = _TRACE


@dataclass(frozen=True)
class Reference(Annotation):
    """On a crossbar layer: the node of the traced model whose output the layer's output now equals.

    fold-batchnorm records the folded BatchNorm here; a layer without it computes its own node's output.
    """

    node: str
    established_by: ClassVar[str] = "fold-batchnorm"


@dataclass(frozen=True)
class RemovedNode:
    """A node the front end removed (dropout, identity, ...): its name, what it called, and why."""

    name: str
    target: str
    reason: str


@dataclass(frozen=True)
class Removed(Annotation):
    """On the ``GraphModule``: every node the front end removed, in order."""

    nodes: tuple[RemovedNode, ...] = ()
    established_by: ClassVar[str] = _TRACE

    def plus(self, node: RemovedNode) -> Removed:
        return Removed((*self.nodes, node))


def _key(cls: type[Annotation]) -> str:
    return f"xb:{cls.__module__}.{cls.__qualname__}"


@overload
def get(holder: fx.Node | fx.GraphModule, cls: type[A]) -> A: ...
@overload
def get(holder: fx.Node | fx.GraphModule, cls: type[A], default: D) -> A | D: ...


def get(holder, cls, default=_REQUIRED):
    """The ``cls`` annotation of a node or graph module; ``default`` if absent, else XB202."""
    value = holder.meta.get(_key(cls))
    if value is not None:
        return value
    if default is not _REQUIRED:
        return default
    node = holder if isinstance(holder, fx.Node) else None
    what = f"node '{node.name}'" if node is not None else "the graph"
    raise CompileError("XB202", f"{what} has no {cls.__name__} annotation, which {cls.established_by} records",
                       hint="run that first (a graph that bypassed it lacks what later passes read)",
                       location=Location(node=node.name if node is not None else None, source=source_of(node)))


def set(holder: fx.Node | fx.GraphModule, value: Annotation) -> None:
    """Record ``value`` on a node or graph module, replacing an annotation of the same type."""
    if not isinstance(value, Annotation):
        raise TypeError(f"expected an Annotation, got {type(value).__name__}")
    holder.meta[_key(type(value))] = value
