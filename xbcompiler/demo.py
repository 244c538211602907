"""What ``xbc demo`` does, as a library: train the digits CNN, compile, verify, emulate, program faulty chips.

:func:`run_demo` trains a small CNN on scikit-learn's 8x8 digits (bundled, nothing is downloaded),
compiles it with calibration for a target (``isaac-like`` by default), verifies the netlist in integer
mode (bit for bit against the integer reference), runs the test split through the emulator in integer
mode, and programs the model onto a chip with stuck-at faults once per signed-weight encoding
(docs/faults.md). It returns a :class:`DemoResult`; :meth:`DemoResult.save` writes the netlist, the
trained model, a few test images, the report (``demo.json``, ``costs.json``, ``report.html``) and the
plots into a folder. Seeded: the same call gives the same numbers.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .driver import CompiledModel
    from .report.costs import CostReport
    from .verify import VerifyReport

#: The target ``xbc demo`` compiles for unless ``--target`` names another.
DEMO_TARGET = "isaac-like"
#: One digits image, batch first.
INPUT_SHAPE = (1, 1, 8, 8)
#: Training epochs (SGD, cosine decay): ~99 % test accuracy in about a second.
EPOCHS = 10
#: Training images the quantiser calibrates on.
CALIBRATION_IMAGES = 256
#: Test images of the integer-mode verification (every layer's output integers compared).
VERIFY_IMAGES = 64
#: The encodings programmed onto a chip with stuck-at faults: one chip each, SA1 at ``FAULT_SA1_RATE`` and
#: SA0 at SA1 / 5.2 (the ratio of docs/faults.md), the fault map drawn from ``CHIP_SEED``.
FAULT_ENCODINGS = ("offset", "differential", "differential-zero-high")
FAULT_SA1_RATE = 0.01
SA0_PER_SA1 = 1 / 5.2
CHIP_SEED = 0

#: What :meth:`DemoResult.save` writes besides the netlist's plots; ``demo.json`` lists every file written.
NETLIST_FILES = ("netlist.json", "weights.npz")
MODEL_FILES = ("model.py", "model.pt")
INPUTS_FILE = "inputs.npy"  # the first INPUTS_SAVED test images: ``xbc verify --inputs``, ``xbc emulate --input``
INPUTS_SAVED = 8
REPORT_FILE = "demo.json"
COSTS_FILE = "costs.json"
HTML_FILE = "report.html"
FAULTS_PLOT = "faults.png"


class DigitsCNN(nn.Module):
    """Small CNN for 1x8x8 digits: two 3x3 convolutions (the second with BN), max pool, a 2-layer MLP."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def make_model(seed: int = 0) -> nn.Module:
    """The untrained demo network in eval mode, its weights drawn from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DigitsCNN().eval()


def load_trained(path: str | Path) -> nn.Module:
    """The demo network with the weights :meth:`DemoResult.save` wrote to ``model.pt``."""
    model = DigitsCNN()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


_MODEL_PY = '''"""The digits CNN that `xbc demo` trained: `xbc verify DIR --model DIR/model.py:model`."""

from pathlib import Path

from xbcompiler.demo import INPUT_SHAPE, load_trained  # noqa: F401 -- INPUT_SHAPE for `xbc compile`


def model():
    return load_trained(Path(__file__).with_name("model.pt"))
'''


@dataclass(frozen=True)
class FaultResult:
    """One encoding programmed onto a chip with stuck-at faults: test accuracy (%) without and with faults.

    ``overrides`` are the target keys changed for this encoding; ``fault_free`` is integer mode's
    accuracy, which a chip without faults equals bit for bit.
    """

    encoding: str
    overrides: dict[str, Any]
    fault_free: float
    accuracy: float  # SA1 at FAULT_SA1_RATE, SA0 = SA1 / 5.2, fault map seeded by CHIP_SEED

    @property
    def changes(self) -> str:
        """What this encoding's chip changes besides the encoding, in words ('' for nothing)."""
        parts = []
        if self.overrides.get("encoding.flip_columns") is False:
            parts.append("no column flipping")
        if "precision.adc_bits" in self.overrides:
            parts.append(f"{self.overrides['precision.adc_bits']}-bit ADC")
        return ", ".join(parts)


