"""Device-mode emulation (issue 12): a programmed chip with faults, variation and read noise, against torch
and the peer, in one run.

ResNet-20 (random weights, seeded) at batch 64 on ``isaac-like`` with 8-bit weights and inputs,
compiled with the default pipeline and a calibration batch, programmed once with ``program_sigma =
0.1``, ``read_noise = 0.02``, ``sa0_rate = 0.0175``, ``sa1_rate = 0.0904``; then timed in paired rounds:

- ``xb.emulate(chip, x)`` (device mode: every read of every copy through the ADC);
- the model in torch;
- the peer, IBM's aihwkit-lightning (bench extra), with 8-bit converters, output and weight noise and
  128-row tiles, as ``bench_emulation.py`` builds it.

Programming (sampling every cell) is timed apart. Next to the device-mode time it prints the floor of any
exact per-read noise model on this CPU: the time to draw one standard normal per analog read the batch
performs (``torch.randn`` into a preallocated float32 buffer, reused in chunks of ``NOISE_CHUNK``
draws; median of 3), over plain torch's time. Goals: device / torch at most 10 (stretch 4); ours /
peer at most 0.5.

Run: ``python bench/bench_device.py [--repeat N] [--batch B] [--no-peer]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from bench_emulation import build_peer
from common import forward, paired_rounds, report, round_ratio

import xbcompiler as xb
from tests.models import MODELS
from xbcompiler.emulator import emulator_for
from xbcompiler.emulator.device_mode import DeviceLayer

DEVICE = {"device.program_sigma": 0.1, "device.read_noise": 0.02, "device.sa0_rate": 0.0175,
          "device.sa1_rate": 0.0904}
PRECISION = {"precision.weight_bits": 8, "precision.input_bits": 8}
#: Draws per ``torch.randn`` call of the noise floor (a float32 buffer of 128 MiB).
NOISE_CHUNK = 1 << 25
GOALS = {"over_torch": 10.0, "over_torch_stretch": 4.0, "over_peer": 0.5}


def noise_floor(reads: int, repeat: int = 3) -> float:
    """Median time to draw ``reads`` standard normals with ``torch.randn`` into a preallocated float32 buffer."""
    buffer = torch.empty(min(reads, NOISE_CHUNK), dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for lo in range(0, reads, buffer.numel()):
            n = min(buffer.numel(), reads - lo)
            torch.randn(n, generator=generator, dtype=torch.float32, out=buffer[:n])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--model", default="resnet20", choices=sorted(MODELS))
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    case = MODELS[args.model]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, *case.input_shape[1:], generator=gen)
    calibration = torch.randn(16, *case.input_shape[1:], generator=gen)
    model = case.factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        compiled = xb.compile(model, (x[:1],), "isaac-like", overrides=PRECISION, calibration=calibration)
    start = time.perf_counter()
    chip = xb.program(compiled, seed=0, overrides=DEVICE)
    program_s = time.perf_counter() - start
    sa0, sa1 = chip.fault_fractions()
    start = time.perf_counter()
    xb.emulate(chip, x[:1])  # builds the device kernels (effective levels of every copy)
    prepare_s = time.perf_counter() - start
    kernels = emulator_for(chip, "device", x.device).layers.values()
    reads = args.batch * sum(k.reads_per_image() for k in kernels if isinstance(k, DeviceLayer))
    peer, why = (None, "--no-peer") if args.no_peer else build_peer(model, x)
    print(f"peer: {why}" if peer is not None else f"peer: skipped, {why}")

    fns = {"ours": lambda: xb.emulate(chip, x), "torch": forward(model, x),
           **({"peer": forward(peer, x)} if peer is not None else {})}
    times = paired_rounds(fns, args.repeat)
    median = {name: statistics.median(t) for name, t in times.items()}
    noise_s = noise_floor(reads)
    values = {"over_torch": round_ratio(times, "ours", "torch"), "goal": GOALS["over_torch"],
              "stretch": GOALS["over_torch_stretch"], "device_s": median["ours"],
              "noise_floor_s": noise_s, "noise_floor_over_torch": noise_s / median["torch"], "reads": reads,
              "torch_s": median["torch"],
              "program_s": program_s, "prepare_s": prepare_s, "crossbars": compiled.summary["crossbars"],
              "sa0_measured": sa0, "sa1_measured": sa1, "rounds": args.repeat, "threads": torch.get_num_threads()}
    if peer is not None:
        values.update(over_peer=round_ratio(times, "ours", "peer"), peer_goal=GOALS["over_peer"],
                      peer_over_torch=round_ratio(times, "peer", "torch"), peer_s=median["peer"])
    report(f"device_{args.model}_b{args.batch}_isaac_like", **values)


if __name__ == "__main__":
    main()
