"""Target descriptions: loading, derived quantities, fingerprints, overrides and every XB4xx error."""

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xbcompiler.diagnostics import CompileError
from xbcompiler.target import (
    KEYS,
    CostSpec,
    TargetSpec,
    list_targets,
    load_target,
    parse_override,
    target_from_dict,
)

TINY = """\
schema = 1
name = "t"
[crossbar]
rows = 16
cols = 16
cell_bits = 2
[precision]
weight_bits = 4
input_bits = 4
dac_bits = 1
adc_bits = 6
[encoding]
signed = "differential"
[hierarchy]
tiles = 2
crossbars_per_tile = 2
"""


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path_or_name, overrides=None) -> CompileError:
    with pytest.raises(CompileError) as info:
        load_target(path_or_name, overrides)
    return info.value


def assert_names(err: CompileError, key: str, file: str) -> None:
    assert key in err.message and file in err.message
    assert err.location.key == key and file in err.location.file


# ---- built-ins -----------------------------------------------------------------------------------

def test_builtins_are_found_through_entry_points():
    assert {"isaac-like", "prime-like", "tiny"} <= set(list_targets())
    assert all(p.suffix == ".toml" and p.is_file() for p in list_targets().values())


@pytest.mark.parametrize("name,m_c,logical,slices,cycles,chip", [
    ("isaac-like", 8, 16, 8, 16, 168 * 96),
    ("prime-like", 4, 64, 2, 3, 64 * 64),
    ("tiny", 4, 4, 2, 4, 16 * 8),
])
def test_builtin_derived_quantities(name, m_c, logical, slices, cycles, chip):
    t = load_target(name)
    assert (t.name, t.source) == (name, f"builtin:{name}")
    assert (t.m_c, t.logical_cols, t.weight_slices, t.input_cycles, t.crossbars_per_chip) == \
        (m_c, logical, slices, cycles, chip)


def test_builtin_exact_values():
    isaac, prime, tiny = (load_target(n) for n in ("isaac-like", "prime-like", "tiny"))
    assert (isaac.crossbar.rows, isaac.crossbar.cols, isaac.crossbar.cell_bits) == (128, 128, 2)
    assert dataclasses.astuple(isaac.precision) == (16, 16, 1, 8)
    assert (isaac.encoding.signed, isaac.encoding.flip_columns) == ("offset", True)
    assert dataclasses.astuple(isaac.hierarchy) == (168, 96, 1)  # one chip unless hierarchy.chips says more
    assert dataclasses.astuple(prime.crossbar) == (256, 256, 4, 0)  # no FORMS fragments
    assert dataclasses.astuple(prime.precision) == (8, 8, 3, 6)
    assert (prime.encoding.signed, prime.adc.mode) == ("differential", "calibrated")
    assert dataclasses.astuple(prime.hierarchy) == (64, 64, 1)
    assert dataclasses.astuple(tiny.crossbar) == (16, 16, 2, 0)
    assert dataclasses.astuple(tiny.precision) == (4, 4, 1, 6)
    assert tiny.encoding.signed == "differential" and dataclasses.astuple(tiny.hierarchy) == (16, 8, 1)
    assert tiny.costs == CostSpec() and tiny.adc.output_bits == 0


def test_load_by_path_and_defaults(tmp_path):
    path = write(tmp_path, TINY, "mine.toml")
    t = load_target(path)
    assert t.source == str(path) and load_target(str(path)) == t
    assert t.description == "" and t.encoding.flip_columns is False
    assert t.encoding.input_signed == "twos-complement"
    assert dataclasses.astuple(t.adc) == ("fixed", "nearest-even", True, 0)
    assert t.costs.adc_conversion_pj == 2.0 and t.costs.tile_area_um2 == 50000.0


def test_ints_accepted_for_floats(tmp_path):
    t = load_target(write(tmp_path, TINY + "[costs]\nphase_ns = 50\n"))
    assert t.costs.phase_ns == 50.0 and isinstance(t.costs.phase_ns, float)


# ---- derived quantities --------------------------------------------------------------------------

