"""Emulation-speed benchmarks (issue 10): emulator time / plain torch time, and against a peer simulator.

Every ratio is a median of per-round ratios, all timed in the same rounds (bench/common.paired_rounds):

- ideal mode, ResNet-20 at batch 64 (3x32x32) on ``isaac-like``, for each of ``fully-folded``,
  ``semi-folded`` and ``fully-unfolded``: goal at most 2.0 each;
- ideal mode, ResNet-50 at batch 8 (3x224x224), ``semi-folded`` pipeline: goal at most 3.0
  (only with ``--resnet50``; never with ``--quick``);
- integer mode, lossless: ResNet-20 at batch 64 compiled with calibration data, 8-bit weights and
  inputs and ``adc.mode = "lossless"`` (as bench_integer.py's case a), ``semi-folded`` pipeline: goal at most 3.0;
- the peer, IBM's aihwkit-lightning (optional, bench only; ``pip install "aihwkit-lightning==2.1.0"``):
  the same ResNet-20 converted with ``convert_to_analog`` to analog layers with 8-bit DAC and ADC
  (``forward.inp_res`` / ``out_res`` = 2^8 - 2, ``out_bound`` 10), output noise 0.04, per-channel
  weight noise 0.023, per-channel 2.5-sigma weight clipping, input ranges from the first batch
  (``input_range`` fast mode, ``init_from_data`` 1) and 128-row tiles (``mapping.max_input_size``),
  timed on the same batch of 64. aihwkit-lightning injects output and weight noise only in training
  mode, so its analog layers run in ``train()`` (BatchNorm stays in eval) under ``torch.no_grad()``.
  Each of our rows is followed by a peer row: peer / torch, and ours / peer (goal at most 0.25).
  Without the package the peer rows are skipped, with a line that says so.

``err`` is max |emulator - torch| / max |torch| on the timed batch (a check, not a goal).
Run: ``python bench/bench_emulation.py [--device cuda] [--repeat N] [--resnet50] [--quick]``;
``--quick`` is 3 rounds and no ResNet-50; ``--model NAME --batch N`` swap ResNet-20 for another zoo model
(``tests/models.py``) for a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import warnings

import torch
from common import forward, paired_rounds, report, round_ratio

import xbcompiler as xb
from tests.models import IMAGENET_MODELS, MODELS
from xbcompiler.emulator import emulator_for

TARGET = "isaac-like"
STRATEGIES = ("fully-folded", "semi-folded", "fully-unfolded")
INTEGER_LOSSLESS = {"precision.weight_bits": 8, "precision.input_bits": 8, "adc.mode": "lossless"}
PEER_REQUIREMENT = "aihwkit-lightning==2.1.0"
GOAL_IDEAL, GOAL_RESNET50, GOAL_INTEGER, GOAL_OURS_OVER_PEER = 2.0, 3.0, 3.0, 0.25


def build_peer(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.nn.Module | None, str]:
    """``model`` converted to aihwkit-lightning analog layers, noise on and input ranges set; or None and why."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line when triton is missing
            from aihwkit_lightning.nn.conversion import convert_to_analog
            from aihwkit_lightning.simulator.configs import (
                TorchInferenceRPUConfig,
                WeightClipType,
                WeightNoiseInjectionType,
            )
    except ImportError as exc:
        return None, f"aihwkit-lightning is not installed ({exc}); pip install \"{PEER_REQUIREMENT}\""
    rpu = TorchInferenceRPUConfig()
    rpu.forward.inp_res = 2**8 - 2  # 8-bit DAC
    rpu.forward.out_res = 2**8 - 2  # 8-bit ADC ...
    rpu.forward.out_bound = 10.0  # ... over 10x the input range times the largest weight
    rpu.forward.out_noise = 0.04
    rpu.modifier.noise_type = WeightNoiseInjectionType.ADD_NORMAL_PER_CHANNEL
    rpu.modifier.std_dev = 0.023
    rpu.clip.type = WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL
    rpu.clip.sigma = 2.5
    rpu.mapping.max_input_size = 128  # 128-row tiles
    rpu.pre_post.input_range.enable = True  # needed by the DAC/ADC quantisation
    rpu.pre_post.input_range.fast_mode = True  # range = max |input| of the first batch (x_min / x_max)
    rpu.pre_post.input_range.init_from_data = 1
    rpu.pre_post.input_range.learn_input_range = False
    try:
        peer = convert_to_analog(model, rpu)
    except (ValueError, AssertionError) as exc:  # e.g. grouped convolutions are not supported
        return None, f"aihwkit-lightning cannot convert this model: {exc}"
    peer.eval()
    for layer in peer.analog_layers():
        layer.train()  # the noise is drawn only in training mode
    with torch.no_grad():
        peer(x)  # sets the input ranges from this batch
    return peer, "aihwkit-lightning " + _version("aihwkit-lightning")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def rel_err(out, ref) -> float | None:
    if not (isinstance(out, torch.Tensor) and isinstance(ref, torch.Tensor)):
        return None
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


