"""Sweep specs: a TOML file validated into frozen dataclasses (docs/sweeps.md), like a target.

Validation runs before anything is written or started and reports, in this order: unknown keys (XB701,
all at once, nearest key suggested), wrong types (XB702), missing keys (XB703), then values out of
range, unknown choices, a factory or file that is not there and impossible combinations (XB704).
Malformed TOML is XB705.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

from ..diagnostics import CompileError, Location
from ..keyed import TYPE_WORDS, flatten, range_problem, type_ok
from ..keyed import key as _key
from ..target import KEYS as TARGET_KEYS
from ..target import value_problem

SCHEMA_VERSION = 1
MODES = ("ideal", "integer", "device")
#: Varied keys that are not target keys.
OWN_KEYS = ("pipeline", "prune.sparsity", "seed")
#: Target keys that only change how a compiled netlist is programmed (no recompile).
PROGRAM_PREFIXES = ("device.", "compensation.")
#: Target keys that cannot be varied (they name the target, not a parameter).
FIXED_TARGET_KEYS = ("schema", "name", "description")


@dataclass(frozen=True)
class ModelSection:
    """What is compiled: the factory, its input shape and optionally trained weights."""

    factory: str = _key("FILE.py:FACTORY returning the nn.Module (path relative to the spec)")
    input_shape: list = _key("shape of one example input, batch first, e.g. [1, 1, 8, 8]")  # noqa: RUF009
    weights: str = _key("state_dict file (torch.save) loaded into the model; empty: none", "")


@dataclass(frozen=True)
class DataSection:
    """The evaluation data and the calibration batch."""

    source: str = _key("'digits' (scikit-learn's digits, seeded split) or an .npz with x_test, y_test "
                       "(and x_train, y_train for training, pruning and calibration)", "digits")
    split_seed: int = _key("seed of the digits train/test split", 0, lo=0)
    limit: int = _key("evaluate on the first N test samples (0: all)", 0, lo=0)
    calibration: int = _key("training samples calibrating the quantisation (integer and device modes)", 128, lo=1)
    batch_size: int = _key("samples per emulator call", 512, lo=1)


@dataclass(frozen=True)
class TrainSection:
    """A training recipe (xbcompiler.datasets.train_classifier), run once before any compile."""

    epochs: int = _key("epochs of SGD with momentum and cosine decay", 30, lo=1, hi=10000)
    lr: float = _key("initial learning rate", 0.05, lo=0)
    batch_size: int = _key("training batch size", 64, lo=1)
    seed: int = _key("seed of initialisation order and batches", 0, lo=0)


@dataclass(frozen=True)
class PruneSection:
    """Crossbar-aware pruning before compiling (xbcompiler.prune.flow), when the sparsity is above 0."""

    sparsity: float = _key("group sparsity of every pruned layer (0: no pruning)", 0.0, lo=0, hi=0.99)
    plan: str = _key("mapping whose plan defines the groups", "semi-folded",
                     choices=("semi-folded", "fully-unfolded", "fully-folded"))
    grain: str = _key("pruning groups", "column", choices=("column", "crossbar", "kernel", "tile"))
    epochs: int = _key("fine-tuning epochs with frozen masks", 10, lo=0, hi=10000)
    relax_epochs: int = _key("relaxed-projection epochs before fine-tuning", 3, lo=0, hi=10000)
    lr: float = _key("learning rate of pruning and fine-tuning", 0.01, lo=0)
    seed: int = _key("seed of the held-out split and the projection", 0, lo=0)


@dataclass(frozen=True)
class CompileSection:
    """How every trial is compiled and run."""

    target: str = _key("built-in target name or .toml path (relative to the spec)")
    pipeline: str = _key("named or textual pipeline (xbc passes)", "default")
    mode: str = _key("emulator mode of the evaluation", "device", choices=MODES)
    seed: int = _key("chip (programming) seed when 'seed' is not varied", 0, lo=0)


@dataclass(frozen=True)
class RandomSection:
    """Random trials: ``trials`` draws of the keys of ``[random]`` (values are lists or {low, high})."""

    trials: int = _key("number of random draws (each combined with every grid point)", lo=1, hi=1_000_000)
    seed: int = _key("seed of the draws", 0, lo=0)


@dataclass(frozen=True)
class _Header:
    schema: int = _key("sweep spec format version", choices=(SCHEMA_VERSION,))
    name: str = _key("the sweep's name (default: the file's stem)", "")
    description: str = _key("free text", "")


_SECTIONS: dict[str, type] = {"model": ModelSection, "data": DataSection, "train": TrainSection,
                              "prune": PruneSection, "compile": CompileSection}
#: Sections holding dotted keys: name -> documentation.
TABLES = {"overrides": "base values of target keys for every trial, e.g. \"crossbar.rows\" = 64",
          "derived": "keys computed from another: \"device.sa0_rate\" = { from = \"device.sa1_rate\", scale = 0.2 }",
          "grid": "varied keys: a list of values each; every combination is a trial",
          "random": "trials, seed, and varied keys drawn at random: a list (choice) or { low, high[, log] }"}


_SCHEMA = flatten([("", _Header), *((s + ".", c) for s, c in _SECTIONS.items()),
                   ("random.", RandomSection)])
#: Every plain key of a spec with its documentation (the dotted-key tables are in :data:`TABLES`).
KEYS: dict[str, str] = {k: f.metadata["doc"] for k, (_, f) in _SCHEMA.items()}
#: Keys a ``[grid]`` or ``[random]`` may vary.
VARIABLE_KEYS = tuple(k for k in TARGET_KEYS if k not in FIXED_TARGET_KEYS) + OWN_KEYS


@dataclass(frozen=True)
class Uniform:
    """A random key drawn uniformly from ``[low, high]`` (integers when both are, log-uniform with ``log``)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Derived:
    """``key = scale * value of source`` in every trial."""

    key: str
    source: str
    scale: float


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep; build it with :func:`load_spec` or :func:`spec_from_dict`."""

    name: str
    description: str
    model: ModelSection
    data: DataSection
    train: TrainSection | None
    prune: PruneSection
    compile: CompileSection
    overrides: dict[str, Any]
    derived: tuple[Derived, ...]
    grid: dict[str, tuple]
    random: RandomSection | None
    random_keys: dict[str, tuple | Uniform]
    raw: dict = field(compare=False, repr=False)  #: the file's tables as read
    base_dir: str = field(default=".", compare=False)  #: folder the spec's relative paths start from

    @property
    def varied(self) -> tuple[str, ...]:
        """The varied keys: the grid's, then the random ones, in file order."""
        return (*self.grid, *self.random_keys)

    def path(self, text: str) -> str:
        """A path of the spec resolved against its folder; relative to the working directory when inside it
        (so a Ray job's ``working_dir`` finds it on every node)."""
        p = Path(self.base_dir, text)
        try:
            return os.path.relpath(p.resolve(), Path.cwd()) if p.resolve().is_relative_to(Path.cwd()) else str(p)
        except ValueError:
            return str(p)

    @property
    def factory(self) -> str:
        file, _, name = self.model.factory.rpartition(":")
        return f"{self.path(file)}:{name}"

    def lock(self) -> str:
        """sha256 of everything that makes results comparable: the spec without the values of ``[grid]`` and
        ``[random]`` (so more seeds or points may be added to a used directory), plus the referenced files."""
        raw = {k: v for k, v in self.raw.items() if k not in ("grid", "random")}
        raw["grid"] = list(self.grid)
        raw["random"] = list(self.random_keys)
        files = [self.model.factory.rpartition(":")[0], self.model.weights,
                 "" if self.data.source == "digits" else self.data.source]
        if self.compile.target.endswith(".toml") or "/" in self.compile.target:
            files.append(self.compile.target)
        raw["files"] = {f: _digest(Path(self.base_dir, f)) for f in files if f}
        return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


