"""Named pipelines, written as literal lists you read top to bottom, one step a line."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from xbcompiler.diagnostics import CompileError
from xbcompiler.pipeline.base import Pass
from xbcompiler.pipeline.registry import load_failures, parse_pipeline, registered_passes

NAMED_PIPELINES: dict[str, list[str]] = {
    "fully-folded": [
        "fold-batchnorm",
        "lower-im2col",
        "lower-to-xbar",
        "map-fully-folded",
        "place-tiles",
    ],
    "semi-folded": [
        "fold-batchnorm",
        "lower-im2col",
        "lower-to-xbar",
        "map-semi-folded",
        "place-tiles{method=min-traffic}",
    ],
    "fully-unfolded": [
        "fold-batchnorm",
        "lower-im2col",
        "lower-to-xbar",
        "map-fully-unfolded",
        "place-tiles{method=min-traffic}",
    ],
    "semi-folded-pruned": [
        "fold-batchnorm",
        "lower-im2col",
        "lower-to-xbar",
        "map-semi-folded",
        "recombine-pruned-columns",
        "place-tiles{method=min-traffic}",
    ],
    "fully-unfolded-pruned": [
        "fold-batchnorm",
        "lower-im2col",
        "lower-to-xbar",
        "map-fully-unfolded",
        "recombine-pruned-columns",
        "place-tiles{method=min-traffic}",
    ],
    "fully-folded-pruned": [
        "fold-batchnorm",
        "lower-im2col",
        "lower-to-xbar",
        "map-fully-folded",
        "compact-pruned-rows",
        "place-tiles",
    ],
    "fully-folded-pattern": [
        "fold-batchnorm",
        "lower-im2col",
        "lower-to-xbar",
        "map-fully-folded",
        "group-pattern-columns",
        "compact-pruned-rows",
        "place-tiles",
    ],
    "default": [
        "fold-batchnorm",
        "lower-im2col",
        "lower-to-xbar",
        "map-budgeted",
        "place-tiles{method=min-traffic}",
    ],
}


def resolve_pipeline(spec: str | Sequence[Pass]) -> list[Pass]:
    """Pass instances from a pipeline name, a textual pipeline, or a sequence of passes."""
    if not isinstance(spec, str):
        passes = list(spec)
        bad = [p for p in passes if not isinstance(p, Pass)]
        if bad:
            raise TypeError(f"a pipeline holds Pass instances, got {bad[0]!r}")
        return passes
    text = spec.strip()
    if text in NAMED_PIPELINES:
        return parse_pipeline(",".join(NAMED_PIPELINES[text]))
    if text and not any(c in text for c in ",{") and not _is_pass_name(text):
        close = difflib.get_close_matches(text, [*NAMED_PIPELINES, *registered_passes()], n=3, cutoff=0.5)
        raise CompileError("XB605", f"unknown pipeline '{text}'",
                           hint="did you mean " + " or ".join(f"'{c}'" for c in close) + "?" if close else None,
                           details=[f"named pipelines: {', '.join(NAMED_PIPELINES)}",
                                    "or write one out: pass-a,pass-b{option=value},..."])
    return parse_pipeline(text)


def _is_pass_name(text: str) -> bool:
    """A registered pass, or an entry point that failed to load (parsing then says why)."""
    return text in registered_passes() or text in load_failures()
