"""Reading catalogs back exactly: galaxy's own outputs (what a rerun resumes from) and input catalogs."""

import csv
import io
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from galaxy.catalog.column_notes import column_descriptions, column_units
from galaxy.catalog.read import read_input_catalog
from galaxy.catalog.written import read_catalog_rows
from galaxy.catalog.write import CatalogWriter
from galaxy.errors import UsageError
from tests.conftest import EXAMPLES

CLASSES = ("elliptical", "spiral")
# Lines of these values start with `#` in a CSV/ECSV file: data, not comments.
IDS = ["#weird", "plain", "#2"]
PATHS = ["imgs/#weird.jpeg", "imgs/plain.jpeg", "#/x.jpeg"]
NOTES = ["x\n#y", "#note", " spaced "]


def _write(path, fmt=None):
    writer = CatalogWriter(path, CLASSES, {"model": "m"}, fmt, extra=[("note", "text"), ("v", "float")])
    writer.write(IDS, PATHS, np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]]),
                 [{"note": n, "v": str(k)} for k, n in enumerate(NOTES)])
    writer.close()
    return path


def test_csv_lines_starting_with_hash_are_rows(tmp_path):
    """Every line starting with `#` was dropped: a `#weird` id and the second line of "x\\n#y"
    (which then swallowed the following rows into one cell on a resume)."""
    rows = list(read_catalog_rows(_write(tmp_path / "c.csv")))
    assert [(r["id"], r["path"], r["note"], r["v"]) for r in rows] == list(zip(IDS, PATHS, NOTES, ["0", "1", "2"]))


def test_ecsv_rows_starting_with_hash_are_rows(tmp_path):
    """Only ECSV's leading block of `#` lines is its header; galaxy's ECSV rows (those of
    catalogs already on disk too: csv.writer after the header) can start with `#` anywhere."""
    header = io.StringIO()
    Table({"id": [""], "path": [""], "p_elliptical": [0.0], "p_spiral": [0.0], "label": [""], "note": [""]})[:0].write(
        header, format="ascii.ecsv", delimiter=",")
    path = tmp_path / "old.ecsv"
    with open(path, "w", newline="") as fh:
        fh.write(header.getvalue())
        csv.writer(fh, lineterminator="\n").writerows(
            [i, p, "0.250000", "0.750000", "spiral", n] for i, p, n in zip(IDS, PATHS, NOTES))
    rows = list(read_catalog_rows(path))
    assert [(r["id"], r["path"], r["note"]) for r in rows] == list(zip(IDS, PATHS, NOTES))
    written = list(read_catalog_rows(_write(tmp_path / "c.ecsv")))  # however the writer spells them
    assert [(r["id"], r["path"], r["v"]) for r in written] == list(zip(IDS, PATHS, ["0", "1", "2"]))
    assert [r["note"] for r in written][1:] == NOTES[1:]


@pytest.mark.parametrize("suffix", [".csv", ".ecsv"])
def test_rerun_of_a_catalog_with_hash_lines_leaves_it_unchanged(tmp_path, suffix):
    """A rerun reads the finished catalog back (Journal._import_output) and writes it again: with
    `#` lines dropped, 350 of 401 rows of a real catalog changed. Now it is the same catalog."""
    from engine.run import classify
    from galaxy.config import ClassifyConfig

    images = tmp_path / "imgs"
    images.mkdir()
    sources = sorted(EXAMPLES.glob("*.jpeg"))[:4]
    names = ["#weird.jpeg", "a.jpeg", "b.jpeg", "c.jpeg"]
    for name, source in zip(names, sources):
        (images / name).symlink_to(source)
    catalog = tmp_path / "in.csv"
    with open(catalog, "w", newline="") as fh:
        csv.writer(fh).writerows([("file", "objid", "note", "v"), (f"imgs/{names[0]}", "#1", "x\n#y", "1"),
                                  (f"imgs/{names[1]}", "", "#starts", "2"), (f"imgs/{names[2]}", "b", "plain", "3"),
                                  (f"imgs/{names[3]}", "c", " spaced ", "4")])
    out = tmp_path / f"out{suffix}"
    config = ClassifyConfig((), str(out), catalog=str(catalog), keep_columns=("note", "v"), backend="onnxruntime",
                            progress=False)
    assert classify(config).classified == 4
    first = list(read_catalog_rows(out))
    again = classify(config)
    assert (again.classified, again.resumed) == (0, 4)
    assert list(read_catalog_rows(out)) == first
    assert [r["id"] for r in first] == ["#1", "a", "b", "c"] and [r["v"] for r in first] == ["1", "2", "3", "4"]
    if suffix == ".csv":
        assert [r["note"] for r in first] == ["x\n#y", "#starts", "plain", " spaced "]


