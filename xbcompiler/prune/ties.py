"""Depthwise layers tied to the layer that makes their input channels.

In an inverted-residual block (MobileNetV2: 1x1 expansion, depthwise 3x3, 1x1 projection) a depthwise
channel whose input channel is pruned away reads a constant (the BatchNorm's shift), so it carries
almost nothing and its crossbar share is better freed with it. :func:`tie_depthwise` marks each
depthwise layer whose input has exactly one producer upstream (:attr:`.channels.ChannelSpaces.depthwise_inputs`),
itself pruned by output channel, as a follower of that producer (:class:`~xbcompiler.prune.groups.Follow`):
the search prices the two as one layer, and the joint run keeps a depthwise channel exactly while its
producer keeps a group on that channel. An input fed by several producers (a residual sum) is left
untied: one producer's pruned channel does not make their sum constant. What the depthwise output meets
later does not matter: a squeeze-and-excitation gate multiplying it (MobileNetV3, MnasNet) joins the
gate's layer to the space but not to the depthwise layer's input.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .channels import model_spaces
from .groups import Follow
from .plan_groups import LayerGroups


def _module_of(param: str) -> str:
    return param.rsplit(".", 1)[0]


def tie_depthwise(model, example_inputs, groups: list[LayerGroups]) -> list[LayerGroups]:
    """``groups`` with every tieable depthwise layer's group set following its producer's; unchanged
    when the model does not trace with torch.fx (the channel analysis needs the fx graph)."""
    cs = model_spaces(model, example_inputs)
    if cs is None:
        return groups
    by_module = {_module_of(g.param): g for g in groups}
    leader_of: dict[str, LayerGroups] = {}
    for path, producers in cs.depthwise_inputs.items():
        follower = by_module.get(path)
        leader = by_module.get(producers[0]) if len(producers) == 1 else None
        if follower is not None and leader is not None and leader.group_set.key_names == ("o", "a") \
                and follower.group_set.key_names in (("g",), ("o", "a")):
            leader_of[follower.layer] = leader
    out = []
    for g in groups:
        leader = leader_of.get(g.layer)
        if leader is not None:
            follow = Follow(leader.param, np.asarray(leader.group_set.keys[:, 0], np.int64),
                            np.asarray(g.group_set.keys[:, 0], np.int64))
            g = dataclasses.replace(g, group_set=dataclasses.replace(g.group_set, follows=follow))
        out.append(g)
    return out
