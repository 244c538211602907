"""Our own stable text form of both IR levels (golden dumps never depend on torch's printer)."""

from __future__ import annotations

import json

from torch import fx

from ..frontend import ops
from .program import XbarProgram
from .values import encode


def _target(node: fx.Node) -> str:
    if node.op == "call_module":
        return node.target
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "get_attr":
        return node.target
    return ops.host_name(node.target) or getattr(node.target, "__qualname__", str(node.target))


def print_graph(gm: fx.GraphModule) -> str:
    lines = []
    for node in gm.graph.nodes:
        args = json.dumps(encode(tuple(node.args))["tuple"], sort_keys=True)
        kwargs = json.dumps({k: encode(v) for k, v in node.kwargs.items()}, sort_keys=True)
        meta = node.meta.get("tensor_meta")
        shape = f" : {list(meta.shape)}" if meta is not None and hasattr(meta, "shape") else ""
        lines.append(f"%{node.name} = {node.op} {_target(node)}{args} {kwargs}{shape}")
    return "\n".join(lines) + "\n"


def print_program(program: XbarProgram) -> str:
    lines = [f"input %{i.name} : {list(i.shape)} {i.dtype}" for i in program.inputs]
    for n in program.nodes:
        if n.op == "input":
            continue
        args = json.dumps(list(n.args), sort_keys=True)
        kwargs = json.dumps(dict(n.kwargs), sort_keys=True)
        lines.append(f"%{n.name} = {n.op} {n.target}{args} {kwargs}")
        if n.op == "xbar":
            m = program.matrices[n.target]
            plan = program.plans.get(n.target)
            lines.append(f"    matrix {m.weight.shape[0]}x{m.rows}x{m.weight.shape[2]} {m.kind} "
                         + (f"plan {plan.strategy} crossbars={plan.crossbars} cycles={plan.cycles}" if plan else "unmapped"))
            if plan and plan.strategy != "fully-folded":
                lines.append(f"    w_o={plan.w_o} w_i={plan.w_i} kin={plan.kin} kout={plan.kout} n_w={plan.n_w} "
                             f"splits={plan.kernel_row_splits} row_copies={plan.row_copies} replicas={plan.replicas}")
            for x in program.layer_crossbars(n.target):
                for s in (s for s in program.slices if s.crossbar == x.index):
                    lines.append(f"      {x.id} g{s.group} rows[{s.row_lo}:{s.row_hi}] cols[{s.col_lo}:{s.col_hi}] "
                                 f"at ({s.xrow},{s.xcol})")
                for b in (b for b in program.blocks if b.crossbar == x.index):
                    lines.append(f"      {x.id} g{b.group} ch[{b.channels[0]}:{b.channels[1]}] "
                                 f"ky[{b.kernel_rows[0]}:{b.kernel_rows[1]}] o[{b.out_channels[0]}:{b.out_channels[1]}] "
                                 f"slice {b.slice} row {b.out_row} at ({b.xrow},{b.xcol})")
    lines.append(f"output {json.dumps(program.output, sort_keys=True)}")
    return "\n".join(lines) + "\n"


def print_ir(ir) -> str:
    return print_program(ir) if isinstance(ir, XbarProgram) else print_graph(ir)
