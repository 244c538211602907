"""Trace a model with torch.fx into the canonical graph the passes rewrite.

Canonical form: placeholders, ``get_attr`` nodes, ``call_module`` nodes only for crossbar layers
(``Conv1d``/``Conv2d``/``Linear``; functional convs, linears and ``x @ Parameter`` are turned into
such modules), every other op a ``call_function``/``call_method`` from the host allow-list, and the
output. Dropout and identity are removed. Shapes are propagated into ``node.meta["tensor_meta"]``.

What the front end records about the model goes into typed annotations (:mod:`xbcompiler.ir.annotations`):
``Source`` (and ``LayerKind`` for ``x @ W``) on every crossbar layer, ``FromModule`` on host ops made
from modules, and ``Removed`` on the graph module.
"""

from __future__ import annotations

import contextlib
import copy
import io
import operator
import os
import re
import traceback

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..diagnostics import CompileError, Location, source_of, warn
from ..ir import annotations as ann
from . import ops

_CONTROL_FLOW_HINTS = ("control flow", "iterate", "bool", "len(")


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_TRACING_INTERNALS = tuple(os.path.join(_TORCH_DIR, p) for p in ("fx" + os.sep, "overrides.py", "_tensor.py"))
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+')


class XbTracer(fx.Tracer):
    """Keeps torch.nn modules (Conv/Linear included) as leaves and records stack traces."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True


def user_stack(stack: str) -> str:
    """The recorded stack without torch's own frames, so its innermost frame is the user's line.

    torch.fx records the frames of the tracer and of ``torch.nn.functional``/``__torch_function__``
    below the user's call; ``source_of`` reads the innermost frame. Where the user's code calls
    nothing but torch (a bare ``nn.Conv2d`` as the model), torch's frames outside the tracer stay.
    """
    frames: list[list[str]] = []
    for line in stack.splitlines():
        if _FRAME.match(line) or not frames:
            frames.append([line])
        else:
            frames[-1].append(line)

    def path(frame: list[str]) -> str:
        m = _FRAME.match(frame[0])
        return m.group(1) if m else ""

    kept = [f for f in frames if not path(f).startswith(_TORCH_DIR)] or \
        [f for f in frames if not path(f).startswith(_TRACING_INTERNALS)] or frames
    return "\n".join(line for f in kept for line in f)


def _user_frame(exc: BaseException) -> str | None:
    """The innermost frame of a tracing failure outside torch and this module (the user's line)."""
    here = os.path.abspath(__file__)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_TORCH_DIR) and os.path.abspath(f.filename) != here]
    if not frames:
        return None
    f = frames[-1]
    text = f'File "{f.filename}", line {f.lineno}, in {f.name}'
    return f"{text}: {f.line.strip()}" if f.line and f.line.strip() else text