def bench_case(label: str, model: torch.nn.Module, x: torch.Tensor, pipeline: str, mode: str, goal: float,
               device: str, repeat: int, peer: torch.nn.Module | None = None, **compile_kw) -> None:
    """Compile ``model`` for ``pipeline``, then time emulator / torch (/ peer) on ``x`` in paired rounds and report."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", xb.XBWarning)
        compiled = xb.compile(model.cpu(), (x[:1].cpu(),), TARGET, pipeline=pipeline, **compile_kw)
    model, x = model.to(device), x.to(device)
    emulator = emulator_for(compiled.netlist, mode, torch.device(device))
    with torch.no_grad():
        err = rel_err(emulator(x), model(x))

    fns = {"ours": lambda: emulator(x), "torch": forward(model, x),
           **({"peer": forward(peer, x)} if peer is not None else {})}
    times = paired_rounds(fns, repeat, torch.cuda.synchronize if device == "cuda" else None)
    median = {name: statistics.median(t) for name, t in times.items()}
    name = f"{label}_b{x.shape[0]}_{pipeline.replace('-', '_')}_{device}"
    report(f"emulation_{mode}_over_torch_{name}", ratio=round_ratio(times, "ours", "torch"), goal=goal,
           emulator_s=median["ours"], torch_s=median["torch"], err=err, pipeline=pipeline, mode=mode,
           crossbars=compiled.summary["crossbars"], rounds=repeat, threads=torch.get_num_threads())
    if peer is not None:
        report(f"peer_{mode}_{name}", ours_over_peer=round_ratio(times, "ours", "peer"), goal=GOAL_OURS_OVER_PEER,
               peer_over_torch=round_ratio(times, "peer", "torch"), peer_s=median["peer"], emulator_s=median["ours"],
               torch_s=median["torch"], rounds=repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=None, help="timed rounds (default 7; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, no ResNet-50")
    parser.add_argument("--resnet50", action="store_true", help="also ResNet-50 at batch 8 (semi-folded pipeline)")
    parser.add_argument("--model", default="resnet20", choices=sorted(MODELS), help="the small model (default resnet20)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--no-peer", action="store_true", help="skip aihwkit-lightning even if installed")
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 7)
    device = args.device

    case = MODELS[args.model]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, *case.input_shape[1:], generator=gen)
    calibration = torch.randn(16, *case.input_shape[1:], generator=gen)
    model = case.factory()
    peer, why = (None, "--no-peer") if args.no_peer else build_peer(model, x)
    print(f"peer: {why}" if peer is not None else f"peer: skipped, {why}")
    if peer is not None:
        peer = peer.to(device)
    xd = x.to(device)

    for strategy in STRATEGIES:
        bench_case(args.model, model, xd, strategy, "ideal", GOAL_IDEAL, device, repeat, peer)
    bench_case(args.model, model, xd, "semi-folded", "integer", GOAL_INTEGER, device, repeat, peer,
               overrides=INTEGER_LOSSLESS, calibration=calibration)
    if args.resnet50 and not args.quick:
        big = IMAGENET_MODELS["resnet50_imagenet"]
        xb50 = torch.randn(8, *big.input_shape[1:], generator=gen).to(device)
        bench_case("resnet50", big.factory(), xb50, "semi-folded", "ideal", GOAL_RESNET50, device, max(3, repeat // 2))


if __name__ == "__main__":
    main()
