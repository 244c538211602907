"""Example command lines of every ``xbc`` command, shown at the end of ``xbc COMMAND --help``.

:func:`~.args.command_parser` looks a command up in :data:`EXAMPLES` by name, so a new command gets its
examples by adding an entry here. ``tests/test_help.py`` parses every line with the real parser, so an
example cannot outlive a renamed flag. The lines share their names: ``out`` is the float netlist that the
first ``compile`` example writes, ``out-int`` the quantised one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One command line and what it does, in one line."""

    line: str
    comment: str


RESNET = "examples/models.py:resnet20"
DIGITS = "tests/models.py:digits_cnn"
POLARIZED = "--set encoding.signed=polarized --set crossbar.fragment_rows=8 --set encoding.flip_columns=false"

#: The examples per command name (``sweep-report`` included), in the order ``--help`` prints them.
EXAMPLES: dict[str, tuple[Example, ...]] = {
    "compile": (
        Example(f"xbc compile {RESNET} --input-shape 1,3,32,32 --target isaac-like -o out",
                "compile ResNet-20 for the built-in isaac-like target into out/ (batch-first input shape)"),
        Example(f"xbc compile {RESNET} --target tiny --coverage",
                "only show where every node runs (crossbars or host); nothing is compiled or written"),
        Example(f"xbc compile {RESNET} --target isaac-like --calibrate-random 64 -o out-int",
                "quantise with power-of-two scales (integer and device modes need a quantised netlist)"),
        Example(f"xbc compile {RESNET} --target prime-like --set crossbar.rows=128 --pipeline fully-folded "
                "-o out-folded",
                "override a target key and choose another mapping (xbc passes lists the pipelines)"),
    ),
    "verify": (
        Example(f"xbc verify out --model {RESNET}",
                "compare every crossbar layer with the model it was compiled from, on random inputs"),
        Example(f"xbc verify out-int --model {RESNET} --batch 8 --json",
                "a quantised netlist is checked bit-exactly (integer mode); the report as JSON"),
    ),
    "emulate": (
        Example("xbc emulate out --random 4 -o y.npy", "run the netlist on 4 seeded random samples, save the output"),
        Example("xbc emulate out --input x.npy -o y.npy", "run it on your own batch (x.npy, batch first)"),
        Example("xbc emulate out-int --random 4 --mode device --seed 3 --set device.sa1_rate=0.01",
                "program a simulated chip with 1% stuck-at-1 cells and run on it (quantised netlists only)"),
    ),
    "targets": (
        Example("xbc targets", "list the built-in targets"),
        Example("xbc targets isaac-like", "every key of one target with its meaning, then derived quantities"),
        Example("xbc targets tiny --set crossbar.rows=32", "the same with a key overridden, as compile --set does"),
    ),
    "passes": (
        Example("xbc passes", "the registered passes, their options, the named pipelines and the instruments"),
    ),
    "demo": (
        Example("xbc demo", "train the digits CNN, compile, verify, emulate and program faulty chips (offline; "
                            "writes xbc-demo/)"),
        Example("xbc demo -o my-demo", "write into my-demo/ (then try: xbc report my-demo)"),
    ),
    "report": (
        Example("xbc report out", "crossbars, utilisation, ADC conversions, energy and latency per layer"),
        Example("xbc report out --plot", "also write occupancy.png and layers.png into out/"),
        Example("xbc report out --json", "the report as JSON"),
        Example("xbc report out --html", "one self-contained out/report.html to send (tables and plots inlined)"),
    ),
    "prune": (
        Example(f"xbc prune {DIGITS} --target isaac-like --train-epochs 20 -o pruned",
                "train the digits CNN, let the search choose each layer's ratio, write the pruned netlist"),
        Example(f"xbc prune {DIGITS} --target isaac-like --train-epochs 20 --sparsity 0.7 --epochs 5 -o pruned",
                "prune every layer to a fixed group sparsity instead"),
        Example(f"xbc prune {DIGITS} --target isaac-like --train-epochs 20 --sparsity 0.75 --method group-l1 "
                "--grain crossbar -o pruned",
                "block pruning: reweighted group-L1 on crossbar tiles, then hard projection"),
    ),
    "polarize": (
        Example(f"xbc polarize {DIGITS} --target isaac-like {POLARIZED} --train-epochs 20 -o polarized",
                "FORMS: every 8-row fragment of a column holds weights of one sign"),
    ),
    "inspect": (
        Example("xbc inspect out", "list the crossbars: id, layer, tile, chip"),
        Example("xbc inspect out --crossbar t0.x1", "the cells of one crossbar"),
        Example("xbc inspect out --crossbar t0.x1 --save t0.x1.npy", "and save them for numpy.load"),
    ),
    "sweep": (
        Example("xbc sweep examples/sweeps/fault_rates.toml -o runs/fault_rates --workers 2",
                "run a sweep's trials on a local Ray instance (run it again to resume)"),
        Example("xbc sweep examples/sweeps/fault_rates.toml -o runs/fault_rates --address auto",
                "run them on the Ray cluster this machine belongs to"),
    ),
    "sweep-report": (
        Example("xbc sweep-report runs/fault_rates --x device.sa1_rate --lines encoding.signed --log-x",
                "accuracy against the fault rate, one line per encoding, with 95% intervals"),
        Example("xbc sweep-report runs/fault_rates --no-plot --json", "the per-point summary as JSON, no plots"),
    ),
    "export": (
        Example("xbc export out --format neurosim -o network.csv",
                "NeuroSim's network table, and its Param.cpp values in network.param.txt"),
        Example("xbc export out --format crosssim", "CrossSim's parameters as JSON, into out/crosssim.json"),
        Example("xbc export out --format csv -o -", "one row per crossbar site, on stdout"),
    ),
}


def examples_epilog(command: str) -> str | None:
    """The ``examples:`` section of ``xbc COMMAND --help`` (comment line, then command), or None."""
    examples = EXAMPLES.get(command)
    if not examples:
        return None
    lines = ["examples:"]
    for example in examples:
        lines += [f"  # {example.comment}", f"  {example.line}"]
    return "\n".join(lines)


#: The epilog of ``xbc --help``: a first session, then where each command's examples are.
OVERVIEW = """\
examples:
  xbc demo                          # compile and verify the bundled CNN, offline, in seconds
  xbc targets                       # the built-in targets
  xbc compile examples/models.py:resnet20 --input-shape 1,3,32,32 --target isaac-like -o out
  xbc verify out --model examples/models.py:resnet20
  xbc report out                    # what the netlist costs

run `xbc COMMAND --help` for a command's options and examples; docs/cli.md has them all

exit status: 0 ok, 1 verification mismatch, 2 bad input, 70 internal error"""
