"""xbcompiler: compile PyTorch models onto memristive (ReRAM) crossbar accelerators."""

__version__ = "0.1.0"

from .diagnostics import CompileError, XBWarning
from .driver import CompiledModel, compile
from .emit.netlist import Netlist, load_netlist
from .emulator import emulate
from .emulator.verify import VerifyReport, verify
from .pipeline import Pass, PassContext, PassManager, parse_pipeline, register_pass
from .target import TargetSpec, list_targets, load_target

__all__ = [
    "CompileError", "CompiledModel", "Netlist", "Pass", "PassContext", "PassManager", "TargetSpec", "VerifyReport",
    "XBWarning", "compile", "emulate", "list_targets", "load_netlist", "load_target", "parse_pipeline",
    "register_pass", "verify",
]
