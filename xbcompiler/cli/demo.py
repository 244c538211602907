"""``xbc demo``: train the digits CNN, compile, verify, emulate and program faulty chips (offline).

The work is :func:`xbcompiler.demo.run_demo`; this module checks the output folder, prints the result and
writes the folder whole (a previous demo's folder is replaced, any other non-empty folder refused).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..demo import DEMO_TARGET, REPORT_FILE
from ..diagnostics import CompileError, Location
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
    xb_warnings,
)
from .files import save_atomically

#: Where the demo writes without ``-o``.
DEFAULT_OUTPUT = "xbc-demo"


def add(sub, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = command_parser(sub, common, "demo", run,
                       "train the digits CNN, compile it, verify and emulate it, and program faulty chips (offline)")
    p.add_argument("--target", default=DEMO_TARGET, metavar="NAME|PATH", help=f"default {DEMO_TARGET}")
    add_set(p)
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="DIR",
                   help=f"write the netlist, report and plots here (default {DEFAULT_OUTPUT}/); a previous demo's "
                        "folder is replaced, another non-empty folder refused")
    return p


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..target import load_target

    target = load_target(args.target, parse_overrides(args.overrides))
    out = Path(args.output)
    check_output(out)
    with xb_warnings() as found:
        result = run_demo(target)
    write_output(result, out)
    print_result(result, merge_warnings(found, result.compiled.warnings), out)
    return EXIT_OK if result.bit_exact else EXIT_MISMATCH


def check_output(out: Path) -> None:
    """XB004 unless ``out`` is missing, an empty folder or a previous demo's (every entry listed in its
    ``demo.json``): the demo never deletes anything else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CompileError("XB004", f"-o {out} exists and is not a directory", location=Location(file=str(out)))
    try:
        entries = {p.name for p in out.iterdir()}
    except OSError as exc:
        raise CompileError("XB004", f"cannot read -o {out}: {exc.strerror or exc}",
                           location=Location(file=str(out))) from None
    if entries and not entries <= set(_demo_files(out)):
        raise CompileError("XB004", f"-o {out} is a non-empty folder that no earlier xbc demo wrote",
                           hint="name a new or empty folder, or a previous demo's (it is replaced)",
                           location=Location(file=str(out)))


def _demo_files(out: Path) -> list[str]:
    """The files ``out/demo.json`` says the demo wrote; [] when there is no readable one."""
    try:
        files = json.loads((out / REPORT_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [REPORT_FILE, *files] if isinstance(files, list) and all(isinstance(f, str) for f in files) else []


def write_output(result, out: Path) -> None:
    """Write the demo's folder whole: built next to ``out``, then renamed into place (an existing ``out``,
    checked by :func:`check_output`, is moved aside first and removed after)."""
    if not out.exists():
        save_atomically(result, out)
        return
    try:
        holder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise CompileError("XB004", f"cannot write next to {out}: {exc.strerror or exc}",
                           location=Location(file=str(out))) from None
    try:
        staged, old = save_atomically(result, holder / out.name), holder / "old"
        os.rename(out, old)
        try:
            os.rename(staged, out)
        except BaseException:
            os.rename(old, out)
            raise
    except OSError as exc:
        raise CompileError("XB004", f"cannot replace {out}: {exc.strerror or exc}",
                           location=Location(file=str(out))) from None
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def print_result(result, warning_lines: list[str], out: Path) -> None:
    from ..demo import CHIP_SEED, EPOCHS, FAULT_SA1_RATE, SA0_PER_SA1, VERIFY_IMAGES
    from ..report.table import plural, si

    stdout = console()
    netlist, verify = result.compiled.netlist, result.verify
    say(stdout, f"demo: digits CNN trained on {result.train_images} scikit-learn digits ({EPOCHS} epochs), "
                f"compiled with calibration for {result.target}")
    print_summary(stdout, netlist, warning_lines)
    if result.bit_exact:
        say(stdout, f"verified in integer mode on {VERIFY_IMAGES} test images: bit-exact against the integer "
                    "reference, every layer", "green")
    else:
        print_verify(stdout, verify)
        print_verdict(stdout, verify)
    say(stdout, f"test accuracy ({result.test_images} images): float {result.float_accuracy:.2f} %, "
                f"emulated (integer mode) {result.emulated_accuracy:.2f} %", "bold")
    s, t = netlist.summary, result.costs.totals
    say(stdout, f"hardware: {plural(s['crossbars'], 'crossbar')}, {plural(s['tiles'], 'tile')}, "
                f"{plural(s['chips'], 'chip')}; per image {result.cycles} cycles, "
                f"energy {si(t['energy_pj'] * 1e-12, 'J')}, latency {si(t['latency_ns'] * 1e-9, 's')}")
    if result.faults:
        say(stdout, f"on a programmed chip with stuck-at faults (SA1 {100 * FAULT_SA1_RATE:g} %, "
                    f"SA0 {100 * FAULT_SA1_RATE * SA0_PER_SA1:.2g} %, seed {CHIP_SEED}), per encoding:")
        width = max(len(f.encoding) for f in result.faults)
        for f in result.faults:
            note = f"; {f.changes}" if f.changes else ""
            say(stdout, f"  {f.encoding:<{width}}  {f.accuracy:6.2f} %  ({f.fault_free:.2f} % without faults{note})")
    say(stdout, "files: " + " ".join(sorted(p.name for p in out.iterdir())))
    say(stdout, f"output: {out}{os.sep}")