# --------------------------------------------------------------------------------------------------
# loading


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec (TOML); paths in it are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise CompileError("XB001", f"sweep spec not found: {path}", location=Location(file=str(path)))
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CompileError("XB705", f"malformed TOML in {path}: {exc}", location=Location(file=str(path))) from None
    data.setdefault("name", path.stem)
    return spec_from_dict(data, str(path), base_dir=str(path.parent))


def spec_from_dict(data: Mapping[str, Any], file: str = "<dict>", base_dir: str = ".") -> SweepSpec:
    """Validate a spec given as nested dicts (as TOML reads it)."""
    if not isinstance(data, Mapping):
        _fail("XB702", "wrong type for", [("<top level>", "expected a table")], file)
    flat, tables = _split(data, file)
    _check_types(flat, file)
    missing = [(k, f"{k}: required ({KEYS[k]})") for k, (_, f) in _SCHEMA.items()
               if f.default is MISSING and k not in flat and (not k.startswith("random.") or "random" in data)]
    if "grid" not in data and "random" not in data:
        missing.append(("grid", "grid: a sweep needs a [grid] or a [random] table of keys to vary"))
    if missing:
        _fail("XB703", "missing sweep spec key" + "s" * (len(missing) > 1), missing, file)
    for k, (tp, f) in _SCHEMA.items():
        if k not in flat and f.default is not MISSING:
            flat[k] = f.default
        elif k in flat and tp is float:
            flat[k] = float(flat[k])
    bad = [(k, d) for k in _SCHEMA if k in flat and (d := range_problem(k, flat[k], _SCHEMA[k][1]))]
    if bad:
        _fail("XB704", "bad value for sweep spec key" + "s" * (len(bad) > 1), bad, file)
    sections = {s: cls(**{f.name: flat[f"{s}.{f.name}"] for f in fields(cls)}) for s, cls in _SECTIONS.items()}
    rnd = RandomSection(**{f.name: flat[f"random.{f.name}"] for f in fields(RandomSection)}) if "random" in data else None
    sections["train"] = sections["train"] if "train" in data else None
    spec = SweepSpec(name=flat["name"], description=flat["description"], **sections,
                     overrides=tables["overrides"], derived=_derived(tables["derived"], file),
                     grid={k: tuple(v) for k, v in tables["grid"].items()}, random=rnd,
                     random_keys=_random_keys(tables["random"], file), raw=_plain(data), base_dir=base_dir)
    _check_values(spec, file)
    return spec


