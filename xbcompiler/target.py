"""Target descriptions: TOML files validated into frozen dataclasses (docs/targets.md, background §0.1-0.5).

Built-in targets are found only through the ``xbcompiler.targets`` entry-point group, so the core never
imports the ``targets`` package. Validation reports, in this order and each with the key and the file:
unknown keys (XB401, all at once, nearest key suggested), wrong types (XB402), missing keys (XB403),
out-of-range values and impossible combinations (XB404).
"""

import dataclasses
import difflib
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

from xbcompiler.diagnostics import CompileError, Location
from xbcompiler.keyed import TYPE_WORDS, flatten, range_problem, type_ok
from xbcompiler.keyed import key as _key

SCHEMA_VERSION = 1
ENTRY_POINT_GROUP = "xbcompiler.targets"


@dataclass(frozen=True)
class CrossbarSpec:
    """One ReRAM array."""

    rows: int = _key("word lines (inputs) per crossbar", lo=8, hi=1024)
    cols: int = _key("bit lines (physical columns) per crossbar", lo=8, hi=1024)
    cell_bits: int = _key("bits stored per cell (k)", lo=1, hi=8)
    fragment_rows: int = _key("rows of one FORMS fragment (encoding.signed = polarized; 0: none)", 0, lo=0, hi=1024)


@dataclass(frozen=True)
class PrecisionSpec:
    """Operand and converter resolutions."""

    weight_bits: int = _key("signed weight precision (b_w)", lo=2, hi=16)
    input_bits: int = _key("input activation precision (b_x)", lo=1, hi=16)
    dac_bits: int = _key("input bits applied per cycle (d)", lo=1, hi=8)
    adc_bits: int = _key("ADC resolution (B)", lo=1, hi=16)


@dataclass(frozen=True)
class EncodingSpec:
    """How signed weights and inputs are put on unsigned cells and drivers (background §0.2, 0.3)."""

    signed: str = _key("signed-weight encoding", choices=("differential", "differential-zero-high", "offset",
                                                                  "polarized"))
    flip_columns: bool = _key("ISAAC column flipping (saves one ADC bit)", False)
    input_signed: str = _key("signed-input scheme", "twos-complement", choices=("twos-complement", "offset"))


@dataclass(frozen=True)
class AdcSpec:
    """How column sums are digitised (background §0.3, 0.4; PRIME output truncation 4.5)."""

    mode: str = _key("ADC range mode", "fixed", choices=("fixed", "lossless", "calibrated"))
    rounding: str = _key("rounding of dropped LSBs", "nearest-even", choices=("nearest-even", "floor"))
    compensate_bias: bool = _key("add back the mean error of dropped ADC LSBs digitally", True)
    output_bits: int = _key("keep the top N bits after shift-and-add (0 = no truncation)", 0, lo=0, hi=32)


@dataclass(frozen=True)
class HierarchySpec:
    """Crossbars on one chip, and the chips the default mapping may use."""

    tiles: int = _key("tiles per chip", lo=1)
    crossbars_per_tile: int = _key("crossbars per tile", lo=1)
    chips: int = _key("chips the model may use: the budget of the default mapping (map-budgeted)", 1, lo=1)


@dataclass(frozen=True)
class CostSpec:
    """First-order per-event costs (energy in pJ, time in ns, area in um^2)."""

    adc_conversion_pj: float = _key("energy of one ADC conversion", 2.0, lo=0)
    dac_drive_pj: float = _key("energy to drive one row for one cycle", 0.05, lo=0)
    cell_read_pj: float = _key("energy per cell per read", 0.001, lo=0)
    shift_add_pj: float = _key("energy of one shift-and-add", 0.05, lo=0)
    partial_sum_add_pj: float = _key("energy of one partial-sum addition across crossbars", 0.1, lo=0)
    tile_bit_moved_pj: float = _key("energy per bit moved between tiles", 0.5, lo=0)
    phase_ns: float = _key("duration of one crossbar read phase (one input cycle)", 100.0, lo=0)
    xbar_area_um2: float = _key("area of one crossbar array", 100.0, lo=0)
    adc_area_um2: float = _key("area of one ADC", 1200.0, lo=0)
    tile_area_um2: float = _key("area of one tile's shared periphery", 50000.0, lo=0)


