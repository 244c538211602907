"""``xbc demo``: compile and verify the bundled demo CNN (offline)."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from .args import add_set, command_parser, parse_overrides
from .console import (
    EXIT_MISMATCH,
    EXIT_OK,
    console,
    merge_warnings,
    print_summary,
    print_verdict,
    print_verify,
    say,
    status_spinner,
    xb_warnings,
)
from .files import save_atomically
from .models import random_inputs

DEMO_TARGET = "isaac-like"


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "demo", run, "compile and verify the bundled demo CNN (offline)")
    p.add_argument("--target", default=DEMO_TARGET, metavar="NAME|PATH", help=f"default {DEMO_TARGET}")
    add_set(p)
    p.add_argument("-o", "--output", metavar="DIR", help="keep the netlist here (default: a temporary directory)")
    return p


def run(args: argparse.Namespace) -> int:
    from .. import compile as xb_compile
    from .. import load_netlist, verify
    from ..demo import INPUT_SHAPE, make_model
    from ..target import load_target

    target = load_target(args.target, parse_overrides(args.overrides))
    model = make_model(seed=0)
    stdout = console()
    with status_spinner(f"compiling the demo model for {target.name}..."), xb_warnings() as found:
        cm = xb_compile(model, random_inputs([INPUT_SHAPE], 0), target)
    with contextlib.ExitStack() as stack:
        if args.output is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xbc-demo-"))) / "netlist"
        else:
            folder = Path(args.output)
        save_atomically(cm, folder)
        with status_spinner("verifying with the emulator..."):
            netlist = load_netlist(folder)  # the full path: saved files, read back and checked
            report = verify(netlist, model, mode="ideal", seed=0)
    say(stdout, f"demo: xbcompiler.demo.DemoNet, input {list(INPUT_SHAPE)}, target {target.name}")
    print_summary(stdout, netlist, merge_warnings(found, cm.warnings))
    if args.output is not None:
        say(stdout, f"wrote {folder / 'netlist.json'} and {folder / 'weights.npz'}")
    if not report.ok:
        print_verify(stdout, report)
    print_verdict(stdout, report)
    return EXIT_OK if report.ok else EXIT_MISMATCH
