"""The ``torch.export`` front end: an ATen graph rebuilt into the canonical graph the passes take.

``torch.export.export(model, inputs, strict=False)`` captures models symbolic tracing cannot
(``nn.TransformerEncoder``, Python-side logic on shapes) as a graph of ATen operators. This module
rebuilds that graph into the form :func:`xbcompiler.frontend.trace.trace` produces, node by node:

- the single ATen call of a stock ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` becomes a ``call_module``
  of that module (named after its path, as torch.fx names it); other convolutions, linears and
  matmuls become ``F.conv2d``/``F.linear``/``torch.matmul`` with ``get_attr`` parameters, which the
  shared normalisation turns into crossbar modules or refuses (XB105);
- the single ATen call of another torch.nn module (ReLU, BatchNorm2d, MaxPool2d, ...) becomes the
  functional form the fx front end gives that module, with its settings;
- every other ATen call becomes the host operator :data:`.aten.ATEN_OPS` names;
- parameters and buffers become ``get_attr`` nodes; values computed from buffers and constants
  alone (masks built in ``forward``) are computed once and stored as constants.

The batch dimension of every input is exported as dynamic, so ``x.size(0)`` stays a host op and the
netlist runs on any batch size, as a traced one does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator
import re
import warnings
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from ..diagnostics import CompileError, Location, source_of
from ..ir import annotations as ann
from . import aten, ops
from .trace import _normalise, _user_frame, in_module, is_crossbar_module, propagate_shapes, user_stack

_CROSSBAR_ATEN = {"aten.conv1d": nn.Conv1d, "aten.conv2d": nn.Conv2d, "aten.convolution": (nn.Conv1d, nn.Conv2d),
                  "aten.linear": nn.Linear}
_TO_PYTHON = ("aten._local_scalar_dense", "aten.item")
_DATA_DEPENDENT = ("data-dependent", "data dependent", "GuardOnDataDependentSymNode", "guard_or", "cond")


def export(model: nn.Module, inputs: tuple) -> fx.GraphModule:
    """The canonical graph of a :func:`~xbcompiler.frontend.trace.private_copy` through ``torch.export``."""
    program = _capture(model, inputs)
    gm = _Rebuild(model, program).run()
    _normalise(gm)
    propagate_shapes(gm, inputs)
    return gm


def _capture(model: nn.Module, inputs: tuple) -> torch.export.ExportedProgram:
    """``torch.export`` (non-strict) with a dynamic batch dimension; XB101/XB102 when it fails."""
    doubled = tuple(torch.cat([t, t]) if t.dim() and t.shape[0] == 1 else t for t in inputs)
    dynamic = tuple({0: torch.export.Dim.AUTO} if t.dim() else None for t in inputs)
    try:
        program = _run_export(model, doubled, dynamic)
        if any(_static_batch(p) for p in _user_placeholders(program)):  # the model fixes its batch size
            program = _run_export(model, inputs, None)
    except CompileError:
        raise
    except Exception as exc:  # noqa: BLE001 - every export failure becomes a coded error
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        where = Location(source=_user_frame(exc))
        if any(h in text for h in _DATA_DEPENDENT):
            raise CompileError("XB102", f"the model has data-dependent control flow: {first}",
                               hint="branch on Python values or shapes only, or compute the branch on the host "
                                    "with torch.where", location=where) from None
        raise CompileError("XB101", f"torch.export cannot capture the model: {type(exc).__name__}: {first}",
                           hint="remove Python-side logic on tensor values from forward, or try --frontend fx",
                           location=where) from None
    return program


def _run_export(model, inputs, dynamic):
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), _quiet_logging():
        warnings.simplefilter("ignore")
        return torch.export.export(model, inputs, dynamic_shapes=dynamic, strict=False)


@contextlib.contextmanager
def _quiet_logging():
    """No log records while exporting: torch logs the traceback of a failed fake-tensor kernel through
    handlers bound to the real stderr, and the coded error already says what failed."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def _user_placeholders(program) -> list[fx.Node]:
    users = {s.arg.name for s in program.graph_signature.input_specs
             if s.kind == torch.export.graph_signature.InputKind.USER_INPUT}
    return [n for n in program.graph.nodes if n.op == "placeholder" and n.name in users]


def _static_batch(node: fx.Node) -> bool:
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.dim() > 0 and isinstance(val.shape[0], int) and val.shape[0] == 2


@dataclass
class _Call:
    """The ATen nodes of one call of one module (the innermost entry of ``nn_module_stack``)."""

    path: str
    module: nn.Module | None
    nodes: list = field(default_factory=list)


