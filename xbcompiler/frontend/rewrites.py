"""Module rewrites applied before either front end captures the model.

Some layers have no crossbar form of their own but an exact equivalent built from crossbar layers
(``nn.Conv2d``, ``nn.Linear``) and host operators: a transposed or 3-D convolution, a recurrent layer, a
multi-head attention block. Each entry of :data:`REWRITES` maps a module type to a function returning
that equivalent module (same parameters, same outputs); each family of rewrites lives in a module of
its own exporting a table that :data:`REWRITES` merges. :func:`rewrite_modules` swaps every instance
in the private copy the front end traces, so both ``torch.export`` and symbolic tracing see only
layers they already know. The rewrite modules name their parameters so that the compiled layers keep
the user's module path as a prefix.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .rewrite_attention import ATTENTION_REWRITES
from .rewrite_conv import CONV_REWRITES
from .rewrite_recurrent import RECURRENT_REWRITES

Rewrite = Callable[[nn.Module], nn.Module]

#: ``type -> build(module) -> equivalent module``, merged from the rewrite modules' tables.
REWRITES: dict[type[nn.Module], Rewrite] = {**RECURRENT_REWRITES, **ATTENTION_REWRITES, **CONV_REWRITES}


def rewrite_modules(model: nn.Module) -> nn.Module:
    """Replace, in place, every submodule whose exact type is in :data:`REWRITES`; returns ``model``.

    A model that is itself such a module is wrapped in its rewrite. Submodules of a replaced module are
    not visited again (the rewrite builds from plain layers).
    """
    build = REWRITES.get(type(model))
    if build is not None:
        return build(model)
    for name, child in list(model.named_children()):
        setattr(model, name, rewrite_modules(child))
    return model