def test_missing_values_of_typed_catalogs_are_empty(tmp_path):
    """A Parquet null read as 'None' (a null path became a file named None), an ECSV masked cell as
    '--', a FITS TNULL sentinel as data. Each is missing, as an empty CSV cell is."""
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"file": ["a.jpeg", None], "objid": ["1", None], "note": [None, "n"],
                             "z": pa.array([None, 0.5], pa.float64())}), parquet)
    assert list(read_input_catalog(parquet, keep=("note", "z"))) == [
        (str(tmp_path / "a.jpeg"), "1", {"note": "", "z": ""}), ("", None, {"note": "n", "z": "0.5"})]

    ecsv = tmp_path / "c.ecsv"
    Table({"file": ["a.jpeg", "b.jpeg"], "z": MaskedColumn([0.5, 1.0], mask=[True, False]),
           "zip": MaskedColumn(["007", "x"], mask=[False, True])}).write(ecsv)
    assert [r[2] for r in read_input_catalog(ecsv, keep=("z", "zip"))] == [{"z": "", "zip": "007"},
                                                                             {"z": "1.0", "zip": ""}]

    table = fits.BinTableHDU.from_columns([
        fits.Column("file", "8A", array=["a.jpeg", "b.jpeg"]),
        fits.Column("nobs", "J", array=[5, 999999], null=999999),
        fits.Column("grp", "K", array=[-1, 3], null=-1),
        fits.Column("u", "I", array=[32767, 7], null=-1, bzero=32768)])  # TNULL is of the stored value: -1
    table.writeto(tmp_path / "c.fits")
    assert [r[2] for r in read_input_catalog(tmp_path / "c.fits", keep=("nobs", "grp", "u"))] == [
        {"nobs": "5", "grp": "", "u": ""}, {"nobs": "", "grp": "3", "u": "7"}]


def test_astropys_masked_parquet_columns_are_missing_not_their_fill_values(tmp_path):
    """astropy writes a masked column z as z plus a boolean z.mask: a masked redshift came out as its
    fill value 0.0, and `--keep-columns z.mask` was taken for a column of the catalog."""
    parquet = tmp_path / "c.parquet"
    Table({"file": ["a.jpeg", "b.jpeg"], "z": MaskedColumn([0.5, 0.0], mask=[False, True]),
           "note": MaskedColumn(["x", "y"], mask=[True, False])}).write(parquet)
    assert "z.mask" in pq.ParquetFile(parquet).schema_arrow.names  # how astropy stores the mask
    assert [r[2] for r in read_input_catalog(parquet, keep=("z", "note"))] == [{"z": "0.5", "note": ""},
                                                                                {"z": "", "note": "y"}]
    with pytest.raises(UsageError, match=r"has no column 'z.mask' to keep; columns are \['file', 'z', 'note'\]"):
        list(read_input_catalog(parquet, keep=("z.mask",)))


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM, which became part of the first column's name."""
    path = tmp_path / "excel.csv"
    path.write_bytes("file,objid,é\na.jpeg,1,ü\n".encode("utf-8-sig"))
    assert list(read_input_catalog(path, keep=("é",))) == [(str(tmp_path / "a.jpeg"), "1", {"é": "ü"})]


def test_units_come_from_the_table_hdu_the_rows_come_from(tmp_path):
    path = tmp_path / "c.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("file", "8A", array=["a.jpeg"]),
                                           fits.Column("mag_r", "E", array=[17.5], unit="mag")])
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2), np.float32)), table]).writeto(path)
    assert list(read_input_catalog(path, keep=("mag_r",)))[0][2] == {"mag_r": "17.5"}
    assert column_units(path, ["mag_r"]) == {"mag_r": "mag"}


def test_fits_descriptions_come_from_tcomm_else_the_ttype_comment(tmp_path):
    path = tmp_path / "c.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("file", "8A", array=["a.jpeg"]),
                                           fits.Column("mag_r", "E", array=[17.5]), fits.Column("z", "E", array=[0.1]),
                                           fits.Column("flag", "J", array=[0])])
    table.header["TCOMM2"] = "Petrosian magnitude, r band"
    table.header.comments["TTYPE2"] = "r mag (shortened)"
    table.header.comments["TTYPE3"] = "redshift"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 2), np.float32)), table]).writeto(path)
    assert column_descriptions(path, ["mag_r", "z", "flag"]) == {"mag_r": "Petrosian magnitude, r band", "z": "redshift"}
    assert column_descriptions(path, ["z"]) == {"z": "redshift"} and column_descriptions(path, []) == {}


