"""xbcompiler: compile PyTorch models onto memristive (ReRAM) crossbar accelerators."""

from .campaign import sweep  # Ray is imported only when a sweep runs
from .diagnostics import CompileError, XBWarning
from .driver import CompiledModel, compile
from .emulator import ProgrammedChip, emulate, program
from .emulator.fault_maps import save_fault_map
from .netlist import Netlist, load_netlist
from .pipeline import Pass, PassContext, PassManager, parse_pipeline, register_pass
from .target import TargetSpec, list_targets, load_target
from .verify import VerifyReport, verify
from .version import __version__


def polarize(model, target, data, **options):
    """FORMS polarization of ``model`` for a polarized ``target`` by ADMM; returns ``(model, report)``.

    See :func:`xbcompiler.prune.polarize.polarize` (``data`` is ``(images, labels)``; options ``val``,
    ``settings``, ``log``) and docs/polarize.md.
    """
    from .prune.polarize import polarize as run

    return run(model, target, data, **options)


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
    "polarize",
    "program",
    "register_pass",
    "save_fault_map",
    "sweep",
    "verify",
]