def _module_calls(model: nn.Module, graph: fx.Graph) -> dict[str, _Call]:
    calls: dict[str, _Call] = {}
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if node.op != "call_function" or not stack or _bookkeeping(node):
            continue
        key, (path, _type) = list(stack.items())[-1]
        if key not in calls:
            try:
                module = model.get_submodule(path) if path else None
            except AttributeError:
                module = None
            calls[key] = _Call(path, module)
        calls[key].nodes.append(node)
    return calls


def _out_of_place(target: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """The out-of-place overload of an in-place ATen op that writes only its first argument
    (``aten.relu_.default`` -> ``aten.relu.default``, as ``nn.ReLU(inplace=True)`` gives it); else None."""
    name, schema = target.overloadpacket.__name__, target._schema
    written = [a for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write]
    if not name.endswith("_") or name.startswith("_") or not schema.arguments or written != schema.arguments[:1]:
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    return getattr(packet, target._overloadname, None) if packet is not None else None


def _writes_unshared(node: fx.Node, order: dict[fx.Node, int]) -> bool:
    """Whether an in-place node's out-of-place form computes the same graph: the tensor it writes, and
    every view of it (the views of the intermediate result it views, if it is one), is read by no node
    after it (``order``: each node's place in the graph; torch.export points later reads of the written
    tensor itself at the in-place node)."""
    source = node.args[0] if node.args else None
    if not isinstance(source, fx.Node):
        return False
    root = source
    while _is_view(root) and root.args and isinstance(root.args[0], fx.Node):
        root = root.args[0]
    if root.op != "call_function":
        return False  # a model input, a parameter or a buffer
    aliases, todo = {root}, [root]
    while todo:
        for user in todo.pop().users:
            if user not in aliases and _is_view(user) and user.args and user.args[0] in aliases:
                aliases.add(user)
                todo.append(user)
    readers = {user for alias in aliases for user in alias.users if user is not node and user not in aliases}
    return all(order[n] < order[node] for n in readers | aliases)  # a view made later reads the write too


def _is_view(node: fx.Node) -> bool:
    """Whether the node's result is a view of one of its arguments (``aten.slice``; not an in-place op's)."""
    schema = getattr(node.target, "_schema", None)
    return schema is not None and any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


def _bookkeeping(node: fx.Node) -> bool:
    """Nodes that do not count as a module's computation: tuple items, sizes, assertions."""
    if node.target is operator.getitem:
        return True
    rule = aten.rule_for(node.target)
    return rule is not None and (rule.placement == "graph" or rule.op == "aten.sym_size.int")


def _is_fx_leaf(module: nn.Module | None, path: str) -> bool:
    return module is not None and path != "" and fx.Tracer().is_leaf_module(module, path)


class _Rebuild:
    """One ATen graph rebuilt into a new fx graph over the model's own parameters and modules."""

    def __init__(self, model: nn.Module, program: torch.export.ExportedProgram):
        self.model, self.program = model, program
        self.graph = fx.Graph()
        self.env: dict[fx.Node, object] = {}  # ATen node -> new node, Python value, or ("attr", fqn)
        self.static: dict[fx.Node, object] = {}  # ATen node -> its value, when it depends on no input
        self.attrs: dict[str, fx.Node] = {}
        self.removed: list[ann.RemovedNode] = []
        self.sole: dict[fx.Node, _Call] = {}
        self.order = {n: i for i, n in enumerate(program.graph.nodes)}
        for call in _module_calls(model, program.graph).values():
            if len(call.nodes) == 1 and _is_fx_leaf(call.module, call.path):
                self.sole[call.nodes[0]] = call
        self.constants = 0

    # ---------------------------------------------------------------------------- driving

    def run(self) -> fx.GraphModule:
        sig = self.program.graph_signature
        kinds = {s.arg.name: s for s in sig.input_specs}
        for node in self.program.graph.nodes:
            if node.op == "placeholder":
                self._placeholder(node, kinds[node.name])
            elif node.op == "call_function":
                self._call(node)
            elif node.op == "output":
                self._output(node)
            else:
                raise self._refuse(node, f"graph node kind '{node.op}' (a submodule call torch.export kept)",
                                   code="XB101")
        gm = fx.GraphModule(self.model, self.graph, type(self.model).__name__)
        ann.set(gm, ann.Removed(tuple(self.removed)))
        return gm

    def _placeholder(self, node: fx.Node, spec) -> None:
        kind = spec.kind.name
        if kind == "USER_INPUT":
            self.env[node] = self.graph.placeholder(node.name)
            self.env[node].meta["val"] = node.meta.get("val")
        elif kind in ("PARAMETER", "BUFFER"):
            self.env[node] = ("attr", spec.target)
            self.static[node] = self._attr_value(spec.target)
        elif kind == "CONSTANT_TENSOR":
            value = self.program.constants[spec.target]
            self.env[node] = ("attr", self._register(value))
            self.static[node] = value
        else:
            raise self._refuse(node, f"model input of kind {kind}", code="XB101")

    def _output(self, node: fx.Node) -> None:
        specs = self.program.graph_signature.output_specs
        flat = [self._value(a) for a, s in zip(node.args[0], specs) if s.kind.name == "USER_OUTPUT"]
        self.graph.output(pytree.tree_unflatten(flat, self.program.call_spec.out_spec))

    def _call(self, node: fx.Node) -> None:
        if self._fold(node):
            return
        target = node.target
        if not isinstance(target, torch._ops.OpOverload):
            self._python_call(node)
            return
        if str(target.overloadpacket) in _TO_PYTHON:
            raise self._refuse(node, "the model turns a tensor into a Python value (.item(), .tolist(), int(x))",
                               code="XB101", hint="keep values as tensors (torch.where instead of if, "
                                                  "tensor arithmetic instead of Python numbers)")
        rule = aten.rule_for(target)
        functional = _out_of_place(target) if rule is None else None
        if functional is not None and aten.rule_for(functional) is not None:
            if not _writes_unshared(node, self.order):
                short = aten.short_name(functional)
                raise self._refuse(node, f"{target} writes in place a model input or parameter, or a tensor that "
                                         f"a later operator reads (itself or through a view)",
                                   hint=f"use the out-of-place form (x.{short}(...), not x.{short}_(...); "
                                        f"no inplace=True)")
            rule = aten.rule_for(functional)
        call = self.sole.get(node)
        if call is not None and self._module_node(node, call, rule):
            return
        if rule is None:
            raise self._refuse(node, f"operator {target} is not supported")
        if rule.placement == "graph":
            return
        if rule.placement == "removed":
            self._remove(node, str(target.overloadpacket), rule.becomes)
            return
        try:
            emit = rule.convert(node.args, dict(node.kwargs), node)
        except aten.Refused as why:
            raise self._refuse(node, f"{target} is accepted, but not as used here: {why}") from None
        self._emit(node, emit)

    def _python_call(self, node: fx.Node) -> None:
        """``operator.getitem`` on tuple results and integer arithmetic on symbolic sizes."""
        source = node.args[0] if node.args else None
        if node.target is operator.getitem and isinstance(self.env.get(source), _First):
            if node.args[1] != 0:
                if not node.users:
                    return  # an output nothing reads
                raise self._refuse(node, f"the indices output of {source.target} (only its values are computed)")
            self.env[node] = self.env[source].node
            return
        if node.target not in aten.SYMBOLIC_OPERATORS:
            raise self._refuse(node, f"operator {getattr(node.target, '__name__', node.target)} is not supported")
        self._emit(node, aten.Emit(node.target, node.args, dict(node.kwargs)))

    # ---------------------------------------------------------------------------- module calls

    def _module_node(self, node: fx.Node, call: _Call, rule) -> bool:
        """The one ATen node of a leaf module's call, as fx gives that module; False when not applicable."""
        mod, path = call.module, call.path
        packet = str(node.target.overloadpacket)
        if is_crossbar_module(mod) and isinstance(mod, _CROSSBAR_ATEN.get(packet, ())) and \
                self._param_target(node.args[1]) == f"{path}.weight" and \
                self._param_target(_bias(node)) in (None, f"{path}.bias") and \
                (packet != "aten.convolution" or not node.args[6]):
            new = self.graph.call_module(path, (self._value(node.args[0]),))
            self._finish(node, new)
            return True
        if isinstance(mod, ops.REMOVED_MODULES):
            self._remove(node, path, "removed in inference", name=path)
            return True
        builder = ops.MODULE_TO_FUNCTION.get(type(mod))
        if builder is None or rule is None or rule.placement != "host":
            return False
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is None:
            raise self._refuse(node, f"BatchNorm '{path}' has no running statistics",
                               hint="construct it with track_running_stats=True")
        fn, args, kwargs = builder(mod, path)
        values = [self._value(node.args[0])]
        for a in args[1:]:
            values.append(self._get_attr(a) if isinstance(a, str) and a.startswith(f"{path}.") else a)
        new = self.graph.create_node("call_function", fn, tuple(values), kwargs,
                                     name=self.graph._target_to_str(path))  # named as fx names the module
        ann.set(new, ann.FromModule(path))
        first_only = rule.convert(node.args, dict(node.kwargs), node).first_only and not kwargs.get("return_indices")
        self._finish(node, new, first_only=first_only)
        return True

    # ---------------------------------------------------------------------------- emission

    def _emit(self, node: fx.Node, emit: aten.Emit) -> None:
        args = fx.node.map_aggregate(emit.args, self._value)
        kwargs = fx.node.map_aggregate(emit.kwargs, self._value)
        if isinstance(emit.target, str):
            new = self.graph.call_method(emit.target, tuple(args), dict(kwargs))
        else:
            new = self.graph.call_function(emit.target, tuple(args), dict(kwargs))
        self._finish(node, new, emit.first_only)

    def _finish(self, node: fx.Node, new: fx.Node, first_only: bool = False) -> None:
        if node.meta.get("stack_trace"):
            new.meta["stack_trace"] = user_stack(node.meta["stack_trace"])
        if node.meta.get("nn_module_stack"):
            new.meta["nn_module_stack"] = dict(node.meta["nn_module_stack"])
        self.env[node] = _First(new) if first_only else new

    def _remove(self, node: fx.Node, display: str, reason: str, name: str | None = None) -> None:
        self.removed.append(ann.RemovedNode(_fx_name(self.graph._target_to_str(name)) if name else node.name,
                                            display, reason))
        self.env[node] = self._value(node.args[0])

    def _value(self, value):
        if not isinstance(value, fx.Node):
            return value
        got = self.env[value]
        if isinstance(got, tuple) and len(got) == 2 and got[0] == "attr":
            return self._get_attr(got[1])
        if isinstance(got, _First):
            raise self._refuse(value, f"a tuple result of {value.target} used as a whole")
        return got

    def _get_attr(self, target: str) -> fx.Node:
        if target not in self.attrs:
            self.attrs[target] = self.graph.get_attr(target)
        return self.attrs[target]

    def _param_target(self, value) -> str | None:
        got = self.env.get(value) if isinstance(value, fx.Node) else None
        return got[1] if isinstance(got, tuple) and len(got) == 2 and got[0] == "attr" else None

    # ---------------------------------------------------------------------------- constants

    def _fold(self, node: fx.Node) -> bool:
        """Compute now a node whose tensor inputs are all parameters, buffers or constants (a weight
        built in ``forward``: masked, binarised, standardised); a parameter itself stays one."""
        inputs = node.all_input_nodes
        if not all(i in self.static for i in inputs):
            return False
        rule = aten.rule_for(node.target) if isinstance(node.target, torch._ops.OpOverload) else None
        if rule is not None and rule.placement in ("crossbar", "graph"):
            return False
        args = fx.node.map_aggregate(node.args, lambda v: self.static[v] if isinstance(v, fx.Node) else v)
        kwargs = fx.node.map_aggregate(node.kwargs, lambda v: self.static[v] if isinstance(v, fx.Node) else v)
        with torch.no_grad():
            value = node.target(*args, **kwargs)
        self.static[node] = value
        if isinstance(value, torch.Tensor):
            self.env[node] = ("attr", self._register(value))
        elif isinstance(value, (int, float, bool)):
            self.env[node] = value
        else:
            self.env[node] = _Folded(value)
        return True

    def _register(self, value: torch.Tensor) -> str:
        name = f"_xb_constant_{self.constants}"
        self.constants += 1
        self.model.register_buffer(name, value.detach().clone())
        return name

    def _attr_value(self, target: str):
        module_path, _, attr = target.rpartition(".")
        return getattr(self.model.get_submodule(module_path), attr)

    # ---------------------------------------------------------------------------- errors

    def _refuse(self, node: fx.Node, what: str, code: str = "XB103", hint: str | None = None) -> CompileError:
        stack = node.meta.get("nn_module_stack") or {}
        kind = str(list(stack.values())[-1][1]).rsplit(".", 1)[-1] if stack else ""
        probe = fx.Node.__new__(fx.Node)
        probe.meta = {"stack_trace": user_stack(node.meta["stack_trace"])} if node.meta.get("stack_trace") else {}
        short = aten.short_name(node.target)
        if stack and ops.known_unsupported(kind):  # say what the user wrote, not the ATen op inside it
            what = f"module type {kind} ('{list(stack.values())[-1][0]}') is not supported ({what})"
        else:
            what += in_module(node)
        return CompileError(code, what,
                            location=Location(node=node.name, source=source_of(probe)),
                            hint=hint or ops.hint_for(short, kind))


@dataclass(frozen=True)
class _First:
    """A host op that returns the first item of the ATen op's tuple (``getitem(_, 0)`` is the op itself)."""

    node: fx.Node


@dataclass(frozen=True)
class _Folded:
    """A non-tensor constant result (a tuple of constant tensors): only its items may be used."""

    value: object


def _bias(node: fx.Node):
    return node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")


def _fx_name(path: str) -> str:
    """The node name torch.fx gives a call of the module at ``path`` (``features.0`` -> ``features_0``)."""
    name = re.sub(r"[^0-9a-zA-Z_]+", "_", path) or "_unnamed"
    return f"_{name}" if name[0].isdigit() else name
