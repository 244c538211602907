"""FORMS polarization on the digits CNN: accuracy and ADC bits against ``differential`` at equal weight precision.

Trains the digits CNN on scikit-learn's digits, then compiles it quantised on ``isaac-like`` cells
(128x128 arrays, 2-bit cells, 1-bit DAC, 8-bit weights and inputs, no column flipping):

- *differential*: the trained model as is, ``encoding.signed = "differential"``;
- *polarized F*: a copy polarized by ``xb.polarize`` (ADMM, hard projection, masked fine-tuning) for
  fragments of ``F`` rows, ``encoding.signed = "polarized"``, ``crossbar.fragment_rows = F``.

Each netlist runs the test split in integer mode three times: with lossless ADCs (``adc.mode =
"lossless"``, every read gets the bits its largest sum needs) and with fixed 5-bit and 4-bit ADCs
(FORMS's converter is 4 bits), which drop LSBs wherever a read needs more (nearest-even rounding,
the calibrated bias compensation). The table gives float and integer accuracies, the lossless ADC
bits of the largest read, the physical columns of one logical weight column (``m_c``), crossbars,
ADC conversions per image and, for polarized netlists, the fraction of fragment-cycles whose input
digits are all zero (skipped by FORMS) on the test images.

Writes ``polarize.md`` into ``--out``; prints progress on stderr and, as the last stdout line, one
JSON object (``float_accuracy``, ``rows``, ``adc_bits_saved``).

Run: ``python examples/polarize_digits.py --out DIR`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xbcompiler as xb
from tests.models import digits_cnn
from xbcompiler.datasets import Split, accuracy, digits, train_classifier
from xbcompiler.prune.flow import holdout
from xbcompiler.prune.polarize import PolarizeSettings
from xbcompiler.report.costs import cost_report

BASE = {"precision.weight_bits": 8, "precision.input_bits": 8, "encoding.flip_columns": False}
ADCS = {"lossless": {"adc.mode": "lossless"}, "5-bit": {"adc.mode": "fixed", "precision.adc_bits": 5},
        "4-bit": {"adc.mode": "fixed", "precision.adc_bits": 4}}
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def measure(model, data, overrides: dict, name: str, fragment_rows: int) -> dict:
    """Compile ``model`` for each ADC setting; integer accuracy, ADC bits, columns, crossbars, zero-skip."""
    row = {"encoding": name, "fragment_rows": fragment_rows, "float_accuracy": round(accuracy(model, data.x_test,
                                                                                              data.y_test), 3)}
    for adc, extra in ADCS.items():
        target = xb.load_target("isaac-like", {**BASE, **overrides, **extra})
        compiled = xb.compile(model, data.x_train[:1], target, "semi-folded", calibration=data.x_train[:256])
        net = compiled.netlist
        row[f"integer_accuracy_{adc}"] = round(accuracy(compiled, data.x_test, data.y_test), 3)
        if adc == "lossless":
            report = cost_report(net, data.x_test[:128])
            row.update(adc_bits=max(lc.adc_lossless_bits for lc in report.layers), m_c=target.m_c,
                       crossbars=report.totals["crossbars"], adc_conversions=report.totals["adc_conversions"])
            skipped = report.totals.get("zero_skipped_cycles")
            row["zero_skipped"] = None if skipped is None else round(skipped / report.totals["fragment_cycles"], 4)
            check = xb.verify(net, model, data.x_test[:8])
            row["verify_ok"] = check.ok
    log(f"{name}: {row}")
    return row


def run(args) -> dict:
    torch.manual_seed(args.seed)
    data = digits(args.seed)
    model = digits_cnn(seed=args.seed)
    train, val = holdout(data.x_train, data.y_train, 0.2, args.seed)
    train_classifier(model, Split(*train, data.x_test, data.y_test), epochs=args.epochs, seed=args.seed)
    float_accuracy = accuracy(model, data.x_test, data.y_test)
    log(f"trained: float test accuracy {float_accuracy:.2f} %")
    rows = [measure(model, data, {"encoding.signed": "differential"}, "differential", 0)]
    reports = {}
    for f in args.fragments:
        polar = copy.deepcopy(model)
        target = xb.load_target("isaac-like", {**BASE, "encoding.signed": "polarized", "crossbar.fragment_rows": f})
        settings = PolarizeSettings(admm_epochs=args.admm_epochs, finetune_epochs=args.finetune_epochs, seed=args.seed,
                                    progress=False)
        _, report = xb.polarize(polar, target, train, val=val, settings=settings)
        reports[f] = report
        log(f"polarized F={f}: mixed fragments {report.violations_before} -> {report.violations_after}, "
            f"validation accuracy {report.accuracy}")
        rows.append(measure(polar, data, {"encoding.signed": "polarized", "crossbar.fragment_rows": f},
                            f"polarized F={f}", f))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "polarize.md", rows, reports, float_accuracy)
    saved = {str(r["fragment_rows"]): rows[0]["adc_bits"] - r["adc_bits"] for r in rows[1:]}
    return {"float_accuracy": round(float_accuracy, 3), "rows": rows, "adc_bits_saved": saved,
            "seconds": round(time.perf_counter() - START, 1)}


def write_table(path: Path, rows: list[dict], reports: dict, float_accuracy: float) -> None:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f} %"

    title = (f"Digits CNN, float test accuracy {float_accuracy:.2f} % (trained model, unpolarized); isaac-like "
             "cells, 8-bit weights and inputs, 128x128 arrays, no column flipping.")
    header = ("| encoding | float acc. | integer acc., lossless ADC | 5-bit ADC | 4-bit ADC | lossless ADC bits | "
              "m_c | crossbars | ADC conversions / image | zero-skipped fragment-cycles |")
    lines = [title, "", header, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['encoding']} | {r['float_accuracy']:.2f} % | {r['integer_accuracy_lossless']:.2f} % | "
              f"{r['integer_accuracy_5-bit']:.2f} % | {r['integer_accuracy_4-bit']:.2f} % | {r['adc_bits']} | "
              f"{r['m_c']} | {r['crossbars']} | "
              f"{r['adc_conversions']:,} | {pct(r['zero_skipped'])} |" for r in rows]
    header = ("| fragment rows | fragments | mixed before | mixed after ADMM | validation acc. (baseline / ADMM / "
              "projected / fine-tuned) |")
    lines += ["", header, "| --- | --- | --- | --- | --- |"]
    for f, rep in reports.items():
        admm = sum(r.violations_admm for r in rep.layers)
        acc = " / ".join(f"{rep.accuracy[k]:.2f}" for k in ("baseline", "admm", "projected", "final"))
        lines.append(f"| {f} | {rep.fragments} | {rep.violations_before} | {admm} | {acc} % |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for polarize.md")
    p.add_argument("--fragments", type=int, nargs="+", default=[8, 4], help="fragment sizes (rows)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--admm-epochs", type=int, default=10)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: one fragment size, short training")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.fragments, args.epochs, args.admm_epochs, args.finetune_epochs = [8], 3, 2, 1
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
