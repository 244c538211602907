"""Sweeps: campaigns of compile-and-emulate trials on Ray, resumable, with summaries (docs/sweeps.md).

``xb.sweep(spec, out_dir)`` / ``xbc sweep SPEC.toml -o DIR`` run the trials of a spec
(:mod:`.spec`, :mod:`.trials`) as Ray tasks (:mod:`.runner`, :mod:`.work`) into ``DIR/results.csv``
(:mod:`.results`); ``xbc sweep-report DIR`` summarises them (:mod:`.report`). Ray is imported only
when a sweep runs (the ``sweep`` extra).

``xb.sweep`` is :func:`.runner.sweep`.
"""

from .results import Row, SweepMeta
from .runner import Progress, SweepOutcome, sweep
from .spec import SweepSpec, load_spec, spec_from_dict
from .trials import Trial, expand

__all__ = ["Progress", "Row", "SweepMeta", "SweepOutcome", "SweepSpec", "Trial", "expand", "load_spec",
           "spec_from_dict", "sweep"]