@dataclass(frozen=True)
class DemoResult:
    """Everything ``xbc demo`` prints and saves. Accuracies are top-1 on the test split, in percent."""

    target: str
    train_images: int
    test_images: int
    model: nn.Module  # trained, eval mode
    compiled: CompiledModel  # quantised
    verify: VerifyReport  # integer mode, on VERIFY_IMAGES test images
    float_accuracy: float
    emulated_accuracy: float  # integer mode
    costs: CostReport
    cycles: int  # crossbar read cycles of one image's latency: sum over layers of period x input cycles
    faults: tuple[FaultResult, ...]
    samples: torch.Tensor  # the first INPUTS_SAVED test images
    seconds: float

    @property
    def bit_exact(self) -> bool:
        """Integer mode: every layer's output integers, and the outputs, equal the integer reference's.

        What the demo verifies: how far quantisation moves the float model shows as the two accuracies."""
        v = self.verify
        return v.mode == "integer" and v.output_rel == 0 and all(c.ok and not c.mismatches for c in v.layers)

    def report(self) -> dict:
        """The numbers of the run, as ``demo.json`` holds them."""
        s, t = self.compiled.netlist.summary, self.costs.totals
        return {
            "model": "xbcompiler.demo.DigitsCNN", "data": "scikit-learn digits", "target": self.target,
            "train_images": self.train_images, "test_images": self.test_images, "epochs": EPOCHS,
            "float_accuracy": self.float_accuracy, "emulated_accuracy": self.emulated_accuracy,
            "verify": {"mode": self.verify.mode, "bit_exact": self.bit_exact,
                       "images": VERIFY_IMAGES, "max_rel": self.verify.max_rel,
                       "float_rel": self.verify.float_rel},
            "crossbars": s["crossbars"], "tiles": s["tiles"], "chips": s["chips"], "cycles": self.cycles,
            "energy_pj": t["energy_pj"], "latency_ns": t["latency_ns"], "period_ns": t["period_ns"],
            "faults": {"sa1_rate": FAULT_SA1_RATE, "sa0_rate": FAULT_SA1_RATE * SA0_PER_SA1, "chip_seed": CHIP_SEED,
                       "encodings": [{"encoding": f.encoding, "overrides": f.overrides,
                                      "fault_free_accuracy": f.fault_free, "accuracy": f.accuracy}
                                     for f in self.faults]},
            "seconds": round(self.seconds, 1),
        }

    def save(self, folder: str | Path) -> Path:
        """Write the netlist, ``model.py`` and ``model.pt``, ``inputs.npy``, ``demo.json``, ``costs.json``,
        ``report.html`` and the plots into ``folder`` (which must exist)."""
        from .report.compare import compare_netlist
        from .report.html_page import report_page
        from .report.plots import netlist_figures, png_bytes

        folder = Path(folder)
        netlist = self.compiled.netlist
        self.compiled.save(folder)
        torch.save(self.model.state_dict(), folder / "model.pt")
        (folder / "model.py").write_text(_MODEL_PY)
        np.save(folder / INPUTS_FILE, self.samples.numpy())
        (folder / COSTS_FILE).write_text(json.dumps(self.costs.to_dict(), indent=1, sort_keys=True) + "\n")
        pngs = {name: png_bytes(fig) for name, fig in netlist_figures(netlist).items()}
        pngs[FAULTS_PLOT] = png_bytes(faults_figure(self))
        for name, png in pngs.items():
            (folder / name).write_bytes(png)
        page = report_page(self.costs, compare_netlist(netlist), pngs, title=f"xbc demo: digits CNN on {self.target}")
        (folder / HTML_FILE).write_text(page, encoding="utf-8")
        files = [*NETLIST_FILES, *MODEL_FILES, INPUTS_FILE, REPORT_FILE, COSTS_FILE, HTML_FILE, *pngs]
        (folder / REPORT_FILE).write_text(json.dumps({**self.report(), "files": files}, indent=1) + "\n")
        return folder