def _plain(data: Mapping) -> dict:
    return json.loads(json.dumps(data, default=str))


def _split(data: Mapping[str, Any], file: str) -> tuple[dict[str, Any], dict[str, dict]]:
    """Plain keys (flattened) and the four dotted-key tables; XB701 for unknown keys, XB702 for non-tables."""
    unknown, flat, bad = [], {}, []
    tables: dict[str, dict] = {t: {} for t in TABLES}
    for k, v in data.items():
        if k in _SECTIONS or k in TABLES:
            if not isinstance(v, Mapping):
                bad.append((k, f"{k}: expected a table, got {type(v).__name__}"))
                continue
            for sub, sv in v.items():
                dotted = f"{k}.{sub}"
                if dotted in _SCHEMA:
                    flat[dotted] = sv
                elif k in TABLES:
                    tables[k][sub] = sv
                else:
                    unknown.append(dotted)
        elif k in _SCHEMA:
            flat[k] = v
        else:
            unknown.append(str(k))
    for table in ("overrides", "derived", "grid", "random"):
        allowed = TARGET_KEYS if table in ("overrides", "derived") else VARIABLE_KEYS
        unknown += [f"{table}.{k}" for k in tables[table] if k not in allowed or k in FIXED_TARGET_KEYS]
    if unknown:
        items = [(k, _suggestion(k)) for k in unknown]
        _fail("XB701", "unknown sweep spec key" + "s" * (len(unknown) > 1), items, file)
    if bad:
        _fail("XB702", "wrong type for", bad, file)
    return flat, tables


