"""Channels pruning has emptied: folded into their 1x1 consumers and packed out of their crossbars.

When every producer of a channel space (:mod:`.channels`) has lost output channel ``c`` and every
depthwise layer on the space has lost it too (a tied depthwise layer, :mod:`.ties`), the channel is a
constant for every input (biases and BatchNorm shifts through channel-wise ops). A consumer that reads
it through a 1x1 convolution without padding, or a linear layer, adds ``W[:, c] * k_c`` to every
output: :func:`fold_dead_channels` moves that into the consumer's bias and zeros ``W[:, c]``, then
permutes the space so the dead channels come last (producers, BatchNorms, depthwise layers and
consumers together, as the reorder does). The consumers' dead inputs then fill whole input groups,
whose crossbars ``recombine-pruned-columns`` drops: in an inverted-residual block, the projection's
rows of the pruned expansion channels. The model computes the same function (up to float rounding of
the moved sums); the constants are read from one forward pass over ``images``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from .channels import ChannelSpaces, apply_permutations, attribute, model_spaces


@dataclass(frozen=True)
class DeadChannels:
    """What :func:`fold_dead_channels` did to one channel space."""

    producers: tuple[str, ...]
    channels: int
    dead: int
    """Channels folded into the consumers."""
    packed: bool = True
    """Whether the dead channels were moved to the end of the space (not when that would cost crossbars)."""


def _foldable(mod: nn.Module) -> bool:
    """A consumer whose output adds ``W[:, c] * k`` for a constant input channel ``c`` of value ``k``."""
    if isinstance(mod, nn.Linear):
        return True
    return isinstance(mod, (nn.Conv1d, nn.Conv2d)) and mod.groups == 1 and all(k == 1 for k in mod.kernel_size) \
        and all(p == 0 for p in np.atleast_1d(mod.padding)) and mod.padding_mode == "zeros"


def _zero_rows(weight: torch.Tensor) -> torch.Tensor:
    """Output channels (dim 0) whose weights are all zero."""
    return weight.detach().reshape(len(weight), -1).eq(0).all(1)


def _columns(cs: ChannelSpaces, segments, root: int) -> list[int] | None:
    """Input offsets of the space's segments in a consumer's input (None if flattened into features)."""
    offsets, offset = [], 0
    for seg in segments:
        if cs.find(seg.space) == root:
            if seg.expand != 1:
                return None
            offsets.append(offset)
        offset += seg.size * seg.expand
    return offsets


def fold_dead_channels(model: nn.Module, images: torch.Tensor, *,
                       cost: Callable[[nn.Module], int] | None = None) -> list[DeadChannels]:
    """Fold and pack the dead channels of ``model`` in place (module docstring); the spaces changed.

    ``cost`` (the model's crossbars as its weights stand): a space is packed only when that lowers it.
    Packing moves a consumer's input rows between its input groups, so a consumer pruned in slabs
    ``W[o, I_a]`` can lose more crossbars to the scattered slabs than the emptied groups free."""
    cs = model_spaces(model, (images[:1],))
    if cs is None:
        return []
    plans = []
    for root in cs.roots():
        space = cs.space(root)
        if space.pinned or not space.producers or space.block != space.size:
            continue
        consumers = cs.consumers_of(root)
        try:
            producers = [model.get_submodule(p) for p in space.producers]
            depthwise = [m for m in (attribute(model, p) for p, _ in space.channelwise) if isinstance(m, nn.Module)]
            readers = [(model.get_submodule(c.module), _columns(cs, c.segments, root)) for c in consumers]
        except AttributeError:  # a module the trace made (a functional conv): not in the model
            continue
        if not readers or any(cols is None or not _foldable(mod) for mod, cols in readers):
            continue
        dead = torch.ones(space.size, dtype=torch.bool)
        for mod in producers + depthwise:
            dead &= _zero_rows(mod.weight)
        if dead.any():
            plans.append((root, space, readers, dead))
    if not plans:
        return []
    inputs = _consumer_inputs(model, images, [mod for _, _, readers, _ in plans for mod, _ in readers])
    perms, report = {}, []
    with torch.no_grad():
        for root, space, readers, dead in plans:
            for mod, cols in readers:  # a channel must be constant wherever it is read
                x = inputs[id(mod)]
                for offset in cols:
                    part = x[:, offset:offset + space.size].transpose(0, 1).reshape(space.size, -1)
                    dead &= part.amax(1) == part.amin(1)
            if not dead.any():
                continue
            for mod, cols in readers:
                x = inputs[id(mod)]
                if mod.bias is None:
                    mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype))
                for offset in cols:
                    idx = offset + torch.nonzero(dead).flatten()
                    value = x[:1, idx].reshape(len(idx), -1)[:, 0]  # the constant of each dead channel
                    w = mod.weight.reshape(mod.weight.shape[0], mod.weight.shape[1], -1)[:, idx, 0]
                    mod.bias += w.to(value.dtype) @ value
                    mod.weight[:, idx] = 0
            perms[root] = np.argsort(dead.numpy(), kind="stable")  # alive channels first, in order
            report.append(DeadChannels(tuple(space.producers), space.size, int(dead.sum())))
    if cost is None:
        apply_permutations(model, cs, perms)
        return report
    current = cost(model)
    for i, (root, perm) in enumerate(perms.items()):
        apply_permutations(model, cs, {root: perm})
        if (packed := cost(model)) < current:
            current = packed
        else:
            apply_permutations(model, cs, {root: np.argsort(perm)})
            report[i] = replace(report[i], packed=False)
    return report


def _consumer_inputs(model: nn.Module, images: torch.Tensor, modules: list[nn.Module]) -> dict[int, torch.Tensor]:
    """The input of each of ``modules`` (by ``id``) on one eval-mode forward pass over ``images``."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [mod.register_forward_pre_hook(lambda m, args: seen.setdefault(id(m), args[0].detach()))
             for mod in {id(m): m for m in modules}.values()]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return seen
