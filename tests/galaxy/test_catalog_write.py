"""Output catalogs as astronomers' tools read them back: astropy, pandas, pyarrow (and FITS rules)."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from click.testing import CliRunner

from galaxy.catalog.formats import check_kept_columns
from galaxy.catalog.write import CatalogWriter, column_kinds, describe_rows
from galaxy.cli import cli
from galaxy.errors import UsageError
from tests.conftest import EXAMPLES

CLASSES = ("elliptical", "spiral")
OBJID = "588848901537202306"  # an SDSS objid: above 2**53, float64 would make it ...304


def _write(path, rows, extra, keep=()):
    """A catalog of `rows` ((id, path, {column: text})) with the run fingerprint keeping `keep`."""
    metadata = {"model": "m", "run": json.dumps({"weights": "w", "keep": list(keep)})}
    _, lengths = describe_rows(rows)  # as the journal writes: with the longest texts, for astropy
    writer = CatalogWriter(path, CLASSES, metadata, extra=extra, text_lengths=lengths)
    if rows:
        writer.write([r[0] for r in rows], [r[1] for r in rows], np.full((len(rows), 2), 0.5, np.float32),
                     [r[2] for r in rows])
    writer.close()
    return path


def _read(path):
    return Table.read(path, format="ascii.csv") if path.suffix == ".csv" else Table.read(path)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# -- ECSV: every row reads back with astropy -------------------------------------------------------

def test_ecsv_rows_starting_with_hash_and_values_with_newlines_read_back(tmp_path):
    """astropy drops every ECSV line starting with '#', even inside a quoted value: a row whose id
    starts with '#' was lost, and a kept 'x\\n#y' made the file unreadable."""
    notes = ["x\n#y", "plain", "#note", "comma, and \"quote\"", "tab\there", ""]
    ids = ["#weird", "a", "b", " #c", "d", "e"]
    rows = [(i, f"imgs/{i}.jpeg", {"note": n}) for i, n in zip(ids, notes)]
    path = _write(tmp_path / "o.ecsv", rows, (("note", "text"),))
    table = Table.read(path)
    assert len(table) == 6
    assert list(table["id"]) == ["#weird", "a", "b", "#c", "d", "e"]  # astropy strips the leading space itself
    assert list(table["path"])[0] == "imgs/#weird.jpeg"
    # one physical line per row: control characters are written as \xNN, as FITS writes them
    assert list(table["note"].filled(""))[:5] == ["x\\x0a#y", "plain", "#note", "comma, and \"quote\"", "tab\\x09here"]
    assert table["note"].mask[5]  # an empty cell is a missing value, as in CSV
    assert table.meta["model"] == "m"


# -- kinds: whole numbers are int64, with every digit -----------------------------------------------

def test_whole_numbers_make_int_columns_and_other_numbers_float_ones():
    rows = [{"objid": "1", "z": "0.1", "n": "9007199254740992", "m": "1e999", "u": "1_000", "d": "١٢", "run": "+756"},
            {"objid": OBJID, "z": "1e-3", "n": "-12.5", "m": "2", "u": "2", "d": "3", "run": ""}]
    assert column_kinds(rows) == [("objid", "int"), ("z", "float"), ("n", "float"), ("m", "text"), ("u", "text"),
                                  ("d", "text"), ("run", "int")]
    # beyond int64 (and its smallest, the FITS missing-value marker), or beyond 2**53 beside a fraction: text
    assert column_kinds([{"a": "9223372036854775808"}, {"a": "1"}]) == [("a", "text")]
    assert column_kinds([{"a": "-9223372036854775808"}]) == [("a", "text")]
    assert column_kinds([{"a": "-9223372036854775807"}]) == [("a", "int")]
    assert column_kinds([{"a": OBJID}, {"a": "0.5"}]) == [("a", "text")]
    assert column_kinds([{"a": "9007199254740992"}, {"a": "nan"}]) == [("a", "float")]
    # a missing value beside numbers beyond 2**53: text, as astropy and pandas read a Parquet null int as float64
    assert column_kinds([{"a": OBJID}, {"a": ""}, {"b": "9007199254740992"}, {"b": ""}]) == [("a", "text"),
                                                                                            ("b", "int")]
    assert column_kinds([{"a": "007"}, {"a": "12"}, {"b": ""}]) == [("a", "text"), ("b", "text")]
    # more digits than float64 holds: text, every digit kept (they came back as 3.141592653589793, 1.0)
    for digits in ("3.14159265358979323846", "1.0000000000000001", "123456789.123456789"):
        assert column_kinds([{"a": "0.5"}, {"a": digits}]) == [("a", "text")], digits
    assert column_kinds([{"a": "0.1"}, {"a": "1E5"}, {"a": "-2.50"}, {"a": "1e-300"}, {"a": "inf"}]) == [("a", "float")]


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".parquet", ".csv"])
def test_sdss_objids_come_back_as_int64_with_every_digit(tmp_path, suffix):
    rows = [("a", "a.jpeg", {"objid_copy": OBJID, "z": "0.25", "run": ""}),
            ("b", "b.jpeg", {"objid_copy": "+12", "z": "", "run": "756"})]
    path = _write(tmp_path / f"o{suffix}", rows, column_kinds(r[2] for r in rows))
    table = _read(path)
    objids = table["objid_copy"]
    assert objids.dtype.kind == "i" and objids.dtype.itemsize == 8 and list(objids) == [int(OBJID), 12]
    assert table["z"].dtype.kind == "f" and table["z"][0] == 0.25
    if suffix == ".parquet":  # a null int: Arrow keeps it (astropy and pandas read the column as float64, NaN)
        assert pq.read_table(path).column("run").to_pylist() == [None, 756]
    else:
        assert table["run"].dtype.kind == "i" and table["run"][1] == 756
    if suffix in (".fits", ".ecsv"):  # a missing whole number is a missing value, not 0 or -2**63
        assert bool(table["run"].mask[0]) and not table["run"].mask[1]


def test_a_fits_int_column_is_a_k_column_with_a_null_and_the_input_unit(tmp_path):
    rows = [("a", "a.jpeg", {"objid_copy": OBJID, "run": ""}), ("b", "b.jpeg", {"objid_copy": "1", "run": "756"})]
    path = tmp_path / "o.fits"
    writer = CatalogWriter(path, CLASSES, {"model": "m"}, extra=column_kinds(r[2] for r in rows),
                           units={"run": "count"})
    writer.write(["a", "b"], ["a.jpeg", "b.jpeg"], np.full((2, 2), 0.5, np.float32), [r[2] for r in rows])
    writer.close()
    with fits.open(path) as hdul:
        columns = {c.name: c for c in hdul[1].columns}
        assert columns["objid_copy"].format == "K" and columns["run"].null == -2 ** 63
        assert columns["run"].unit == "count"
        assert int(hdul[1].data["objid_copy"][0]) == int(OBJID)


def test_a_ray_merge_decides_int_columns_over_all_parts_as_one_machine_does(tmp_path):
    """The --ray merge decides kinds over all parts with `column_kinds`: a part of small integers
    and a part holding an objid make one int64 column with the digits kept; a fraction in any part
    makes a float column; a code in any part a text one."""
    from engine.ray_parts import finalize_parts

    parts = []
    for k, values in enumerate([[("1", "1", "7"), ("2", "2", "8")], [(OBJID, "2.5", "007"), ("3", "", "9")]]):
        rows = [(f"r{k}{j}", f"r{k}{j}.jpeg", {"objid_copy": a, "x": b, "code": c}) for j, (a, b, c) in enumerate(values)]
        parts.append(_write(tmp_path / f"part-{k:06d}.parquet", rows, (("objid_copy", "text"), ("x", "text"),
                                                                            ("code", "text"))))
    finalize_parts(parts)
    merged = pq.read_table(tmp_path)
    assert [str(merged.schema.field(n).type) for n in ("objid_copy", "x", "code")] == ["int64", "double", "string"]
    assert merged.column("objid_copy").to_pylist() == [1, 2, int(OBJID), 3]
    assert merged.column("x").to_pylist() == [1.0, 2.0, 2.5, None]
    assert merged.column("code").to_pylist() == ["7", "8", "007", "9"]


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".parquet", ".csv"])
def test_kept_true_false_columns_are_bool_with_their_missing_values(tmp_path, suffix):
    """A FITS logical, Parquet or ECSV bool column was kept as the text 'True'/'False' in every format
    (STILTS could not select on it). Now it is bool (FITS L, a missing value a zero byte), and the
    rows read back for a rerun give each value and each missing one as they were."""
    from galaxy.catalog.written import read_catalog_rows

    assert column_kinds([{"a": "True"}, {"a": ""}, {"a": "False"}]) == [("a", "bool")]
    assert column_kinds([{"a": "True"}, {"a": "1"}]) == [("a", "text")]
    assert column_kinds([{"a": "true"}, {"a": "False"}]) == [("a", "text")]  # not as Python, numpy, astropy write
    rows = [("a", "a.jpeg", {"flag": "True"}), ("b", "b.jpeg", {"flag": ""}), ("c", "c.jpeg", {"flag": "False"})]
    path = _write(tmp_path / f"o{suffix}", rows, column_kinds(r[2] for r in rows))
    if suffix == ".fits":
        with fits.open(path) as hdul:
            assert hdul[1].columns["flag"].format == "L"
    elif suffix == ".parquet":
        assert str(pq.read_table(path).schema.field("flag").type) == "bool"
    elif suffix == ".ecsv":
        assert _read(path)["flag"].dtype == bool
    assert [r["flag"] for r in read_catalog_rows(path)] in (
        [True, None, False], ["True", "", "False"])  # typed formats, text formats


def test_a_ray_merge_makes_a_true_false_column_bool(tmp_path):
    from engine.ray_parts import finalize_parts

    parts = [_write(tmp_path / f"part-{k:06d}.parquet", [(f"r{k}", f"r{k}.jpeg", {"flag": v})], (("flag", "text"),))
             for k, v in enumerate(["True", "", "False"])]
    finalize_parts(parts)
    merged = pq.read_table(tmp_path)
    assert str(merged.schema.field("flag").type) == "bool"
    assert merged.column("flag").to_pylist() == [True, None, False]


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".parquet"])
def test_an_input_catalog_with_array_columns_is_read_and_those_are_not_kept(tmp_path, suffix):
    """An ECSV catalog holding an array column (float64[3]) could not be read at all (a traceback: its
    header was read as a table with no rows, which astropy cannot make of an array column); an array
    kept from FITS or Parquet was written as numpy's 8-digit print of it. Now the catalog is read, its
    scalar columns kept (a FITS logical as bool) and an array column refused, naming it."""
    from astropy.table import MaskedColumn

    files = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    table = Table({"file": [str(f) for f in files], "mag": np.full((3, 5), 17.123456789),
                   "flag": MaskedColumn([True, False, True], mask=[False, False, suffix != ".fits"])})
    table["mag"].unit = "mag"
    catalog = tmp_path / f"in{suffix}"
    table.write(catalog)
    out = tmp_path / "out.fits"
    result = invoke("classify", "--catalog", catalog, "--keep-columns", "flag", "-o", out, "-q",
                    "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    with fits.open(out) as hdul:
        assert hdul[1].columns["flag"].format == "L"
    refused = invoke("classify", "--catalog", catalog, "--keep-columns", "flag,mag", "-o", tmp_path / "o2.csv", "-q")
    assert refused.exit_code == 2 and "column 'mag' holds several values per row" in refused.output


@pytest.mark.parametrize("tform", ["L", "1L"])
def test_a_null_logical_in_a_fits_input_catalog_is_kept_missing(tmp_path, tform):
    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    columns = [fits.Column("file", "80A", array=[str(f) for f in files]), fits.Column("flag", tform, array=[True, False])]
    hdu = fits.BinTableHDU.from_columns(columns)
    np.recarray.field(hdu.data, "flag")[1] = 0  # a null logical: a zero byte (astropy reads it as False)
    catalog = tmp_path / "in.fits"
    hdu.writeto(catalog)
    out = tmp_path / "out.csv"
    assert invoke("classify", "--catalog", catalog, "--keep-columns", "flag", "-o", out, "-q").exit_code == 0
    assert [r.split(",")[-1] for r in out.read_text().splitlines()[1:]] == ["True", ""]


def test_a_float32_column_and_a_nan_float_read_the_same_from_fits_parquet_and_csv(tmp_path):
    """A float32 kept column came out as 17.229999542236328 from Parquet (17.23 from FITS and ECSV), and a
    FITS float's null (NaN) as the text 'nan' where the same cell of a CSV is missing; review of the
    catalogs, session 39."""
    files = [str(f) for f in sorted(EXAMPLES.glob("*.jpeg"))[:2]]
    from astropy.table import MaskedColumn

    table = Table({"file": files, "mag": MaskedColumn(np.array([17.23, 0], np.float32), mask=[False, True]),
                   "z": MaskedColumn([0.1, 0], mask=[False, True])})  # FITS stores the masked floats as NaN
    table.write(tmp_path / "in.fits")
    table.write(tmp_path / "in.parquet")
    (tmp_path / "in.csv").write_text(f"file,mag,z\n{files[0]},17.23,0.1\n{files[1]},,\n")
    rows = {}
    for fmt in ("fits", "parquet", "csv"):
        out = tmp_path / f"out-{fmt}.csv"
        assert invoke("classify", "--catalog", tmp_path / f"in.{fmt}", "--keep-columns", "mag,z", "-o", out,
                      "-q").exit_code == 0
        rows[fmt] = [r.split(",")[-2:] for r in out.read_text().splitlines()[1:]]
    assert rows["fits"] == rows["parquet"] == rows["csv"] == [["17.23", "0.1"], ["", ""]]


# -- kept column names -----------------------------------------------------------------------------

CLASSES = ("elliptical", "spiral")


@pytest.mark.parametrize("names, match", [
    (["Label"], "'label' column"), (["ID"], "'id' column"), (["PATH"], "'path' column"),
    (["p_spiral"], "'p_spiral' column"), (["P_Elliptical"], "'p_elliptical' column"),
    (["z", "Z"], "differ only in case"), (["ra", "RA"], "differ only in case"),
    # alone, a kept ra sat beside the FITS header's dec: a position of neither object
    (["RA", "z"], "cannot keep 'RA' without 'dec'"), (["Dec"], "cannot keep 'Dec' without 'ra'"),
])
def test_kept_names_that_clash_with_output_columns_ignoring_case_are_refused(names, match):
    with pytest.raises(UsageError, match=match):
        check_kept_columns(names, classes=CLASSES)


def test_kept_ra_dec_and_other_names_are_allowed():
    check_kept_columns(["ra", "dec", "redshift", "Redshift (z)", "objid"], classes=CLASSES)
    check_kept_columns(["RA", "Dec"], "fits")  # the sky position, in the catalog's spelling
    check_kept_columns(["P_EL", "P_CS", "p_spiral_votes"], classes=CLASSES)  # Galaxy Zoo's vote fractions
    check_kept_columns(["p_spiral"])  # the classes not known yet: checked once the card is read


def test_a_clash_is_refused_with_exit_2_before_the_engine_is_built(tmp_path, monkeypatch):
    def no_engine(*args, **kwargs):
        raise AssertionError("the engine was built before the kept columns were checked")

    monkeypatch.setattr("engine.run.Runner.for_classify", no_engine)
    files = sorted(EXAMPLES.glob("*.jpeg"))[:2]
    (tmp_path / "c.csv").write_text("file,p_spiral,Label,é\n" + "".join(f"{f},0.5,x,1\n" for f in files))
    for keep in ("p_spiral", "Label", "é"):
        result = invoke("classify", "--catalog", tmp_path / "c.csv", "--keep-columns", keep, "-o", tmp_path / "o.fits",
                        "-q")
        assert result.exit_code == 2, result.output
        assert repr(keep) in result.output
    assert not (tmp_path / "o.fits").exists() and not (tmp_path / "o.fits.partial").exists()


def test_kept_columns_without_a_catalog_are_refused(tmp_path):
    """`classify folder --keep-columns redshift` wrote an all-empty redshift column with exit 0."""
    result = invoke("classify", EXAMPLES, "--keep-columns", "redshift", "-o", tmp_path / "o.csv", "-q")
    assert result.exit_code == 2 and "--keep-columns redshift: kept columns are copied from the rows of --catalog" \
        in result.output
    assert not (tmp_path / "o.csv").exists()


def test_a_kept_ra_in_another_case_replaces_the_header_position_as_a_kept_ra_does(tmp_path):
    """FITS, STILTS and fitsverify take RA and ra for one column: a catalog had both, and tools
    asked for 'ra' got the kept one."""
    rows = [("a", "a.fits", {"RA": "1.0", "ra": "150.0", "dec": "2.0"})]
    path = _write(tmp_path / "o.fits", rows, (("RA", "float"), ("ra", "float"), ("dec", "float")), keep=("RA",))
    table = Table.read(path)
    assert table.colnames[-2:] == ["RA", "dec"] and table["RA"][0] == 1.0
    assert len({name.lower() for name in table.colnames}) == len(table.colnames)


def test_fits_refuses_non_ascii_kept_names_up_front(tmp_path):
    from engine.listing import require_inputs

    with pytest.raises(UsageError, match="'é' in a FITS catalog"):
        check_kept_columns(["Redshift (z)", "é"], "fits")
    with pytest.raises(UsageError, match="in a FITS catalog"):
        check_kept_columns(["x" * 69], "fits")
    check_kept_columns(["é", "x" * 69], "parquet")  # the other formats hold them
    table = tmp_path / "c.csv"
    table.write_text("file,é\n" + f"{min(EXAMPLES.glob('*.jpeg'))},1\n", encoding="utf-8")
    with pytest.raises(UsageError, match="'é' in a FITS catalog"):
        require_inputs(catalog=str(table), keep_columns=("é",), output_format="fits")
    require_inputs(catalog=str(table), keep_columns=("é",), output_format="csv")


def test_a_fits_writer_given_a_non_ascii_name_escapes_it_instead_of_failing_after_the_run(tmp_path):
    path = _write(tmp_path / "o.fits", [("a", "a.jpeg", {"é": "1"})], (("é", "float"),))
    with fits.open(path) as hdul:
        assert hdul[1].columns.names[-1] == "\\xe9" and hdul[1].data["\\xe9"][0] == 1.0
    assert not list(tmp_path.glob(".*"))  # no spool or temporary file left


# -- Parquet: a missing text value reads back empty everywhere ---------------------------------------

def test_parquet_empty_text_is_empty_for_astropy_pandas_and_pyarrow(tmp_path):
    rows = [("a", "a.jpeg", {"zip": "", "z": ""}), ("b", "b.jpeg", {"zip": "None", "z": "1.5"})]
    path = _write(tmp_path / "o.parquet", rows, (("zip", "text"), ("z", "float")))
    table = Table.read(path)
    assert list(table["zip"]) == ["", "None"]  # astropy read a null as the text 'None'
    assert np.isnan(table["z"][0]) and table["z"][1] == 1.5
    assert pq.read_table(path).column("zip").to_pylist() == ["", "None"]
    frame = pd.read_parquet(path)
    assert list(frame["zip"]) == ["", "None"] and np.isnan(frame["z"][0])


# -- every input failed: the kept columns are still there ------------------------------------------

@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".parquet", ".csv"])
def test_a_catalog_without_rows_has_its_kept_columns(tmp_path, suffix):
    table = _read(_write(tmp_path / f"o{suffix}", [], (), keep=("z", "note")))
    assert table.colnames == ["id", "path", "p_elliptical", "p_spiral", "label", "z", "note"] and len(table) == 0


def test_a_run_where_every_input_fails_keeps_the_kept_columns(tmp_path):
    (tmp_path / "c.csv").write_text("file,z\nmissing1.jpeg,0.1\nmissing2.jpeg,0.2\n")
    out = tmp_path / "o.fits"
    result = invoke("classify", "--catalog", tmp_path / "c.csv", "--keep-columns", "z", "-o", out, "-q",
                    "--backend", "onnxruntime")
    assert result.exit_code == 3, result.output  # 3: some inputs failed
    table = Table.read(out)
    assert len(table) == 0 and table.colnames[-1] == "z"


def test_csv_catalogs_and_errors_files_end_lines_as_unix_tools_expect(tmp_path):
    """Lines ended in \\r\\n (Python's csv default): `awk -F, '$5=="spiral"'` found no row."""
    rows = [("a", "a.jpeg", {"z": "0.5"})]
    path = _write(tmp_path / "o.csv", rows, column_kinds(r[2] for r in rows))
    assert b"\r" not in path.read_bytes() and path.read_bytes().count(b"\n") == 2
    from galaxy.catalog.write import ErrorWriter

    errors = ErrorWriter(tmp_path / "e.csv")
    errors.write("a", "a.jpeg", "decode", "truncated")
    errors.close()
    assert b"\r" not in (tmp_path / "e.csv").read_bytes()


@pytest.mark.parametrize("suffix", [".csv", ".fits"])
def test_an_exact_tie_goes_to_the_first_class(tmp_path, suffix):
    """The README's rule: the label is the class of the higher probability, an exact tie the first
    class's (elliptical); int8 gives exact 0.5s (two on the validation split)."""
    path = tmp_path / f"t{suffix}"
    writer = CatalogWriter(path, CLASSES, {"model": "m"})
    writer.write(["tie", "spiral"], ["a.jpeg", "b.jpeg"], np.array([[0.5, 0.5], [0.4999, 0.5001]], np.float32))
    writer.close()
    assert list(_read(path)["label"]) == ["elliptical", "spiral"]