def _suggestion(key: str) -> str:
    table, _, leaf = key.partition(".")
    if table in TABLES:
        pool = list(VARIABLE_KEYS if table in ("grid", "random") else TARGET_KEYS)
        near = difflib.get_close_matches(leaf, pool, n=1, cutoff=0.6)
        why = "not a key that can be varied" if table in ("grid", "random") else "not a target key"
        return f"{key}: did you mean '{table}.{near[0]}'?" if near else f"{key}: {why}"
    near = difflib.get_close_matches(key, [*_SCHEMA, *TABLES], n=1, cutoff=0.6)
    return f"{key}: did you mean '{near[0]}'?" if near else f"{key}: not a sweep spec key"




def _check_types(flat: dict[str, Any], file: str) -> None:
    bad = [(k, f"{k}: expected {TYPE_WORDS[_SCHEMA[k][0]]}, got {v!r}") for k, v in flat.items()
           if not type_ok(_SCHEMA[k][0], v)]
    if bad:
        _fail("XB702", "wrong type for sweep spec key" + "s" * (len(bad) > 1), bad, file)


def _derived(table: dict[str, Any], file: str) -> tuple[Derived, ...]:
    out, bad = [], []
    for key, v in table.items():
        ok = (isinstance(v, Mapping) and set(v) == {"from", "scale"} and isinstance(v["from"], str)
              and isinstance(v["scale"], (int, float)) and not isinstance(v["scale"], bool))
        if not ok:
            bad.append((f"derived.{key}", f"derived.{key}: expected {{ from = \"KEY\", scale = NUMBER }}, got {v!r}"))
        else:
            out.append(Derived(key, v["from"], float(v["scale"])))
    if bad:
        _fail("XB702", "wrong type for", bad, file)
    return tuple(out)


def _random_keys(table: dict[str, Any], file: str) -> dict[str, tuple | Uniform]:
    out: dict[str, tuple | Uniform] = {}
    for key, v in table.items():
        if isinstance(v, list):
            out[key] = tuple(v)
        elif (isinstance(v, Mapping) and {"low", "high"} <= set(v) <= {"low", "high", "log"}
              and all(isinstance(v[b], (int, float)) and not isinstance(v[b], bool) for b in ("low", "high"))
              and isinstance(v.get("log", False), bool)):
            out[key] = Uniform(v["low"], v["high"], v.get("log", False))
        else:
            why = f"random.{key}: expected a list of values or {{ low, high[, log] }}, got {v!r}"
            _fail("XB702", "wrong type for", [(f"random.{key}", why)], file)
    return out


# --------------------------------------------------------------------------------------------------
# values