@pytest.mark.parametrize("rows,d,k,bits", [(128, 1, 2, 9), (256, 1, 2, 10), (256, 3, 4, 15), (64, 1, 1, 7)])
def test_lossless_adc_bits_spec_examples(rows, d, k, bits):
    t = load_target("tiny", {"crossbar.rows": max(rows, 16), "crossbar.cell_bits": k,
                             "precision.dac_bits": d, "precision.input_bits": 4})
    assert t.lossless_adc_bits(rows) == bits
    assert t.with_overrides({"encoding.flip_columns": True}).lossless_adc_bits(rows) == bits - 1


def test_isaac_column_flipping_saves_one_bit():
    isaac = load_target("isaac-like")
    assert isaac.lossless_adc_bits(128) == 8
    assert isaac.with_overrides({"encoding.flip_columns": False}).lossless_adc_bits(128) == 9


def test_m_c_offset_and_differential():
    t = load_target("tiny", {"precision.weight_bits": 8, "crossbar.cell_bits": 3})
    assert (t.weight_slices, t.m_c) == (3, 6)  # ceil(7/3) = 3 magnitude slices, two columns each
    t = t.with_overrides({"encoding.signed": "offset"})
    assert (t.weight_slices, t.m_c, t.logical_cols) == (3, 3, 5)  # ceil(8/3)


# ---- fingerprint, dict round trip, get -----------------------------------------------------------

def test_fingerprint_stable_and_sensitive():
    a, b = load_target("tiny"), load_target("tiny")
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 64
    assert a.with_overrides({"crossbar.rows": 32}).fingerprint() != a.fingerprint()
    assert a.with_overrides({"costs.phase_ns": 99.0}).fingerprint() != a.fingerprint()
    # the source is not part of the fingerprint
    assert target_from_dict(a.to_dict()).fingerprint() == a.fingerprint()


def test_to_dict_is_canonical():
    d = load_target("isaac-like").to_dict()
    assert d["schema"] == 1 and "source" not in d
    assert set(d) == {"schema", "name", "description", "crossbar", "precision", "encoding", "adc",
                      "hierarchy", "costs"}  # an ideal [device] section is left out
    assert "fragment_rows" not in d["crossbar"]  # left out at 0, so the fingerprints of older targets stand
    assert "chips" not in d["hierarchy"]  # left out at 1, likewise
    d = load_target("isaac-like", {"device.sa1_rate": 0.01, "compensation.write_verify_pulses": 1,
                                   "crossbar.fragment_rows": 8, "hierarchy.chips": 2}).to_dict()
    assert {f"{s}.{k}" for s, v in d.items() if isinstance(v, dict) for k in v} | \
        {k for k, v in d.items() if not isinstance(v, dict)} == set(KEYS)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(8, 1024), cols=st.integers(8, 1024), cell=st.integers(1, 8), wb=st.integers(2, 16),
       ib=st.integers(1, 16), dac=st.integers(1, 8), adc=st.integers(1, 16), signed=st.sampled_from(["differential", "offset"]),
       flip=st.booleans(), out_bits=st.integers(0, 32), phase=st.floats(0, 1e6))
def test_round_trip(rows, cols, cell, wb, ib, dac, adc, signed, flip, out_bits, phase):
    data = load_target("tiny").to_dict()
    data["crossbar"] = {"rows": rows, "cols": cols, "cell_bits": cell}
    data["precision"] = {"weight_bits": wb, "input_bits": ib, "dac_bits": min(dac, ib), "adc_bits": adc}
    data["encoding"] = {"signed": signed, "flip_columns": flip}
    data["adc"] = {"output_bits": out_bits}
    data["costs"] = {"phase_ns": phase}
    try:
        t = target_from_dict(data)
    except CompileError as err:  # only m_c > cols may reject a drawn combination
        assert err.code == "XB404" and err.location.key == "crossbar.cols"
        return
    again = target_from_dict(t.to_dict())
    assert again == t and again.to_dict() == t.to_dict() and again.fingerprint() == t.fingerprint()
    assert t.logical_cols >= 1


def test_get():
    t = load_target("prime-like")
    assert t.get("crossbar.rows") == 256 and t.get("adc.mode") == "calibrated"
    assert t.get("name") == "prime-like" and t.get("schema") == 1
    with pytest.raises(CompileError) as info:
        t.get("crossbar.rowz")
    assert info.value.code == "XB401" and "crossbar.rows" in str(info.value)