@dataclass(frozen=True)
class DeviceSpec:
    """Non-idealities of the cells (background §0.4), used by ``xb.program`` and the emulator's ``device`` mode.

    Every default is the ideal device; a target whose device section is all defaults leaves it out of
    :meth:`TargetSpec.to_dict` (and so out of its fingerprint and of the netlist).
    """

    program_sigma: float = _key("log-normal programming variation: G = G_target * exp(theta), theta ~ N(0, sigma^2) "
                                "per cell", 0.0, lo=0, hi=2)
    read_noise: float = _key("Gaussian noise on each analog column read, as a fraction of the column's "
                             "full-scale read", 0.0, lo=0, hi=1)
    sa0_rate: float = _key("probability that a cell is stuck at G_min (off)", 0.0, lo=0, hi=1)
    sa1_rate: float = _key("probability that a cell is stuck at G_max (on)", 0.0, lo=0, hi=1)
    on_off_ratio: float = _key("G_max / G_min (0: an ideal zero off state)", 0.0, lo=0)
    fault_map: str = _key("measured fault map (.npz, docs/faults.md) used instead of the SA0/SA1 rates; "
                          "empty: sample the rates", "")

    @property
    def ideal(self) -> bool:
        return self == DeviceSpec()


@dataclass(frozen=True)
class CompensationSpec:
    """How ``xb.program`` counters the device model (background §3.5); the defaults do nothing.

    Left out of :meth:`TargetSpec.to_dict` while at its defaults, like ``[device]``.
    """

    write_verify_pulses: int = _key("re-program a cell whose read-back error exceeds the tolerance, at most this "
                                    "many extra pulses (0: no write-verify)", 0, lo=0, hi=100)
    write_verify_tolerance: float = _key("largest read-back error a cell may keep, in cell levels", 0.5, lo=0)
    residual_programming: bool = _key("program slices most significant first, read each back and re-slice the "
                                      "weight's residual into the slices below", False)
    column_gain: bool = _key("per-column power-of-two gain and integer offset, measured on a calibration batch, "
                             "folded into the shift and the bias", False)

    @property
    def inactive(self) -> bool:
        return self == CompensationSpec()


@dataclass(frozen=True)
class _Header:
    """Top-level keys (validation only)."""

    schema: int = _key("target format version", choices=(SCHEMA_VERSION,))
    name: str = _key("target name")
    description: str = _key("free text", "")


_SECTIONS: dict[str, type] = {"crossbar": CrossbarSpec, "precision": PrecisionSpec, "encoding": EncodingSpec,
                              "adc": AdcSpec, "hierarchy": HierarchySpec, "costs": CostSpec,
                              "device": DeviceSpec, "compensation": CompensationSpec}


_SCHEMA = flatten([("", _Header), *((s + ".", c) for s, c in _SECTIONS.items())])
#: Every valid dotted key with its one-line documentation.
KEYS: dict[str, str] = {k: f.metadata["doc"] for k, (_, f) in _SCHEMA.items()}