def faults_figure(result: DemoResult):
    """Bars per encoding: test accuracy without faults and on the chip with stuck-at faults; a dashed line
    at the float model's accuracy."""
    from .report.plots import new_figure

    faults = result.faults
    fig = new_figure(figsize=(7.0, 4.5))
    ax = fig.subplots()
    x = np.arange(len(faults))
    sa0 = 100 * FAULT_SA1_RATE * SA0_PER_SA1
    bars = [("no faults", [f.fault_free for f in faults], "tab:blue", -0.2),
            (f"SA1 {100 * FAULT_SA1_RATE:g} %, SA0 {sa0:.2g} %", [f.accuracy for f in faults], "tab:red", 0.2)]
    for label, values, colour, shift in bars:
        drawn = ax.bar(x + shift, values, width=0.4, color=colour, label=label)
        ax.bar_label(drawn, fmt="%.1f", fontsize=9, padding=-15, color="white", fontweight="bold")
    ax.axhline(result.float_accuracy, color="0.4", linestyle="--", linewidth=1,
               label=f"float model {result.float_accuracy:.1f} %")
    ax.set_xticks(x, [f.encoding + (f"\n({f.changes})" if f.changes else "") for f in faults], fontsize=9)
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"digits CNN on {result.target}: one programmed chip per encoding (seed {CHIP_SEED})")
    fig.legend(loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def encoding_overrides(target, encoding: str) -> dict[str, Any]:
    """The target keys to change for ``encoding``: ``differential-zero-high`` cannot flip columns (XB404),
    so it gets back the ADC bit that flipping saved."""
    overrides: dict[str, Any] = {"encoding.signed": encoding}
    if encoding == "differential-zero-high" and target.encoding.flip_columns:
        overrides["encoding.flip_columns"] = False
        overrides["precision.adc_bits"] = min(16, target.precision.adc_bits + 1)
    return overrides


def run_demo(target, *, seed: int = 0, show_progress: bool = True) -> DemoResult:
    """Train, compile for ``target`` (a TargetSpec), verify, emulate and program faulty chips (seeded).

    ``show_progress`` draws a progress bar over the steps on stderr (:func:`xbcompiler.progress.progress`).
    torch runs on one intra-op thread meanwhile: the same weights on any core count, and device mode's
    loops of small tensor ops ran 4-15x slower on two threads of a busy two-core machine (OpenMP spin-waits).
    """
    import xbcompiler as xb

    from .datasets import accuracy, digits, train_classifier
    from .progress import progress
    from .report.costs import cost_report

    start = time.perf_counter()
    with _one_thread(), progress("xbc demo", 5 + 2 * len(FAULT_ENCODINGS), enabled=show_progress) as advance:
        def step(name: str) -> None:
            advance(0, info=name)

        step("loading the digits")
        data = digits(seed)
        advance()

        def on_test(predict) -> float:
            return accuracy(predict, data.x_test, data.y_test)

        def compile_for(overrides=None):
            return xb.compile(model, (data.x_train[:1],), target, calibration=data.x_train[:CALIBRATION_IMAGES],
                              seed=seed, overrides=overrides)

        step(f"training the digits CNN ({EPOCHS} epochs)")
        with torch.random.fork_rng(devices=[]):
            model = train_classifier(make_model(seed), data, epochs=EPOCHS, seed=seed)
        float_accuracy = on_test(model)
        advance()
        step(f"compiling for {target.name}")
        compiled = compile_for()
        advance()
        step("verifying in integer mode")
        report = xb.verify(compiled.netlist, model, data.x_test[:VERIFY_IMAGES], mode="integer")
        advance()
        step("emulating the test split")
        emulated = on_test(_emulated(compiled.netlist))
        advance()
        faults = []
        for encoding in FAULT_ENCODINGS:
            step(f"compiling for {encoding}")
            overrides = encoding_overrides(target, encoding)
            netlist = compiled.netlist if target.encoding.signed == encoding else compile_for(overrides).netlist
            fault_free = emulated if netlist is compiled.netlist else on_test(_emulated(netlist))
            advance()
            step(f"{encoding}: chip with SA1 {100 * FAULT_SA1_RATE:g} %")
            chip = xb.program(netlist, seed=CHIP_SEED, overrides={"device.sa1_rate": FAULT_SA1_RATE,
                                                                  "device.sa0_rate": FAULT_SA1_RATE * SA0_PER_SA1})
            faults.append(FaultResult(encoding, overrides, fault_free, on_test(_emulated(chip))))
            advance()
    costs = cost_report(compiled.netlist)
    cycles = sum(c.period for c in costs.layers) * target.input_cycles
    return DemoResult(target.name, len(data.x_train), len(data.x_test), model, compiled, report, float_accuracy,
                      emulated, costs, cycles, tuple(faults), data.x_test[:INPUTS_SAVED].clone(),
                      time.perf_counter() - start)


def _emulated(netlist):
    """A netlist (integer mode) or a programmed chip (device mode) as a callable on a batch."""
    from .emulator import emulate

    return lambda x: emulate(netlist, x)


@contextlib.contextmanager
def _one_thread():
    """torch on one intra-op thread inside the block, as many as before after it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