def test_boilerplate_ttype_comments_are_not_descriptions(tmp_path):
    """STILTS and CFITSIO write "label for column 2" / "label for field 2" as the TTYPEn comment: it
    became the kept column's description, made-up text the README says is never written."""
    path = tmp_path / "c.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("file", "8A", array=["a.jpeg"]),
                                           fits.Column("z", "E", array=[0.1]), fits.Column("w", "E", array=[0.2])])
    table.header.comments["TTYPE2"] = "label for column 2"
    table.header.comments["TTYPE3"] = "label for field   3"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    assert column_descriptions(path, ["z", "w"]) == {}


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".parquet"])
def test_what_astropy_writes_gives_the_descriptions_and_units(tmp_path, suffix):
    """astropy keeps a FITS column's description only in its serialized-columns COMMENT block, and a
    Parquet column's unit in its YAML header: both were dropped from the kept columns."""
    path = tmp_path / f"c{suffix}"
    table = Table({"file": ["a.jpeg"], "z": [0.1], "r50": [2.5], "flag": [0]})
    table["z"].description = "spectroscopic redshift"
    table["r50"].unit, table["r50"].description = "arcsec", "Petrosian half-light radius"
    table.write(path)
    assert column_descriptions(path, ["z", "r50", "flag"]) == {"z": "spectroscopic redshift",
                                                               "r50": "Petrosian half-light radius"}
    assert column_units(path, ["z", "r50", "flag"]) == {"r50": "arcsec"}


@pytest.mark.parametrize("suffix", [".ecsv", ".parquet"])
def test_ecsv_and_parquet_descriptions_are_astropys(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    table = Table({"file": ["a.jpeg"], "z": [0.1], "flag": [0]})
    table["z"].description = "spectroscopic redshift: é"
    table.write(path)
    assert column_descriptions(path, ["z", "flag"]) == {"z": "spectroscopic redshift: é"}


def test_a_parquet_fields_description_is_read_and_a_csv_has_none(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"file": ["a.jpeg"], "z": [0.1]}).cast(pa.schema([
        pa.field("file", pa.string()), pa.field("z", pa.float64(), metadata={"description": "redshift"})])), path)
    assert column_descriptions(path, ["z"]) == {"z": "redshift"}
    (tmp_path / "c.csv").write_text("file,z\na.jpeg,0.1\n")
    assert column_descriptions(tmp_path / "c.csv", ["z"]) == {}


def test_a_catalog_galaxy_wrote_gives_back_its_descriptions_as_input(tmp_path):
    """Kept from a catalog galaxy wrote: TCOMMn holds the whole text where the TTYPEn comment is cut."""
    long = "a kept column whose description is longer than the room a TTYPE card leaves"
    for suffix in (".fits", ".ecsv", ".parquet"):
        path = tmp_path / f"c{suffix}"
        writer = CatalogWriter(path, CLASSES, {"model": "m", "run": '{"keep": ["zz"]}'}, extra=[("zz", "float")],
                               text_lengths={"id": 1, "path": 1}, descriptions={"zz": long})
        writer.close()
        assert column_descriptions(path, ["zz", "p_spiral"]) == {
            "zz": long, "p_spiral": "calibrated probability of class spiral"}, suffix


