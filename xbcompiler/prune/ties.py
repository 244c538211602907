"""Depthwise layers tied to the layer that makes their input channels.

In an inverted-residual block (MobileNetV2: 1x1 expansion, depthwise 3x3, 1x1 projection) a depthwise
channel whose input channel is pruned away reads a constant (the BatchNorm's shift), so it carries
almost nothing and its crossbar share is better freed with it. :func:`tie_depthwise` marks each
depthwise layer whose channel space (:mod:`.channels`) has exactly one producer, itself pruned by output
channel, as a follower of that producer (:class:`~xbcompiler.prune.groups.Follow`): the search prices
the two as one layer, and the joint run keeps a depthwise channel exactly while its producer keeps a
group on that channel. Spaces fed by several producers (residual sums) are left untied: one producer's
pruned channel does not make their sum constant.
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
    for root in cs.roots():
        space = cs.space(root)
        if len(space.producers) != 1 or space.producers[0] not in by_module:
            continue
        leader = by_module[space.producers[0]]
        if leader.group_set.key_names != ("o", "a") or leader.group_set.follows is not None:
            continue
        for path, offset in space.channelwise:
            follower = by_module.get(path)
            if follower is not None and offset == 0 and follower is not leader \
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
