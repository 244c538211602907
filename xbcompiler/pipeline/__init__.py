"""Pass framework: pass base class, registry, pipeline text, named pipelines, manager, instruments."""

from xbcompiler.pipeline.base import STAGE_IO, Pass, PassContext, PassOption, pass_options
from xbcompiler.pipeline.instruments import (
    INSTRUMENTS,
    DumpIR,
    Instrument,
    NumericCheck,
    Timing,
    VerifyEach,
    instruments_from_names,
)
from xbcompiler.pipeline.manager import PassManager
from xbcompiler.pipeline.named import NAMED_PIPELINES, resolve_pipeline
from xbcompiler.pipeline.registry import (
    get_pass,
    load_failures,
    parse_pipeline,
    register_pass,
    registered_passes,
    unregister_pass,
)
from xbcompiler.pipeline.text import format_pipeline

__all__ = [
    "INSTRUMENTS",
    "NAMED_PIPELINES",
    "STAGE_IO",
    "DumpIR",
    "Instrument",
    "NumericCheck",
    "Pass",
    "PassContext",
    "PassManager",
    "PassOption",
    "Timing",
    "VerifyEach",
    "format_pipeline",
    "get_pass",
    "instruments_from_names",
    "load_failures",
    "parse_pipeline",
    "pass_options",
    "register_pass",
    "registered_passes",
    "resolve_pipeline",
    "unregister_pass",
]
