"""``verify`` in integer mode: every layer's output integers against the integer reference, same input."""

from __future__ import annotations

import torch

from ..diagnostics import CompileError
from ..emulator import Emulator, as_input_tuple, as_netlist, emulator_for
from ..frontend.capture import capture, recorded_frontend
from ..ir.matrix import Im2colLayer
from ..pipeline import PassContext, PassManager, parse_pipeline
from ..reference import ReferenceLayer, quantize
from . import LayerCheck, Recorder, VerifyReport, _errors, bad_channels, first_site, output_tensors


def float_matrices(model: torch.nn.Module, inputs: tuple, frontend: str = "fx") -> dict:
    """The BN-folded im2col matrices of ``model`` by layer name (what the compiler quantises)."""
    gm = capture(model, inputs, frontend).gm
    ctx = PassContext(example_inputs=inputs, properties={"traced", "shapes"})
    gm = PassManager(parse_pipeline("fold-batchnorm,lower-im2col{check=false}")).run(gm, ctx)
    return {node.name: gm.get_submodule(node.target).matrix for node in gm.graph.nodes
            if node.op == "call_module" and isinstance(gm.get_submodule(node.target), Im2colLayer)}


def build_reference(netlist, model: torch.nn.Module, inputs: tuple) -> dict[str, ReferenceLayer]:
    """Reference layers for every quantised layer of ``netlist``, from the model's own float weights."""
    matrices = float_matrices(model, tuple(t[:1].cpu() for t in inputs), recorded_frontend(netlist.doc.provenance))
    missing = [layer.name for layer in netlist.layers if layer.name not in matrices]
    if missing:
        raise CompileError("XB506", f"the model has no crossbar layer(s) {', '.join(missing[:5])} of the netlist",
                           hint="verify against the model the netlist was compiled from")
    return {layer.name: ReferenceLayer(matrices[layer.name].weight, matrices[layer.name].bias, layer, netlist)
            for layer in netlist.layers if layer.quant is not None}


def verify_integer(netlist, model, inputs, tolerance: float) -> VerifyReport:
    """``verify`` in integer mode: every layer's output integers against the reference's, same input."""
    netlist = as_netlist(netlist)
    inputs = as_input_tuple(netlist, inputs)
    if not netlist.quantised:
        raise CompileError("XB520", "integer mode needs a quantised netlist (compiled with calibration data)",
                           hint="xbcompiler.compile(..., calibration=...) or xbc compile --calibrate FILE.npy")
    refs = build_reference(netlist, model, inputs)
    emulator = emulator_for(netlist, "integer", inputs[0].device)
    got, env = emulator.run(inputs, record=True)
    expected = Recorder(capture(model, inputs, recorded_frontend(netlist.doc.provenance)).gm).run_all(inputs)
    report = VerifyReport("integer", tolerance)
    xbar_input = {n.target: n.args[0]["ref"] for n in netlist.doc.nodes if n.op == "xbar"}
    for layer in netlist.layers:
        ref = refs[layer.name]
        x = env[xbar_input[layer.name]].detach().double().cpu()
        want = ref(quantize(x, ref.q.input_exponent, ref.q.input_bits, ref.q.input_signed))
        have = env[layer.name].detach().double().cpu() * 2.0 ** -ref.q.output_exponent
        bad = want != have
        scale = 2.0 ** ref.q.output_exponent
        max_abs, rel = _errors(want * scale, have * scale)
        site = first_site(netlist, layer, set(sorted(bad_channels(layer, bad))[:1])) if bad.any() else None
        report.layers.append(LayerCheck(layer.name, layer.reference, max_abs, rel, not bool(bad.any()),
                                        site and site.crossbar, int(bad.sum()), site and site.column))
    chain = _reference_chain(netlist, refs, inputs)
    pairs = list(zip(output_tensors(chain), output_tensors(got)))
    errs = [_errors(a, b) for a, b in pairs] or [(0.0, 0.0)]
    report.output_max_abs, report.output_rel = max(e[0] for e in errs), max(e[1] for e in errs)
    float_errs = [_errors(a, b) for a, b in zip(output_tensors(expected.output), output_tensors(got))] or [(0.0, 0.0)]
    report.float_rel = max(e[1] for e in float_errs)
    return report


def _reference_chain(netlist, refs: dict[str, ReferenceLayer], inputs: tuple):
    """The whole network with every crossbar layer replaced by its reference (host ops as in the netlist)."""
    chain = Emulator.__new__(Emulator)
    chain.__dict__.update(emulator_for(netlist, "integer", inputs[0].device).__dict__)
    chain.layers = {name: _as_model_units(ref) for name, ref in refs.items()}
    chain.steps = [chain._step(node) for node in netlist.doc.nodes]
    return chain.run(inputs)


def _as_model_units(ref: ReferenceLayer):
    def run(x: torch.Tensor) -> torch.Tensor:
        q = ref.q
        y = ref(quantize(x.detach().double().cpu(), q.input_exponent, q.input_bits, q.input_signed))
        return (y * 2.0 ** q.output_exponent).to(x.dtype).to(x.device)
    return run