@dataclass(frozen=True)
class TargetSpec:
    """A validated target; build it with :func:`load_target` or :func:`target_from_dict`."""

    name: str
    description: str
    crossbar: CrossbarSpec
    precision: PrecisionSpec
    encoding: EncodingSpec
    adc: AdcSpec
    hierarchy: HierarchySpec
    costs: CostSpec
    device: DeviceSpec
    compensation: CompensationSpec
    source: str = field(default="<dict>", compare=False)  #: file path or ``builtin:NAME``; not fingerprinted

    def to_dict(self) -> dict[str, Any]:
        """Canonical nested dict (with ``schema``, without ``source``; ``device``, ``compensation``,
        ``crossbar.fragment_rows`` and ``hierarchy.chips`` left out while at their defaults)."""
        out: dict[str, Any] = {"schema": SCHEMA_VERSION, "name": self.name, "description": self.description}
        idle = {"device": self.device.ideal, "compensation": self.compensation.inactive}
        out.update({s: dataclasses.asdict(getattr(self, s)) for s in _SECTIONS if not idle.get(s, False)})
        if not self.crossbar.fragment_rows:  # left out at its default, like the idle sections
            del out["crossbar"]["fragment_rows"]
        if self.hierarchy.chips == 1:
            del out["hierarchy"]["chips"]
        return out

    def fingerprint(self) -> str:
        """sha256 hex digest of the canonical JSON of :meth:`to_dict`."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, dotted_key: str) -> Any:
        """The value of one dotted key, e.g. ``get("crossbar.rows")``."""
        if dotted_key not in _SCHEMA:
            _unknown_keys([dotted_key], self.source, "")
        if dotted_key == "schema":
            return SCHEMA_VERSION
        obj: Any = self
        for part in dotted_key.split("."):
            obj = getattr(obj, part)
        return obj

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TargetSpec":
        """A new validated target with dotted keys replaced, e.g. ``{"crossbar.rows": 256}``."""
        data = _apply_overrides(self.to_dict(), overrides, self.source)
        return _validate(data, self.source, source=self.source, overridden=set(overrides))

    @property
    def weight_slices(self) -> int:
        """S: cells per weight magnitude (differential slices b_w - 1 magnitude bits)."""
        return slices_per_weight(self.encoding.signed, self.precision.weight_bits, self.crossbar.cell_bits)

    @property
    def m_c(self) -> int:
        """Physical columns per logical weight column (background §0.1)."""
        return self.weight_slices * columns_per_slice(self.encoding.signed)

    @property
    def input_cycles(self) -> int:
        """T = ceil(input_bits / dac_bits)."""
        return -(-self.precision.input_bits // self.precision.dac_bits)

    @property
    def logical_cols(self) -> int:
        """Logical weight columns per crossbar."""
        return self.crossbar.cols // self.m_c

    @property
    def crossbars_per_chip(self) -> int:
        """tiles * crossbars_per_tile."""
        return self.hierarchy.tiles * self.hierarchy.crossbars_per_tile

    def lossless_adc_bits(self, rows_active: int) -> int:
        """ADC bits that never lose a column sum of ``rows_active`` driven rows (background §0.3, ISAAC 4.4)."""
        if rows_active < 0:
            raise ValueError(f"rows_active must be >= 0, got {rows_active}")
        fs = rows_active * (2 ** self.precision.dac_bits - 1) * (2 ** self.crossbar.cell_bits - 1)
        bits = math.ceil(math.log2(fs + 1))
        return max(0, bits - 1) if self.encoding.flip_columns else bits


# --------------------------------------------------------------------------------------------------
# loading


def list_targets() -> dict[str, Path]:
    """Built-in and plug-in targets by name, from the ``xbcompiler.targets`` entry points."""
    found: dict[str, Path] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.update({name: Path(p) for name, p in ep.load()().items()})
    return dict(sorted(found.items()))


def load_target(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> TargetSpec:
    """Load a built-in target by name or a ``.toml`` file by path, then apply dotted ``overrides``."""
    text = str(name_or_path)
    known = list_targets()
    if not isinstance(name_or_path, Path) and text in known:
        path, source = known[text], f"builtin:{text}"
    elif isinstance(name_or_path, Path) or "/" in text or "\\" in text or text.endswith(".toml") or Path(text).is_dir():
        path = Path(name_or_path)
        source = str(path)
    else:
        near = difflib.get_close_matches(text, known, n=1)
        raise CompileError("XB406", f"unknown target name '{text}'",
                           hint=f"did you mean '{near[0]}'?" if near else "pass a built-in name or a .toml path",
                           details=[f"known targets: {', '.join(known) or '(none)'}"])
    data = _read_toml(path)
    file = str(path)
    if overrides:
        data = _apply_overrides(data, overrides, file)
    return _validate(data, file, source=source, overridden=set(overrides or ()))


def target_from_dict(data: Mapping[str, Any], file: str = "<dict>") -> TargetSpec:
    """Validate a nested dict (as :meth:`TargetSpec.to_dict` returns) into a :class:`TargetSpec`."""
    return _validate(data, file, source=file)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse the CLI form ``crossbar.rows=256``; the value is TOML when it parses, else a bare string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", key) or not raw or "\n" in raw:
        raise CompileError("XB407", f"bad override '{text}'", location=Location(key=key or None),
                           hint="write KEY=VALUE with a dotted key, e.g. crossbar.rows=256")
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw


def _read_toml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise CompileError("XB405", f"target {path} is a directory, not a .toml file", location=Location(file=str(path)),
                           hint="pass a target .toml file or a built-in name: " + ", ".join(list_targets()))
    if not path.is_file():
        raise CompileError("XB001", f"target file not found: {path}", location=Location(file=str(path)),
                           hint="built-in names: " + ", ".join(list_targets()))
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except RecursionError:
        raise CompileError("XB405", f"malformed TOML in {path}: nested too deep", location=Location(file=str(path))) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        where = re.search(r"line (\d+), column (\d+)", str(exc))
        details = [f"line {where[1]}, column {where[2]}"] if where else []
        raise CompileError("XB405", f"malformed TOML in {path}: {exc}", location=Location(file=str(path)),
                           details=details) from None


def _apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any], file: str) -> dict[str, Any]:
    """A copy of ``data`` with dotted keys set; unknown keys are XB401."""
    bad = [k for k in overrides if k not in _SCHEMA]
    if bad:
        _unknown_keys(bad, file, " (in overrides)")
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        if not section:
            out[leaf] = value
        elif isinstance(out.setdefault(section, {}), dict):  # a non-table section is reported as XB402
            out[section][leaf] = value
    return out


# --------------------------------------------------------------------------------------------------
# validation

_TOML_TYPES = [(bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"), (Mapping, "table"),
               (list, "array")]


def _toml_type(value: Any) -> str:
    return next((w for t, w in _TOML_TYPES if isinstance(value, t)), type(value).__name__)


def _suggest(key: str) -> str | None:
    """Nearest valid key: within the same section first, then the same last part in any section."""
    section, _, leaf = key.rpartition(".")
    fixed = difflib.get_close_matches(section, _SECTIONS, n=1) if section and section not in _SECTIONS else []
    if fixed and (near_key := _suggest(f"{fixed[0]}.{leaf}")):
        return near_key
    if section in _SECTIONS:
        pool = {k.rpartition(".")[2]: k for k in _SCHEMA if k.startswith(section + ".")}
    else:
        pool = {k: k for k in [*_SCHEMA, *_SECTIONS] if "." not in k}
    near = difflib.get_close_matches(leaf if section in _SECTIONS else key, pool, n=1, cutoff=0.6)
    if near:
        return pool[near[0]]
    by_leaf = {k.rpartition(".")[2]: k for k in _SCHEMA if "." in k}
    near = difflib.get_close_matches(leaf, by_leaf, n=1, cutoff=0.75)
    return by_leaf[near[0]] if near else None


def _fail(code: str, what: str, items: list[tuple[str, str]], file: str, overridden: Collection[str]) -> NoReturn:
    """Raise one error for every (key, detail) in ``items``; the message names the keys and the file."""
    keys = ", ".join(f"'{k}'" for k, _ in items)
    hit = sorted(k for k, _ in items if k in overridden)
    hint = f"set by override: {', '.join(hit)}" if hit else None
    raise CompileError(code, f"{what} {keys} in {file}", hint=hint, location=Location(file=file, key=items[0][0]),
                       details=[d for _, d in items])


def _unknown_keys(keys: list[str], file: str, where: str) -> NoReturn:
    items = []
    for k in keys:
        near = _suggest(k)
        items.append((k, f"{k}: did you mean '{near}'?" if near else f"{k}: not a target key"))
    noun = "unknown target key" + ("s" if len(keys) > 1 else "") + where
    _fail("XB401", noun, items, file, set())


def _validate(data: Mapping[str, Any], file: str, *, source: str, overridden: Collection[str] = ()) -> TargetSpec:
    """The four validation stages, in order, then construction."""
    if not isinstance(data, Mapping):
        _fail("XB402", "wrong type for", [("<top level>", f"expected a table, got {_toml_type(data)}")], file, set())
    # 1. unknown keys, all at once
    unknown, flat, bad_types = [], {}, []
    for k, v in data.items():
        if k in _SECTIONS and isinstance(v, Mapping):
            for sub, sv in v.items():
                if f"{k}.{sub}" in _SCHEMA:
                    flat[f"{k}.{sub}"] = sv
                else:
                    unknown.append(f"{k}.{sub}")
        elif k in _SECTIONS:
            bad_types.append((k, f"{k}: expected a table, got {_toml_type(v)}"))
        elif k in _SCHEMA:
            flat[k] = v
        else:
            unknown.append(str(k))
    if unknown:
        _unknown_keys(unknown, file, "")
    # 2. types
    for k, v in flat.items():
        tp = _SCHEMA[k][0]
        if not type_ok(tp, v):
            bad_types.append((k, f"{k}: expected {TYPE_WORDS[tp]}, got {_toml_type(v)} {v!r}"))
    if bad_types:
        _fail("XB402", "wrong type for target key" + "s" * (len(bad_types) > 1), bad_types, file, overridden)
    # 3. missing required keys
    mistyped_sections = {k for k in _SECTIONS if k in data and not isinstance(data[k], Mapping)}
    missing = [(k, f"{k}: required ({KEYS[k]})") for k, (_, f) in _SCHEMA.items()
               if f.default is MISSING and k not in flat and k.partition(".")[0] not in mistyped_sections]
    if missing:
        _fail("XB403", "missing target key" + "s" * (len(missing) > 1), missing, file, overridden)
    # 4. ranges, then combinations
    for k, (tp, f) in _SCHEMA.items():
        if k not in flat and f.default is not MISSING:
            flat[k] = f.default
        elif tp is float:
            flat[k] = float(flat[k])
    bad = [(k, d) for k in _SCHEMA if (d := range_problem(k, flat[k], _SCHEMA[k][1]))]
    bad = bad or _combination_problems(flat)
    if bad:
        _fail("XB404", "bad value for target key" + "s" * (len(bad) > 1), bad, file, overridden)
    sections = {s: cls(**{f.name: flat[f"{s}.{f.name}"] for f in fields(cls)}) for s, cls in _SECTIONS.items()}
    return TargetSpec(name=flat["name"], description=flat["description"], source=source, **sections)


def value_problem(key: str, value: Any) -> str | None:
    """Why ``value`` is not a valid value of the dotted target ``key`` on its own (type, range, choices), or
    None; combinations with other keys are not checked. ``key`` must be in :data:`KEYS`."""
    tp = _SCHEMA[key][0]
    if not type_ok(tp, value):
        return f"{key}: expected {TYPE_WORDS[tp]}, got {_toml_type(value)} {value!r}"
    return range_problem(key, float(value) if tp is float else value, _SCHEMA[key][1])


def _combination_problems(v: dict[str, Any]) -> list[tuple[str, str]]:
    """Values each in range that cannot go together."""
    out = []
    if not v["name"].strip():
        out.append(("name", "name: must not be empty"))
    dac, inp = v["precision.dac_bits"], v["precision.input_bits"]
    if dac > inp:
        out.append(("precision.dac_bits", f"precision.dac_bits = {dac} exceeds precision.input_bits = {inp}"))
    signed, wb, k, cols = v["encoding.signed"], v["precision.weight_bits"], v["crossbar.cell_bits"], v["crossbar.cols"]
    m_c = slices_per_weight(signed, wb, k) * columns_per_slice(signed)
    if m_c > cols:
        why = f"one {signed} {wb}-bit weight on {k}-bit cells needs m_c = {m_c} columns"
        out.append(("crossbar.cols", f"crossbar.cols = {cols} is too few: {why}"))
    if signed == "differential-zero-high" and v["encoding.flip_columns"]:
        why = "flipping a column would store the zeros of differential-zero-high low again"
        out.append(("encoding.flip_columns", f"encoding.flip_columns = true: {why}"))
    out += _fragment_problems(v)
    sa0, sa1 = v["device.sa0_rate"], v["device.sa1_rate"]
    if sa0 + sa1 > 1:
        out.append(("device.sa1_rate", f"device.sa0_rate + device.sa1_rate = {sa0 + sa1} exceeds 1"))
    ratio = v["device.on_off_ratio"]
    if 0 < ratio <= 1:
        why = "G_max / G_min must be above 1 (or 0 for an ideal off state)"
        out.append(("device.on_off_ratio", f"device.on_off_ratio = {ratio}: {why}"))
    return out


def _fragment_problems(v: dict[str, Any]) -> list[tuple[str, str]]:
    """FORMS fragments: ``polarized`` needs ``fragment_rows`` >= 1 dividing the rows, and no column flipping."""
    signed, frag, rows = v["encoding.signed"], v["crossbar.fragment_rows"], v["crossbar.rows"]
    if signed == "polarized" and frag == 0:
        why = "encoding.signed = 'polarized' needs the rows of a fragment (e.g. 8)"
        return [("crossbar.fragment_rows", f"crossbar.fragment_rows = 0: {why}")]
    if frag and rows % frag:
        return [("crossbar.fragment_rows", f"crossbar.fragment_rows = {frag} does not divide crossbar.rows = {rows}")]
    if signed == "polarized" and v["encoding.flip_columns"]:
        why = "a polarized fragment is read alone; flipping is not defined per fragment"
        return [("encoding.flip_columns", f"encoding.flip_columns = true: {why}")]
    return []


def columns_per_slice(signed: str) -> int:
    """Physical columns per weight slice: a differential pair, or one column (offset, polarized magnitudes)."""
    return 1 if signed in ("offset", "polarized") else 2


def slices_per_weight(signed: str, weight_bits: int, cell_bits: int) -> int:
    """Cells per weight: offset stores all bits, the differential and polarized encodings the magnitude (one bit
    less)."""
    return -(-(weight_bits - (signed != "offset")) // cell_bits)
