"""The layer shape the mapping cost model works on (background §0.1), from a logical matrix or a netlist layer.

Every weight-stationary layer is seen as a 2-D convolution per group: Conv1d is a convolution over a
``1 x L`` map, and a Linear over ``[..., F]`` inputs is a ``1 x 1`` convolution over an ``L x 1`` map of
its ``L`` input vectors (so its vectors are its output rows, folded one per phase).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ..ir.matrix import Geometry, LogicalMatrix


@dataclass(frozen=True)
class LayerShape:
    """One layer as ``groups`` convolutions of ``c_in -> c_out`` channels on an ``in_hw`` map."""

    groups: int
    c_in: int  # input channels per group
    c_out: int  # output channels per group
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def weights(self) -> int:
        return self.groups * self.c_in * self.c_out * self.kernel[0] * self.kernel[1]

    @property
    def outputs(self) -> int:
        """Output values per image."""
        return self.groups * self.c_out * self.out_hw[0] * self.out_hw[1]

    def input_cols(self, w_o: int) -> int:
        """``w_i``: input columns one slice of ``w_o`` output columns reads, halo included (background §2.2)."""
        return (w_o - 1) * self.stride[1] + self.dilation[1] * (self.kernel[1] - 1) + 1


def layer_shape(geometry: Geometry, input_shape, output_shape) -> LayerShape:
    """The shape of a layer from its geometry and its input/output shapes without the batch dimension."""
    g = geometry
    if g.kind == "linear":
        vectors = prod(input_shape[:-1])
        in_hw = out_hw = (vectors, 1)
    elif g.kind == "conv1d":
        in_hw, out_hw = (1, input_shape[-1]), (1, output_shape[-1])
    else:
        in_hw, out_hw = tuple(input_shape[-2:]), tuple(output_shape[-2:])
    return LayerShape(g.groups, g.in_channels // g.groups, g.out_channels // g.groups, tuple(g.kernel),
                      tuple(g.stride), tuple(g.padding), tuple(g.dilation), tuple(in_hw), tuple(out_hw))


def shape_of(matrix: LogicalMatrix) -> LayerShape:
    return layer_shape(matrix.geometry, matrix.input_shape, matrix.output_shape)


def shape_of_layer(layer) -> LayerShape:
    """The shape of a netlist layer record (:class:`xbcompiler.netlist.types.Layer`)."""
    g = layer.geometry
    geometry = Geometry(g.kind, g.in_channels, g.out_channels, layer.groups, tuple(g.kernel), tuple(g.stride),
                        tuple(g.padding), tuple(g.dilation))
    return layer_shape(geometry, layer.input_shape, layer.output_shape)
