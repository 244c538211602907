"""Block-Toeplitz layers in the program verifier: their strategies, and the hook that checks their blocks.

The blocks of a semi-folded or fully-unfolded layer follow the placement function of background §2.2, and
checking them needs that function and the layer shapes, which live in the mapping layer above the IR.
The IR does not import them: :mod:`xbcompiler.mapping.placement`, the module that makes blocks, installs
its check with :func:`install_block_verifier` when it is imported, and ``XbarProgram.verify`` runs it
through :func:`verify_blocks`. A program with blocks but no installed check fails verification (XB303)
rather than passing unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..diagnostics import CompileError

TOEPLITZ = ("semi-folded", "fully-unfolded")
"""Mapping strategies whose layers are laid out as block-Toeplitz blocks (``XbarProgram.blocks``)."""

_block_verifier: Callable[[Any], None] | None = None


def install_block_verifier(check: Callable[[Any], None]) -> None:
    """Make ``check(program)`` the verifier of block-Toeplitz layers (it raises XB303 on a violation)."""
    global _block_verifier
    _block_verifier = check


def verify_blocks(program: Any) -> None:
    """Check the blocks of every block-Toeplitz layer of an ``XbarProgram`` with the installed verifier."""
    if not program.blocks and not any(p.strategy in TOEPLITZ for p in program.plans.values()):
        return
    if _block_verifier is None:
        raise CompileError("XB303", "the program has block-Toeplitz layers but no block verifier is installed",
                           hint="import xbcompiler.mapping.placement, which installs it")
    _block_verifier(program)
