"""What an exporter returns: the main file's text, companion files and the notes on what it left out."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Companion:
    """A second file written next to the main one: the main file's name with ``suffix`` in place of its own."""

    suffix: str
    text: str


@dataclass(frozen=True)
class Export:
    """One netlist in one format: the main file's ``text``, its ``companions`` and the ``notes``.

    Each note is one line naming something of the netlist the format cannot express, or expresses only
    approximately (docs/export.md lists them per format); the command line prints them as warnings.
    """

    format: str
    text: str
    companions: tuple[Companion, ...] = ()
    notes: tuple[str, ...] = ()