def test_kept_text_keeps_its_spaces_and_paths_and_ids_do_not(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('file,objid,note\n a.jpeg , 7 ," spaced "\n')
    assert list(read_input_catalog(path, keep=("note",))) == [(str(tmp_path / "a.jpeg"), "7", {"note": " spaced "})]
    ecsv = tmp_path / "c.ecsv"  # astropy's ECSV reader strips even a quoted value
    ecsv.write_text("# %ECSV 1.0\n# ---\n# datatype:\n# - {name: file, datatype: string}\n"
                    "# - {name: note, datatype: string}\n# schema: astropy-2.0\n"
                    'file note\na.jpeg " spaced "\n#b.jpeg   "x\n#y"\n')
    assert [r[2]["note"] for r in read_input_catalog(ecsv, keep=("note",))] == [" spaced ", "x\n#y"]
    assert [r[0] for r in read_input_catalog(ecsv)] == [str(tmp_path / "a.jpeg"), str(tmp_path / "#b.jpeg")]


def test_an_astropy_ecsv_catalog_reads_as_astropy_wrote_it(tmp_path):
    """astropy's own (space-delimited) ECSV writes a value starting with `#` unquoted."""
    path = tmp_path / "c.ecsv"
    Table({"file": ["#a.jpeg", "b c.jpeg"], "z": MaskedColumn([1.5, 2.0], mask=[False, True]),
           "note": ["x\n#y", ""]}).write(path)
    assert list(read_input_catalog(path, keep=("z", "note"))) == [
        (str(tmp_path / "#a.jpeg"), None, {"z": "1.5", "note": "x\n#y"}),
        (str(tmp_path / "b c.jpeg"), None, {"z": "", "note": ""})]


def test_fits_output_reads_back_without_masks(tmp_path):
    """Masked, an empty text cell read as '--' and a NaN warned on float()."""
    writer = CatalogWriter(tmp_path / "c.fits", CLASSES, {}, extra=[("note", "text"), ("z", "float")])
    writer.write(["a"], ["a.jpeg"], np.array([[0.25, 0.75]]), [{"note": "", "z": ""}])
    writer.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (row,) = read_catalog_rows(tmp_path / "c.fits")
    assert row["note"] == "" and np.isnan(row["z"]) and row["id"] == "a"


def test_fits_rows_read_in_batches_are_what_astropys_table_reads(tmp_path, monkeypatch):
    """The FITS rows are read a batch at a time from the memory-mapped table (`Table.read` held the whole
    table): across batch ends, each value as astropy's Table gives it (trailing spaces dropped, TZERO
    integers unsigned, a TNULL sentinel and a null logical missing, a NaN a NaN)."""
    import galaxy.catalog.formats as formats

    n = 7
    table = Table({"id": [f" g{i} " for i in range(n)], "path": [f"p{i}.jpeg" for i in range(n)],
                   "p_spiral": np.linspace(0, 1, n).astype(np.float32),
                   "u": np.array([0, 1, 2 ** 63, 2 ** 64 - 1, 5, 6, 7], np.uint64),
                   "m": MaskedColumn(np.arange(n), mask=[i % 3 == 1 for i in range(n)], dtype=np.int32),
                   "z": [np.nan if i % 2 else i / 3 for i in range(n)], "label": ["a"] * n,
                   "flag": [True, False, True, False, True, False, True]})
    table.write(tmp_path / "t.fits")
    with fits.open(tmp_path / "t.fits", mode="update") as hdul:  # a null logical: a zero byte
        np.recarray.field(hdul[1].data, "flag")[2] = 0
    monkeypatch.setattr(formats, "CATALOG_BATCH", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = list(read_catalog_rows(tmp_path / "t.fits"))
    assert [r["id"] for r in rows] == [f" g{i}" for i in range(n)]
    assert [r["u"] for r in rows] == [0, 1, 2 ** 63, 2 ** 64 - 1, 5, 6, 7]
    assert [r["m"] for r in rows] == [None if i % 3 == 1 else i for i in range(n)]
    assert [r["flag"] for r in rows] == [True, False, None, False, True, False, True]
    assert [type(r["p_spiral"]) for r in rows] == [float] * n and rows[1]["p_spiral"] == float(np.float32(1 / 6))
    assert [np.isnan(r["z"]) for r in rows] == [i % 2 == 1 for i in range(n)]
    assert [r["z"] for r in rows[::2]] == [i / 3 for i in range(0, n, 2)]


def test_a_fits_catalog_is_read_without_holding_its_table(tmp_path, monkeypatch):
    """`Table.read` held the whole table (418 MB for a million rows), and astropy copies a memory-mapped
    table into memory as its data is freed unless its columns let go first (input catalogs too): read
    batch by batch, the peak is a fraction of the table."""
    import tracemalloc

    import galaxy.catalog.formats as formats

    n = 60_000
    writer = CatalogWriter(tmp_path / "c.fits", CLASSES, {}, extra=[("note", "text"), ("z", "float")])
    writer.write([f"{i:08d}" for i in range(n)], [f"dir/{i:08d}.jpeg" for i in range(n)],
                 np.full((n, 2), 0.5), [{"note": "x" * 40, "z": str(i)} for i in range(n)])
    writer.close()
    size = (tmp_path / "c.fits").stat().st_size
    monkeypatch.setattr(formats, "CATALOG_BATCH", 256)
    assert sum(1 for _ in read_catalog_rows(tmp_path / "c.fits")) == n  # (the imports' memory is not the read's)
    tracemalloc.start()
    try:
        assert sum(1 for _ in read_catalog_rows(tmp_path / "c.fits")) == n
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size / 4, (peak, size)


def test_a_fits_tables_utf8_text_is_read_as_utf8(tmp_path):
    """astropy's FITS_rec.field decodes text as ASCII: a foreign catalog's 'é' came back as two replacement
    characters (its images then not found). Read from the stored bytes as UTF-8, as `Table.read` reads them."""
    names = ["galaxie_é.jpeg".encode(), "日本.jpeg".encode(), b"plain.jpeg", b"\xff.jpeg"]
    fits.BinTableHDU.from_columns([fits.Column("file", "20A", array=np.array(names)),
                                   fits.Column("p_spiral", "E", array=np.zeros(4, np.float32))]).writeto(
        tmp_path / "t.fits")
    expected = ["galaxie_é.jpeg", "日本.jpeg", "plain.jpeg", "\ufffd.jpeg"]
    assert [r["file"] for r in read_catalog_rows(tmp_path / "t.fits")] == expected
    assert [p for p, _, _ in read_input_catalog(tmp_path / "t.fits")] == [str(tmp_path / n) for n in expected]


def test_a_fits_header_card_astropy_cannot_read_is_a_clear_error(tmp_path):
    """astropy's VerifyError (here a TFORMn it does not know) is no ValueError: it escaped report, montage,
    a resume and classify --catalog as a traceback."""
    Table({"file": ["a.jpeg"], "x": [1]}).write(tmp_path / "t.fits")
    data = bytearray((tmp_path / "t.fits").read_bytes())
    at = data.index(b"TFORM2  = 'K")
    data[at + 11] = ord("Q")
    (tmp_path / "t.fits").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="a header card astropy cannot read: Invalid column format: Q"):
        list(read_catalog_rows(tmp_path / "t.fits"))
    with pytest.raises(UsageError, match="t.fits: a header card astropy cannot read"):
        list(read_input_catalog(tmp_path / "t.fits"))


def test_a_damaged_metadata_file_is_named_not_its_catalog(tmp_path):
    """A sidecar holding a JSON list was an AttributeError traceback on a resume; a torn one was blamed on
    the catalog."""
    from galaxy.catalog.written import read_catalog_metadata

    path = _write(tmp_path / "c.csv")
    sidecar = tmp_path / "c.csv.meta.json"
    whole = sidecar.read_text()
    sidecar.write_text("[1, 2]")
    with pytest.raises(ValueError, match="its metadata file c.csv.meta.json holds a JSON list, not an object"):
        read_catalog_metadata(path)
    sidecar.write_text(whole[:len(whole) // 2])
    with pytest.raises(ValueError, match="its metadata file c.csv.meta.json is not JSON"):
        read_catalog_metadata(path)


def test_a_fits_catalog_cut_inside_its_table_header_says_it_looks_cut_short(tmp_path):
    path = _write(tmp_path / "c.fits")
    path.write_bytes(path.read_bytes()[:4000])  # the primary header, and part of the table's
    with pytest.raises(ValueError, match="No table found .it looks cut short: its 4,000 bytes are not whole"):
        list(read_catalog_rows(path))
    with pytest.raises(UsageError, match="has no table HDU .it looks cut short"):
        list(read_input_catalog(path))


def test_a_parquet_catalogs_bytes_path_that_is_not_utf8_names_its_file(tmp_path):
    """A binary path column's bytes were decoded with replacement characters, naming no file; read as Python
    holds file names (`os.fsdecode`), as the Python API reads a bytes cell (`cell_path`, `cell_id`)."""
    import os
    import shutil

    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpeg")
    shutil.copy(sorted(EXAMPLES.glob("*.jpeg"))[0], odd)
    pq.write_table(pa.table({"path": pa.array([b" caf\xe9.jpeg "], pa.binary()), "id": pa.array([b"g\xe9"])}),
                   tmp_path / "c.parquet")
    ((where, ident, _),) = read_input_catalog(tmp_path / "c.parquet")
    assert where == os.fsdecode(odd) and os.path.exists(where) and ident == os.fsdecode(b"g\xe9")
    from galaxy.catalog.read import cell_id, cell_path

    assert cell_path("caf\\xe9.jpeg", tmp_path) == os.fsdecode(odd)  # the escape galaxy writes for the byte
    assert cell_path(None) == cell_path("  ") == "" and cell_id(b" g1 ") == "g1" and cell_id("  ") is None


def test_a_catalog_spelling_its_path_column_in_two_cases_says_so(tmp_path):
    """'PATH' and 'Path' were passed over without a word: "has no path column", the columns listed."""
    (tmp_path / "c.csv").write_text("PATH,Path\na.jpeg,b.jpeg\n")
    with pytest.raises(UsageError, match="'PATH' and 'Path' spell 'path' alike in another case: name the one"):
        next(read_input_catalog(tmp_path / "c.csv"))
