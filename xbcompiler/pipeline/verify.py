"""The built-in IR verifier: what ``PassContext.verify_ir`` runs unless a context sets its own.

It knows the project's two IRs: a traced ``torch.fx.GraphModule`` is linted (``Graph.lint``), a crossbar
program is checked with ``XbarProgram.verify(target)`` (XB303 on the first broken invariant). Any
other IR has no built-in check, which is XB606: a verifier that passed what it cannot read would let
the verify-each instrument pass a broken IR.
"""

from __future__ import annotations

from torch import fx

from xbcompiler.diagnostics import CompileError
from xbcompiler.ir.program import XbarProgram


def verify_ir(ir: object, target: object | None = None) -> None:
    """Check ``ir``: fx graphs with ``graph.lint()``, crossbar programs against ``target``."""
    if isinstance(ir, fx.GraphModule):
        ir.graph.lint()
    elif isinstance(ir, XbarProgram):
        ir.verify(target)
    else:
        raise CompileError("XB606", f"the built-in verifier cannot check an IR of type {type(ir).__name__}",
                           hint="give the PassContext a verify_ir that checks this IR")
