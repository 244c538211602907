"""The integer reference: the quantised network in plain integer torch ops, and its use by ``verify``.

The reference is built from the *float model* and the netlist's quantisation decisions (exponents,
bits, and, where reads lose bits, the row blocks, ADC steps, flip flags and compensation): weights
and biases are re-quantised from the model, not read from the netlist's cells. A layer whose ADCs
lose nothing is ``Xq @ Wq + bias`` followed by the rounding shift (unfold + matmul in float64); a
lossy layer runs the literal per-read loop of SPEC 0.4 (:func:`xbcompiler.quant.slicing.block_mvm`)
on the unfolded inputs. Neither path shares code with the emulator's integer kernel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from .diagnostics import CompileError
from .emulator import as_input_tuple, as_netlist, emulator_for
from .emulator.verify import LayerCheck, VerifyReport, _errors, _flatten
from .frontend.trace import trace
from .ir.matrix import Im2colLayer
from .pipeline import PassContext, PassManager, parse_pipeline
from .quant.layer import QuantIm2colLayer
from .quant.netlist import rows_of
from .quant.scheme import LayerQuant, quantize, weight_range
from .quant.slicing import Encoding, block_mvm, weight_levels


def float_matrices(model: torch.nn.Module, inputs: tuple) -> dict:
    """The BN-folded im2col matrices of ``model`` by layer name (what the compiler quantises)."""
    gm = trace(model, inputs)
    ctx = PassContext(example_inputs=inputs, properties={"traced", "shapes"})
    gm = PassManager(parse_pipeline("fold-batchnorm,lower-im2col{check=false}")).run(gm, ctx)
    return {node.name: gm.get_submodule(node.target).matrix for node in gm.graph.nodes
            if node.op == "call_module" and isinstance(gm.get_submodule(node.target), Im2colLayer)}


class ReferenceLayer:
    """One layer of the integer reference, from its float matrix and the netlist's ``quant`` entry."""

    def __init__(self, matrix, layer: dict, arrays: dict[str, np.ndarray]):
        q = layer["quant"]
        n = matrix.cols
        quant = LayerQuant(q["input_exponent"], q["input_bits"], q["input_signed"], q["weight_bits"],
                           tuple(q["weight_exponents"]), q["group_cols"], q["output_exponent"], q["output_bits"])
        col_e = quant.column_weight_exponents(n).astype(np.float64)
        lo, hi = weight_range(quant.weight_bits)
        w = matrix.weight.astype(np.float64)
        wq = np.clip(np.round(w / np.exp2(col_e).reshape(w.shape[0], 1, -1)), lo, hi)
        bias = np.zeros(n, dtype=np.int64) if matrix.bias is None else \
            np.round(matrix.bias.astype(np.float64) / np.exp2(quant.input_exponent + col_e)).astype(np.int64)
        get = lambda name: arrays[layer["arrays"][name]["key"]] if name in layer["arrays"] else None
        comp = get("adc_compensation")
        if comp is not None:
            bias = bias + comp.astype(np.int64)
        self.quant, self.q, self.name = quant, q, layer["name"]
        self.layer = QuantIm2colLayer(dataclasses.replace(matrix, weight=wq.astype(np.float32), bias=None,
                                                          quant=dataclasses.replace(quant, bias=bias)))
        steps, bits, flips = get("adc_step"), get("adc_bits"), get("flips")
        self.enc = Encoding(**q["encoding"])
        worst = self._worst_reads(wq, q, flips)
        self.lossless = bool((steps == 0).all() and (worst <= (1 << bits.astype(np.int64)) - 1).all())
        self.blocks = [(b["group"], rows_of(b["rows"]), steps[i], bits[i], None if flips is None else flips[i])
                       for i, b in enumerate(q["row_blocks"])]

    def _worst_reads(self, wq: np.ndarray, q: dict, flips) -> np.ndarray:
        """Largest possible read of every (row block, column): ``max_digit * sum of stored levels``."""
        out = []
        for i, b in enumerate(q["row_blocks"]):
            levels = weight_levels(torch.from_numpy(wq[b["group"]][rows_of(b["rows"])]), self.enc)
            if flips is not None:
                levels = torch.where(torch.from_numpy(flips[i] > 0)[:, None, :], self.enc.max_level - levels, levels)
            out.append((levels.sum(1).amax(0) * self.enc.max_digit).numpy())
        return np.stack(out) if out else np.zeros((0, wq.shape[-1]))

    def __call__(self, xq: torch.Tensor) -> torch.Tensor:
        """Output integers (float64) of input integers (float64), layer-shaped."""
        z = self.layer.accumulate(xq) if self.lossless else self._per_read(xq)
        t = self.q["truncate_bits"]
        if t:
            z = torch.floor(z * 2.0 ** -t) * 2.0 ** t
        return self.layer.requantize(z)

    def _per_read(self, xq: torch.Tensor) -> torch.Tensor:
        """The accumulator by the literal per-read loop, row block by row block (layer-shaped float64)."""
        m = self.layer.matrix
        cols = self._unfold(xq)  # [M, groups, K]
        acc = torch.zeros((cols.shape[0], m.cols), dtype=torch.int64)
        wq = self.layer.wq.to(torch.int64)  # [groups, K, n_g]
        n_g = wq.shape[-1]
        for g, rows, steps, bits, flips in self.blocks:
            acc[:, g * n_g:(g + 1) * n_g] += block_mvm(
                cols[:, g, rows], wq[g][rows], self.enc, flips=None if flips is None else torch.from_numpy(flips > 0),
                step_bits=torch.from_numpy(steps.astype(np.int64)), bits=torch.from_numpy(bits.astype(np.int64)),
                rounding=self.q["adc"]["rounding"])
        z = acc.double() + self.layer.constant
        return self._fold(z, xq, m.geometry)

    def _unfold(self, xq: torch.Tensor) -> torch.Tensor:
        """Input integers as im2col rows: ``[M, groups, K]`` int64 (M = batch x output pixels)."""
        geo = self.layer.matrix.geometry
        if geo.kind == "linear":
            return xq.reshape(-1, 1, xq.shape[-1]).to(torch.int64)
        x4 = xq.unsqueeze(2) if geo.kind == "conv1d" else xq
        cols = F.unfold(x4, geo.kernel, dilation=geo.dilation, padding=geo.padding, stride=geo.stride)
        b, _, pixels = cols.shape
        cols = cols.view(b, geo.groups, geo.rows_per_group, pixels).permute(0, 3, 1, 2)
        return cols.reshape(b * pixels, geo.groups, geo.rows_per_group).to(torch.int64)

    def _fold(self, y: torch.Tensor, xq: torch.Tensor, geo) -> torch.Tensor:
        """``[M, N]`` back to the layer's output shape."""
        out_shape = self.layer.matrix.output_shape
        if geo.kind == "linear":
            return y.reshape(*xq.shape[:-1], -1)
        return y.reshape(xq.shape[0], -1, y.shape[-1]).transpose(1, 2).reshape(xq.shape[0], *out_shape)


