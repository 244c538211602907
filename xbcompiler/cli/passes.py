"""``xbc passes``: the registered passes, their options, the named pipelines and the instruments."""

from __future__ import annotations

import argparse
import re

from .args import command_parser
from .console import EXIT_OK, console, row, say, table


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return command_parser(sub, common, "passes", run,
                          "list registered passes, their options, named pipelines and instruments")


def run(args: argparse.Namespace) -> int:
    from ..pipeline import (
        INSTRUMENTS,
        NAMED_PIPELINES,
        STAGE_IO,
        load_failures,
        pass_options,
        registered_passes,
    )
    from ..pipeline.text import format_value, type_name

    stdout = console()
    order = {s: i for i, s in enumerate(STAGE_IO)}
    passes = sorted(registered_passes().items(), key=lambda kv: (order.get(kv[1].stage, 99), kv[0]))
    t = table(f"{len(passes)} registered passes", ["pass", "stage", "needs", "establishes", "invalidates",
                                                   "description"])
    for name, cls in passes:
        row(t, name, cls.stage, set_text(cls.needs), set_text(cls.establishes), set_text(cls.invalidates),
            first_line(cls.__doc__))
    stdout.print(t)
    options = table("pass options", ["pass", "option", "type", "default", "description"])
    for name, cls in passes:
        for o in pass_options(cls):
            default = "(required)" if o.required else format_value(o.default)
            row(options, name, o.kebab, type_name(o.type), default, first_line(o.doc))
    stdout.print(options)
    named = table("named pipelines", ["pipeline", "passes"])
    for name, steps in NAMED_PIPELINES.items():
        row(named, name, ",".join(steps))
    stdout.print(named)
    inst = table("instruments (--instrument)", ["instrument", "options", "description"])
    for name, cls in INSTRUMENTS.items():
        opts = ", ".join(f"{o.kebab}={format_value(o.default)}" for o in pass_options(cls) if not o.required)
        row(inst, name, opts or "-", first_line(cls.__doc__))
    stdout.print(inst)
    for name, why in load_failures().items():
        say(stdout, f"warning: pass '{name}' not loaded: {why}", "yellow")
    return EXIT_OK


def set_text(values) -> str:
    return ", ".join(sorted(values)) or "-"


def first_line(doc: str | None) -> str:
    """The first line of a docstring, without reStructuredText roles and double backquotes."""
    lines = [ln.strip() for ln in (doc or "").strip().splitlines()]
    text = lines[0] if lines else ""
    return re.sub(r":[a-z]+:`~?([^`]*)`", r"\1", text).replace("``", "")
