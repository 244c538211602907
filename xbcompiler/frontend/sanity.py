"""Numbers that make no sense, refused before compiling (issue 14): never silently used.

- a parameter or buffer with a NaN or an infinity (XB120, naming it);
- a linear or convolution layer with zero inputs or outputs (XB121);
- a model whose outputs hold no tensor (XB122): it would compile to an empty netlist.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from ..diagnostics import CompileError, Location

#: Layers that go onto crossbars; a zero-sized one has nothing to map.
_MATRIX_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d)


def check_model_numbers(model: nn.Module) -> None:
    """XB120 for a non-finite parameter or floating-point buffer, XB121 for a zero-sized crossbar layer
    (anything but a module is left to the front end to refuse)."""
    if not isinstance(model, nn.Module):
        return
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise CompileError("XB120", f"{kind} '{name}' holds {bad} NaN or infinite value(s) of {t.numel()}",
                                   location=Location(node=name.rpartition(".")[0] or name),
                                   hint="fix the weights (a diverged training run?) before compiling")
    for name, m in model.named_modules():
        if isinstance(m, _MATRIX_LAYERS) and m.weight.numel() == 0:
            raise CompileError("XB121", f"layer '{name}' ({type(m).__name__}) has zero inputs or outputs "
                                        f"(weight shape {list(m.weight.shape)})",
                               location=Location(node=name), hint="a layer needs at least one input and one output")


def check_tensor_outputs(gm: fx.GraphModule) -> None:
    """XB122 unless the traced graph returns at least one computed tensor."""
    found = []
    for node in gm.graph.nodes:
        if node.op == "output":
            fx.node.map_arg(node.args, found.append)
    if not found:
        raise CompileError("XB122", "the model's outputs hold no tensor computed from its inputs: its netlist "
                                    "would be empty", hint="return the tensor(s) the model computes from forward()")