def build_reference(netlist, model: torch.nn.Module, inputs: tuple) -> dict[str, ReferenceLayer]:
    """Reference layers for every quantised layer of ``netlist``."""
    netlist = as_netlist(netlist)
    matrices = float_matrices(model, tuple(t[:1].cpu() for t in inputs))
    missing = [layer["name"] for layer in netlist.layers if layer["name"] not in matrices]
    if missing:
        raise CompileError("XB506", f"the model has no crossbar layer(s) {', '.join(missing[:5])} of the netlist",
                           hint="verify against the model the netlist was compiled from")
    return {layer["name"]: ReferenceLayer(matrices[layer["name"]], layer, netlist.arrays)
            for layer in netlist.layers if "quant" in layer}


def verify_integer(netlist, model, inputs, tolerance: float) -> VerifyReport:
    """``verify`` in integer mode: every layer's output integers against the reference's, same input."""
    netlist = as_netlist(netlist)
    inputs = as_input_tuple(netlist, inputs)
    if not any("quant" in layer for layer in netlist.layers):
        raise CompileError("XB520", "integer mode needs a quantised netlist (compiled with calibration data)",
                           hint="xbcompiler.compile(..., calibration=...) or xbc compile --calibrate FILE.npy")
    refs = build_reference(netlist, model, inputs)
    emulator = emulator_for(netlist, "integer", inputs[0].device)
    got, env = emulator.run(inputs, record=True)
    with torch.no_grad():
        expected = _Recorder(trace(model, inputs)).run_all(inputs)
    report = VerifyReport("integer", tolerance)
    xbar_input = {n["target"]: n["args"][0]["ref"] for n in netlist.doc["nodes"] if n["op"] == "xbar"}
    for layer in netlist.layers:
        ref = refs[layer["name"]]
        x = env[xbar_input[layer["name"]]].detach().double().cpu()
        want = ref(quantize(x, ref.quant.input_exponent, ref.quant.input_bits, ref.quant.input_signed))
        have = env[layer["name"]].detach().double().cpu() * 2.0 ** -ref.quant.output_exponent
        bad = want != have
        scale = 2.0 ** ref.quant.output_exponent
        max_abs, rel = _errors(want * scale, have * scale)
        where = _first_bad_crossbar(netlist, layer, bad) if bad.any() else None
        report.layers.append(LayerCheck(layer["name"], layer["reference"], max_abs, rel, not bool(bad.any()), where,
                                        mismatches=int(bad.sum())))
    chain = _reference_chain(netlist, refs, inputs)
    pairs = list(zip(_flatten(chain), _flatten(got)))
    errs = [_errors(a, b) for a, b in pairs] or [(0.0, 0.0)]
    report.output_max_abs, report.output_rel = max(e[0] for e in errs), max(e[1] for e in errs)
    float_errs = [_errors(a, b) for a, b in zip(_flatten(expected.output), _flatten(got))] or [(0.0, 0.0)]
    report.float_rel = max(e[1] for e in float_errs)
    return report


