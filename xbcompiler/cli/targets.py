"""``xbc targets [NAME|PATH]``: list the built-in targets, or show one target in full."""

from __future__ import annotations

import argparse
import json

from ..diagnostics import CompileError
from .args import add_set, command_parser, parse_overrides
from .console import EXIT_OK, console, row, table


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "targets", run, "list built-in targets, or show one target in full")
    p.add_argument("target", nargs="?", metavar="NAME|PATH", help="show this target's every key")
    add_set(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..target import KEYS, list_targets, load_target

    stdout = console()
    overrides = parse_overrides(args.overrides)
    if args.target is None:
        if overrides:
            raise CompileError("XB003", "--set needs a target: xbc targets NAME --set KEY=VALUE")
        t = table("built-in targets", ["name", "array", "cell bits", "weight/input bits", "DAC/ADC bits",
                                       "encoding", "tiles x crossbars"])
        for name in list_targets():
            spec = load_target(name)
            enc = spec.encoding.signed + (", flip" if spec.encoding.flip_columns else "")
            row(t, name, f"{spec.crossbar.rows}x{spec.crossbar.cols}", spec.crossbar.cell_bits,
                f"{spec.precision.weight_bits}/{spec.precision.input_bits}",
                f"{spec.precision.dac_bits}/{spec.precision.adc_bits}", enc,
                f"{spec.hierarchy.tiles}x{spec.hierarchy.crossbars_per_tile}")
        stdout.print(t)
        return EXIT_OK
    spec = load_target(args.target, overrides)
    t = table(f"target {spec.name} ({spec.source})", ["key", "value", "meaning"])
    for key, doc in KEYS.items():
        value = spec.get(key)
        row(t, key, json.dumps(value) if isinstance(value, str) else toml_value(value), doc)
    stdout.print(t)
    derived = table("derived", ["quantity", "value"])
    for label, value in [("m_c (physical columns per weight)", spec.m_c),
                         ("logical columns per crossbar", spec.logical_cols),
                         ("weight slices", spec.weight_slices), ("input cycles", spec.input_cycles),
                         ("crossbars per chip", spec.crossbars_per_chip),
                         ("lossless ADC bits at full rows", spec.lossless_adc_bits(spec.crossbar.rows)),
                         ("fingerprint", spec.fingerprint())]:
        row(derived, label, value)
    stdout.print(derived)
    return EXIT_OK


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