def in_module(node: fx.Node) -> str:
    """`` in module 'path' (Type)`` for a node recorded inside a submodule's forward, else ``""``."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, kind = list(stack.values())[-1]
    kind = kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]
    return f" in module '{path}' ({kind})" if path else ""


def _err(code: str, message: str, node: fx.Node | None = None, hint: str | None = None) -> CompileError:
    return CompileError(code, message, hint=hint,
                        location=Location(node=node.name if node is not None else None, source=source_of(node)))


def trace(model: nn.Module, example_inputs: tuple) -> fx.GraphModule:
    """Trace a copy of ``model`` (never the model itself) into the canonical graph, with shapes."""
    return trace_copy(private_copy(model), check_inputs(example_inputs))


def private_copy(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` without forward hooks (XB101 if it is not a module)."""
    if not isinstance(model, nn.Module):
        raise CompileError("XB101", f"expected a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model).eval()
    _drop_hooks(model)
    return model


def trace_copy(model: nn.Module, inputs: tuple) -> fx.GraphModule:
    """:func:`trace` on a model :func:`private_copy` made (traced as it is)."""
    try:
        graph = XbTracer().trace(model)
    except CompileError:  # a coded refusal from inside the model (a module rewrite): as it is
        raise
    except Exception as exc:  # noqa: BLE001 - every trace failure becomes a coded error
        text = str(exc)
        where = Location(source=_user_frame(exc))
        if isinstance(exc, fx.proxy.TraceError) or any(h in text for h in _CONTROL_FLOW_HINTS):
            raise CompileError(
                "XB102", f"the model has data-dependent control flow: {text.splitlines()[0] if text else exc}",
                hint="branch on Python values only, pass fixed arguments as concrete_args, or move the "
                     "branching code into a leaf module", location=where) from None
        raise CompileError("XB101", f"torch.fx cannot trace the model: {type(exc).__name__}: {text}",
                           hint="make the failing submodule a leaf, or remove Python-side logic from forward",
                           location=where) from None
    for node in graph.nodes:
        if node.meta.get("stack_trace"):
            node.meta["stack_trace"] = user_stack(node.meta["stack_trace"])
    name = type(model).__name__
    gm = fx.GraphModule(model, graph, name)
    ann.set(gm, ann.Removed())
    _normalise(gm)
    propagate_shapes(gm, inputs)
    return gm


def _drop_hooks(model: nn.Module) -> None:
    """Remove forward hooks from the traced copy: fx ignores them, so the graph computes without them.

    Left on the copy they would run (on copies of the user's modules) during shape propagation and
    numeric checks; removing them and saying so keeps the compile free of user side effects.
    """
    hooked = [name or type(model).__name__ for name, m in model.named_modules()
              if m._forward_hooks or m._forward_pre_hooks]
    for m in model.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    if hooked:
        warn("XB103", f"forward hooks on {', '.join(repr(h) for h in hooked)} are ignored: the compiled model "
                      "computes the modules' forward() only")


def check_inputs(example_inputs) -> tuple:
    """Example inputs as a tuple of tensors, or XB104."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in example_inputs):
        raise CompileError("XB104", "example_inputs must be a tuple of tensors")
    return tuple(example_inputs)


class _ShapeProp(ShapeProp):
    """ShapeProp that remembers the node it is running (for the error location)."""

    current: fx.Node | None = None

    def run_node(self, n: fx.Node):
        self.current = n
        return super().run_node(n)


def propagate_shapes(gm: fx.GraphModule, inputs: tuple) -> None:
    """Run ShapeProp; a failure means the inputs do not fit the model (XB104)."""
    prop = _ShapeProp(gm)
    try:
        # ShapeProp prints a traceback before re-raising; the coded error says it all.
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            prop.propagate(*inputs)
    except Exception as exc:  # noqa: BLE001
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        text = str(cause).strip().splitlines()
        raise _err("XB104", f"the model does not run on the example inputs: {type(cause).__name__}: "
                            f"{text[0] if text else ''}", prop.current,
                   hint="check --input-shape (it includes the batch dimension)") from None


def _normalise(gm: fx.GraphModule) -> None:
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            _normalise_module(gm, node)
        elif node.op == "call_function":
            _normalise_function(gm, node)
        elif node.op == "call_method":
            _normalise_method(gm, node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()


def _remove(gm: fx.GraphModule, node: fx.Node, reason: str) -> None:
    ann.set(gm, ann.get(gm, ann.Removed).plus(ann.RemovedNode(node.name, _display(node), reason)))
    node.replace_all_uses_with(node.args[0])
    gm.graph.erase_node(node)


def _display(node: fx.Node) -> str:
    if node.op == "call_module":
        return node.target
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return getattr(node.target, "__name__", str(node.target))


def is_crossbar_module(mod: nn.Module) -> bool:
    """A module the crossbars execute: Conv1d/Conv2d/Linear with their stock forward."""
    return any(isinstance(mod, t) and type(mod).forward is t.forward for t in ops.CROSSBAR_MODULES)


def _normalise_module(gm: fx.GraphModule, node: fx.Node) -> None:
    mod = gm.get_submodule(node.target)
    if is_crossbar_module(mod):
        if getattr(mod, "padding_mode", "zeros") != "zeros":
            raise _err("XB105", f"padding_mode='{mod.padding_mode}' is not supported on crossbars", node,
                       hint="use zero padding, or pad explicitly with F.pad before the convolution")
        _check_same_padding(mod, node)
        ann.set(node, ann.Source(node.target))
        return
    if isinstance(mod, ops.REMOVED_MODULES):
        _remove(gm, node, "removed in inference")
        return
    builder = ops.MODULE_TO_FUNCTION.get(type(mod))
    if builder is None:
        raise _err("XB103", f"module type {type(mod).__name__} ('{node.target}') is not supported", node,
                   hint=ops.hint_for(type(mod).__name__))
    if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_mean is None:
        raise _err("XB103", f"BatchNorm '{node.target}' has no running statistics", node,
                   hint="construct it with track_running_stats=True")
    fn, args, kwargs = builder(mod, node.target)
    with gm.graph.inserting_before(node):
        new_args = [node.args[0]]
        for a in args[1:]:
            if isinstance(a, str) and a.startswith(f"{node.target}."):
                a = gm.graph.get_attr(a)
            new_args.append(a)
        new = gm.graph.call_function(fn, tuple(new_args), kwargs)
    new.meta = dict(node.meta)
    ann.set(new, ann.FromModule(node.target))
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    new.name = node.name


def _check_same_padding(mod: nn.Module, node: fx.Node) -> None:
    """``padding='same'`` is symmetric only when every ``dilation * (kernel - 1)`` is even (else XB105)."""
    if getattr(mod, "padding", None) != "same":
        return
    if any(d * (k - 1) % 2 for d, k in zip(mod.dilation, mod.kernel_size)):
        raise _err("XB105", f"padding='same' with kernel {tuple(mod.kernel_size)} and dilation "
                            f"{tuple(mod.dilation)} pads asymmetrically, which crossbar layers do not do", node,
                   hint="pad explicitly with F.pad and use padding=0")


def _param(gm: fx.GraphModule, arg) -> torch.Tensor | None:
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        value = gm
        for part in arg.target.split("."):
            value = getattr(value, part)
        return value if isinstance(value, torch.Tensor) else None
    return None


def _normalise_function(gm: fx.GraphModule, node: fx.Node) -> None:
    if id(node.target) in ops.REMOVED_FUNCTIONS:
        _remove(gm, node, "dropout removed in inference")
        return
    kind = ops.CROSSBAR_FUNCTIONS.get(id(node.target))
    if kind is not None and _functional_to_module(gm, node, kind):
        return
    name = ops.host_name(node.target)
    if name is None:
        raise _err("XB103", f"operator {_display(node)} is not supported{in_module(node)}", node,
                   hint=ops.hint_for(_display(node)))
    if name == "torch.einsum" and any(_param(gm, a) is not None for a in node.all_input_nodes):
        raise _err("XB105", "einsum with a parameter operand would keep that weight on the host", node,
                   hint="write the product with the weight as F.linear(x, W) or x @ W: it goes on crossbars")
    if name == "builtins.getattr" and node.args[1] not in ops.GETATTR_ALLOWED:
        raise _err("XB103", f"attribute access '.{node.args[1]}' is not supported on the host", node)


def _normalise_method(gm: fx.GraphModule, node: fx.Node) -> None:
    if node.target in ops.REMOVED_METHODS:
        _remove(gm, node, "no effect in inference")
        return
    if ops.method_name(node.target) is None:
        raise _err("XB103", f"method Tensor.{node.target} is not supported{in_module(node)}", node,
                   hint=ops.hint_for(node.target))


def _functional_to_module(gm: fx.GraphModule, node: fx.Node, kind: str) -> bool:
    """Turn F.conv*/F.linear/matmul with a Parameter weight into a crossbar module; False if host."""
    args = list(node.args) + [None] * 7
    kw = dict(node.kwargs)
    if kind == "matmul":
        left, right = _param(gm, node.args[0]), _param(gm, node.args[1])
        if left is None and right is None:
            return False  # activation @ activation: host
        weight = right if right is not None else left
        if weight.dim() != 2:
            raise _err("XB105", "matmul with a parameter is mapped only for 2-D parameters", node)
        mod = nn.Linear(weight.shape[0], weight.shape[1], bias=False) if right is not None else \
            nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            mod.weight.copy_(weight.t() if right is not None else weight)
        _replace_with_module(gm, node, mod, node.args[0] if right is not None else node.args[1],
                             transpose=left is not None)
        return True
    weight = _param(gm, args[1] if args[1] is not None else kw.get("weight"))
    bias_arg = args[2] if args[2] is not None else kw.get("bias")
    bias = _param(gm, bias_arg)
    if weight is None or (bias_arg is not None and bias is None):
        raise _err("XB105", f"{kind} weights must be parameters of the model to sit on crossbars", node,
                   hint="store the weight as an nn.Parameter and pass it directly")
    if kind == "linear":
        mod = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        opts = {k: (args[i] if args[i] is not None else kw.get(k, d))
                for i, (k, d) in enumerate((("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)), start=3)}
        cls = nn.Conv1d if kind == "conv1d" else nn.Conv2d
        mod = cls(weight.shape[1] * opts["groups"], weight.shape[0], tuple(weight.shape[2:]), bias=bias is not None,
                  **opts)
    with torch.no_grad():
        mod.weight.copy_(weight)
        if bias is not None:
            mod.bias.copy_(bias)
    _check_same_padding(mod, node)
    _replace_with_module(gm, node, mod, node.args[0], transpose=False)
    return True


def _replace_with_module(gm: fx.GraphModule, node: fx.Node, mod: nn.Module, x: fx.Node, transpose: bool) -> None:
    path = f"xb_{node.name}"
    gm.add_submodule(path, mod)
    g = gm.graph
    with g.inserting_before(node):
        if transpose:  # W @ x == (x^T @ W^T)^T
            x = g.call_function(torch.transpose, (x, -2, -1))
        new = g.call_module(path, (x,))
        out = g.call_function(torch.transpose, (new, -2, -1)) if transpose else new
    for n in {new, out, x} if transpose else {new}:
        n.meta["stack_trace"] = node.meta.get("stack_trace")
    ann.set(new, ann.Source(path))
    if node.target in (torch.matmul, operator.matmul):
        ann.set(new, ann.LayerKind("matmul"))
    node.replace_all_uses_with(out)
    gm.graph.erase_node(node)
    new.name = node.name