def _first_bad_crossbar(netlist, layer: dict, bad: torch.Tensor) -> str | None:
    """The id of a crossbar holding the first mismatching output channel."""
    dim = -1 if layer["geometry"]["kind"] == "linear" else 1
    channel = int(bad.movedim(dim, 0).reshape(bad.shape[dim], -1).any(1).nonzero()[0])
    first = layer["first_crossbar"]
    n_g = layer["matrix_cols"] // layer["groups"]
    group, local = divmod(channel, n_g)
    for x in netlist.doc["crossbars"][first:first + layer["crossbars"]]:
        for s in x.get("slices", []):
            if s["group"] == group and s["cols"][0] <= local < s["cols"][1]:
                return x["id"]
        for b in x.get("blocks", []):
            if b["group"] == group and b["out_channels"][0] <= local < b["out_channels"][1]:
                return x["id"]
    return None


class _Recorder(fx.Interpreter):
    def run_all(self, inputs):
        self.values = {}
        self.output = self.run(*inputs)
        return self

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def _reference_chain(netlist, refs: dict[str, ReferenceLayer], inputs: tuple):
    """The whole network with every crossbar layer replaced by its reference (host ops as in the netlist)."""
    from .emulator.runtime import Emulator

    chain = Emulator.__new__(Emulator)
    chain.__dict__.update(emulator_for(netlist, "integer", inputs[0].device).__dict__)
    chain.layers = {name: _as_model_units(ref) for name, ref in refs.items()}
    chain.steps = [chain._step(node) for node in netlist.doc["nodes"]]
    return chain.run(inputs)


def _as_model_units(ref: ReferenceLayer):
    def run(x: torch.Tensor) -> torch.Tensor:
        q = ref.quant
        y = ref(quantize(x.detach().double().cpu(), q.input_exponent, q.input_bits, q.input_signed))
        return (y * 2.0 ** q.output_exponent).to(x.dtype).to(x.device)
    return run
