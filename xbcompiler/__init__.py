"""xbcompiler: compile PyTorch models onto memristive (ReRAM) crossbar accelerators."""

from .diagnostics import CompileError, XBWarning
from .driver import CompiledModel, compile
from .emulator import ProgrammedChip, emulate, program
from .netlist import Netlist, load_netlist
from .pipeline import Pass, PassContext, PassManager, parse_pipeline, register_pass
from .target import TargetSpec, list_targets, load_target
from .verify import VerifyReport, verify
from .version import __version__

__all__ = [
    "CompileError",
    "CompiledModel",
    "Netlist",
    "Pass",
    "PassContext",
    "PassManager",
    "ProgrammedChip",
    "TargetSpec",
    "VerifyReport",
    "XBWarning",
    "__version__",
    "compile",
    "emulate",
    "list_targets",
    "load_netlist",
    "load_target",
    "parse_pipeline",
    "program",
    "register_pass",
    "verify",
]