def _check_values(spec: SweepSpec, file: str) -> None:
    """XB704: every value checked on its own before anything runs (combinations fail as trials)."""
    from ..target import load_target

    bad: list[tuple[str, str]] = []
    shape = spec.model.input_shape
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        bad.append(("model.input_shape", f"model.input_shape = {shape!r}: must be positive integers, batch first"))
    bad += _file_problems(spec)
    for key, values in spec.grid.items():
        if not values:
            bad.append((f"grid.{key}", f"grid.{key}: needs at least one value"))
        if len(set(map(repr, values))) != len(values):
            bad.append((f"grid.{key}", f"grid.{key}: repeats a value"))
    for key, dist in spec.random_keys.items():
        if isinstance(dist, Uniform) and (dist.low > dist.high or (dist.log and dist.low <= 0)):
            bad.append((f"random.{key}", f"random.{key}: needs low <= high (and low > 0 with log)"))
        elif not isinstance(dist, Uniform) and not dist:
            bad.append((f"random.{key}", f"random.{key}: needs at least one value"))
    bad += [(f"random.{k}", f"random.{k}: also in [grid]") for k in spec.random_keys if k in spec.grid]
    for d in spec.derived:
        if d.source not in (*spec.varied, *spec.overrides, *TARGET_KEYS) or d.source in FIXED_TARGET_KEYS:
            bad.append((f"derived.{d.key}", f"derived.{d.key}: from = {d.source!r} is not a target or varied key"))
        if d.key in spec.varied or d.key in spec.overrides:
            bad.append((f"derived.{d.key}", f"derived.{d.key}: also set in [grid], [random] or [overrides]"))
    from ..prune.plan_groups import GRAINS

    if spec.prune.plan not in GRAINS.get(spec.prune.grain, ()):
        plans = " or ".join(map(repr, GRAINS[spec.prune.grain]))
        bad.append(("prune.grain", f"prune.grain = {spec.prune.grain!r} needs prune.plan {plans}"))
    if spec.compile.mode != "device":
        bad += [(k, f"{k}: varies the chip, which needs compile.mode = 'device' (is {spec.compile.mode!r})")
                for k in spec.varied if k == "seed" or k.startswith(PROGRAM_PREFIXES)]
    if bad:
        _fail("XB704", "bad value in sweep spec", bad, file)
    try:
        load_target(spec.path(spec.compile.target) if spec.compile.target.endswith(".toml")
                           else spec.compile.target, spec.overrides or None)
    except CompileError as exc:
        _fail("XB704", "bad base target", [("compile.target", f"compile.target: [{exc.code}] {exc.message}"),
                                           *(("compile.target", d) for d in exc.details)], file)
    bad += _value_problems(spec)
    if bad:
        _fail("XB704", "bad value in sweep spec", bad, file)


def _file_problems(spec: SweepSpec) -> list[tuple[str, str]]:
    from ..modelfile import find_factory

    bad = []
    try:
        find_factory(spec.factory)
    except CompileError as exc:
        bad.append(("model.factory", f"model.factory = {spec.model.factory!r}: [{exc.code}] {exc.message}"))
    if spec.model.weights and not Path(spec.base_dir, spec.model.weights).is_file():
        bad.append(("model.weights", f"model.weights = {spec.model.weights!r}: no such file"))
    if spec.data.source != "digits" and not Path(spec.base_dir, spec.data.source).is_file():
        bad.append(("data.source", f"data.source = {spec.data.source!r}: neither 'digits' nor an existing .npz"))
    return bad


def _value_problems(spec: SweepSpec) -> list[tuple[str, str]]:
    """Each varied value on its own: target keys' types and ranges, pipelines parsed, sparsities, seeds."""
    from ..pipeline import resolve_pipeline

    bad = []
    values = {**{k: list(v) for k, v in spec.grid.items()},
              **{k: (list(d) if not isinstance(d, Uniform) else [d.low, d.high]) for k, d in spec.random_keys.items()}}
    values.setdefault("pipeline", [spec.compile.pipeline])
    for key, vals in values.items():
        for v in vals:
            if key == "pipeline":
                try:
                    resolve_pipeline(v)
                except (CompileError, TypeError, AttributeError) as exc:
                    why = f"[{exc.code}] {exc.message}" if isinstance(exc, CompileError) else "expected a string"
                    bad.append((key, f"{key} = {v!r}: {why}"))
            elif key == "prune.sparsity":
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 0.99:
                    bad.append((key, f"{key} = {v!r}: must be a number in 0..0.99"))
            elif key == "seed":
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    bad.append((key, f"{key} = {v!r}: must be an integer >= 0"))
            elif problem := value_problem(key, v):
                bad.append((key, problem))
    return bad


def _fail(code: str, what: str, items: list[tuple[str, str]], file: str) -> NoReturn:
    keys = ", ".join(f"'{k}'" for k, _ in items)
    raise CompileError(code, f"{what} {keys} in {file}", location=Location(file=file, key=items[0][0]),
                       details=[d for _, d in items], hint="see docs/sweeps.md for every key")

