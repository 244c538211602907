"""Power-of-two quantisation (docs/quantization.md).

- :mod:`.scheme`: exponents, integer ranges, the rounding shift, ``LayerQuant``;
- :mod:`.calibrate`: activation ranges on calibration data;
- :mod:`.graph`: fixed-point types through host ops, alignment shifts, ops that stay float;
- :mod:`.layer`: the graph-stage quantised layer (exact integer arithmetic);
- :mod:`.check`: the proof that no float multiply is left in a crossbar segment;
- :mod:`.slicing`: encodings, bit-slicing, DAC cycles, ADC, the per-read loop of background §0.4;
- :mod:`.netlist`: the integer datapath in the netlist, ADC calibration and bias compensation;
- :mod:`.pipeline`: where the driver inserts ``fold-pow2-scales``;
- :mod:`.qat`: quantisation-aware training with learnable power-of-two scales;
- :mod:`.ops`: host ops the quantiser inserts.
"""