def test_specs_are_frozen():
    t = load_target("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.crossbar.rows = 32  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.name = "x"  # type: ignore[misc]
    assert isinstance(t, TargetSpec)


# ---- overrides -----------------------------------------------------------------------------------

def test_overrides_dict():
    t = load_target("isaac-like", {"crossbar.rows": 256, "encoding.signed": "differential", "name": "x"})
    assert (t.crossbar.rows, t.encoding.signed, t.name, t.source) == (256, "differential", "x", "builtin:isaac-like")
    assert t.m_c == 16 and load_target("isaac-like").crossbar.rows == 128


def test_overrides_can_add_optional_sections(tmp_path):
    t = load_target(write(tmp_path, TINY), {"adc.mode": "lossless", "costs.phase_ns": 10})
    assert t.adc.mode == "lossless" and t.costs.phase_ns == 10.0


@pytest.mark.parametrize("text,expected", [
    ("crossbar.rows=256", ("crossbar.rows", 256)),
    (" encoding.flip_columns = true ", ("encoding.flip_columns", True)),
    ('name="x y"', ("name", "x y")),
    ("encoding.signed=differential", ("encoding.signed", "differential")),
    ("costs.phase_ns=1.5", ("costs.phase_ns", 1.5)),
    ("description=a=b", ("description", "a=b")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_parse_override_feeds_load_target():
    t = load_target("tiny", dict(map(parse_override, ["crossbar.rows=64", "adc.rounding=floor"])))
    assert (t.crossbar.rows, t.adc.rounding) == (64, "floor")


@pytest.mark.parametrize("text", ["crossbar.rows", "=5", "crossbar.rows=", "bad key=1", "a..b=1", ""])
def test_parse_override_malformed_is_xb407(text):
    with pytest.raises(CompileError) as info:
        parse_override(text)
    assert info.value.code == "XB407"


def test_override_unknown_key_is_xb401():
    err = error_of("tiny", {"crossbar.rowz": 1, "adc.mod": "fixed"})
    assert err.code == "XB401" and "overrides" in err.message and "builtin" not in err.message
    assert "crossbar.rowz: did you mean 'crossbar.rows'?" in err.details
    assert "adc.mod: did you mean 'adc.mode'?" in err.details


def test_override_bad_value_names_key_file_and_override():
    err = error_of("tiny", {"crossbar.rows": 4})
    assert err.code == "XB404" and "crossbar.rows" in err.message and "tiny.toml" in err.message
    assert "override" in err.hint


# ---- errors --------------------------------------------------------------------------------------

def test_unknown_name_is_xb406():
    err = error_of("isaac")
    assert err.code == "XB406" and "isaac-like" in err.hint
    assert all(n in err.details[0] for n in ("isaac-like", "prime-like", "tiny"))


def test_missing_file_is_xb001(tmp_path):
    err = error_of(tmp_path / "nope.toml")
    assert err.code == "XB001" and "nope.toml" in err.message
    assert error_of("nope/missing.toml").code == "XB001"


def test_malformed_toml_is_xb405(tmp_path):
    path = write(tmp_path, 'schema = 1\nname = "x\n')
    err = error_of(path)
    assert err.code == "XB405" and "bad.toml" in err.message and "line 2" in err.message
    assert err.details and err.details[0].startswith("line 2, column")


def test_unknown_keys_reported_together_with_suggestions(tmp_path):
    text = TINY.replace("rows = 16", "rowz = 16").replace("[hierarchy]", "[hierarchy]\ntile = 3") + \
        "[crossbr]\nrows = 1\n[costs]\nadc_conversion = 1.0\n"
    err = error_of(write(tmp_path, "colour = 1\n" + text))
    assert err.code == "XB401" and "bad.toml" in err.message and "bad.toml" in err.location.file
    assert all(k in err.message for k in ("crossbar.rowz", "hierarchy.tile", "crossbr", "costs.adc_conversion"))
    assert "crossbar.rowz: did you mean 'crossbar.rows'?" in err.details
    assert "hierarchy.tile: did you mean 'hierarchy.tiles'?" in err.details
    assert "crossbr: did you mean 'crossbar'?" in err.details
    assert "costs.adc_conversion: did you mean 'costs.adc_conversion_pj'?" in err.details
    assert "colour: not a target key" in err.details
    assert len(err.details) == 5


def test_misplaced_key_suggests_its_section(tmp_path):
    err = error_of(write(tmp_path, TINY.replace("adc_bits = 6", "adc_bits = 6\nrows = 3")))
    assert "precision.rows: did you mean 'crossbar.rows'?" in err.details


def test_unknown_key_wins_over_wrong_type(tmp_path):
    text = TINY.replace("rows = 16", 'rows = "16"').replace("cell_bits = 2", "cell_bits = 2\ncolz = 1")
    err = error_of(write(tmp_path, text))
    assert err.code == "XB401" and "crossbar.colz" in err.message


@pytest.mark.parametrize("old,new,key", [
    ("rows = 16", 'rows = "16"', "crossbar.rows"),
    ("rows = 16", "rows = 16.0", "crossbar.rows"),
    ("rows = 16", "rows = true", "crossbar.rows"),
    ("schema = 1", 'schema = "1"', "schema"),
    ('name = "t"', "name = 3", "name"),
    ('signed = "differential"', "signed = 1", "encoding.signed"),
    ("[hierarchy]", "[adc]\ncompensate_bias = 1\n[hierarchy]", "adc.compensate_bias"),
    ("[hierarchy]", "[costs]\nphase_ns = true\n[hierarchy]", "costs.phase_ns"),
    ("[hierarchy]", "[costs]\nphase_ns = '1'\n[hierarchy]", "costs.phase_ns"),
])
def test_wrong_type_is_xb402(tmp_path, old, new, key):
    err = error_of(write(tmp_path, TINY.replace(old, new, 1)))
    assert err.code == "XB402"
    assert_names(err, key, "bad.toml")


def test_section_not_a_table_is_xb402(tmp_path):
    err = error_of(write(tmp_path, "crossbar = 3\n" + TINY.split("[crossbar]")[0] + "[precision]" +
                         TINY.split("[precision]")[1]))
    assert err.code == "XB402"
    assert_names(err, "crossbar", "bad.toml")


def test_wrong_type_wins_over_missing(tmp_path):
    err = error_of(write(tmp_path, TINY.replace("rows = 16", 'rows = "16"').replace("cols = 16\n", "")))
    assert err.code == "XB402"


@pytest.mark.parametrize("drop,key", [
    ("schema = 1\n", "schema"),
    ('name = "t"\n', "name"),
    ("cell_bits = 2\n", "crossbar.cell_bits"),
    ("adc_bits = 6\n", "precision.adc_bits"),
    ('signed = "differential"\n', "encoding.signed"),
    ("crossbars_per_tile = 2\n", "hierarchy.crossbars_per_tile"),
])
def test_missing_key_is_xb403(tmp_path, drop, key):
    err = error_of(write(tmp_path, TINY.replace(drop, "")))
    assert err.code == "XB403"
    assert_names(err, key, "bad.toml")


def test_missing_section_reports_all_its_keys(tmp_path):
    err = error_of(write(tmp_path, TINY.split("[hierarchy]")[0]))
    assert err.code == "XB403"
    assert "hierarchy.tiles" in err.message and "hierarchy.crossbars_per_tile" in err.message


def test_missing_wins_over_range(tmp_path):
    err = error_of(write(tmp_path, TINY.replace("rows = 16", "rows = 2").replace("cols = 16\n", "")))
    assert err.code == "XB403"


@pytest.mark.parametrize("old,new,key", [
    ("schema = 1", "schema = 2", "schema"),
    ("rows = 16", "rows = 4", "crossbar.rows"),
    ("cols = 16", "cols = 2048", "crossbar.cols"),
    ("cell_bits = 2", "cell_bits = 9", "crossbar.cell_bits"),
    ("weight_bits = 4", "weight_bits = 1", "precision.weight_bits"),
    ("adc_bits = 6", "adc_bits = 0", "precision.adc_bits"),
    ("adc_bits = 6", "adc_bits = 17", "precision.adc_bits"),
    ('signed = "differential"', 'signed = "bipolar"', "encoding.signed"),
    ('signed = "differential"', 'signed = "polarized"', "crossbar.fragment_rows"),  # polarized needs fragments
    ("cell_bits = 2", "cell_bits = 2\nfragment_rows = 3", "crossbar.fragment_rows"),  # 3 does not divide 16
    ("tiles = 2", "tiles = 0", "hierarchy.tiles"),
    ("[hierarchy]", "[adc]\nmode = 'ideal'\n[hierarchy]", "adc.mode"),
    ("[hierarchy]", "[adc]\noutput_bits = 33\n[hierarchy]", "adc.output_bits"),
    ("[hierarchy]", "[costs]\nadc_conversion_pj = -1.0\n[hierarchy]", "costs.adc_conversion_pj"),
    ("[hierarchy]", "[costs]\nphase_ns = inf\n[hierarchy]", "costs.phase_ns"),
    ("[hierarchy]", "[costs]\nphase_ns = nan\n[hierarchy]", "costs.phase_ns"),
    ('name = "t"', 'name = " "', "name"),
    ("dac_bits = 1", "dac_bits = 5", "precision.dac_bits"),  # dac_bits > input_bits
])
def test_out_of_range_is_xb404(tmp_path, old, new, key):
    err = error_of(write(tmp_path, TINY.replace(old, new, 1)))
    assert err.code == "XB404"
    assert_names(err, key, "bad.toml")


def test_enum_error_suggests_nearest(tmp_path):
    err = error_of(write(tmp_path, TINY.replace('"differential"', '"diferential"')))
    assert err.code == "XB404" and "did you mean 'differential'" in err.details[0]


def test_schema_version_is_xb404_naming_schema(tmp_path):
    err = error_of(write(tmp_path, TINY.replace("schema = 1", "schema = 2")))
    assert err.code == "XB404" and err.location.key == "schema" and "schema" in err.message


def test_no_logical_column_fits_is_xb404(tmp_path):
    # 16-bit differential weights on 1-bit cells need 2 * 15 = 30 columns; a 16-column array has 16
    text = TINY.replace("weight_bits = 4", "weight_bits = 16").replace("cell_bits = 2", "cell_bits = 1")
    err = error_of(write(tmp_path, text))
    assert err.code == "XB404"
    assert_names(err, "crossbar.cols", "bad.toml")
    assert "30" in err.details[0]
    assert load_target(write(tmp_path, text.replace("cols = 16", "cols = 32"), "ok.toml")).logical_cols == 1


def test_all_range_errors_reported_together(tmp_path):
    err = error_of(write(tmp_path, TINY.replace("rows = 16", "rows = 4").replace("tiles = 2", "tiles = 0")))
    assert err.code == "XB404" and len(err.details) == 2
    assert "crossbar.rows" in err.message and "hierarchy.tiles" in err.message


def test_target_from_dict_errors_name_the_given_file():
    data = load_target("tiny").to_dict()
    data["crossbar"]["rows"] = 4
    with pytest.raises(CompileError) as info:
        target_from_dict(data, file="given.toml")
    assert info.value.code == "XB404"
    assert_names(info.value, "crossbar.rows", "given.toml")


# ---- documentation -------------------------------------------------------------------------------

def test_every_key_is_documented():
    docs = (Path(__file__).parents[1] / "docs" / "targets.md").read_text()
    missing = [k for k in KEYS if f"`{k.rpartition('.')[2]}`" not in docs]
    assert not missing


def test_builtin_files_are_commented():
    for path in list_targets().values():
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith(("#", "description")):
                assert "#" in line, (path.name, line)


def test_polarized_needs_fragments_and_no_flipping():
    """FORMS: ``polarized`` stores one column per slice (m_c = S) and refuses column flipping (XB404)."""
    t = load_target("isaac-like", {"encoding.signed": "polarized", "crossbar.fragment_rows": 8,
                                   "encoding.flip_columns": False, "precision.weight_bits": 8})
    assert (t.weight_slices, t.m_c) == (4, 4) and t.to_dict()["crossbar"]["fragment_rows"] == 8
    err = error_of("isaac-like", {"encoding.signed": "polarized", "crossbar.fragment_rows": 8})
    assert err.code == "XB404" and err.location.key == "encoding.flip_columns"
    # other encodings ignore fragment_rows, but it must still divide the rows
    assert load_target("tiny", {"crossbar.fragment_rows": 4}).crossbar.fragment_rows == 4
    assert error_of("tiny", {"crossbar.fragment_rows": 5}).location.key == "crossbar.fragment_rows"
