"""Output catalogs as astronomers' tools read them back: astropy, pandas, pyarrow (and FITS rules)."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from click.testing import CliRunner

from galaxy.catalog.write import CatalogWriter, column_kinds, describe_rows
from galaxy.cli import cli

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


# -- kinds: integers beyond 2**53 keep their digits ----------------------------------------------

def test_integers_beyond_2_53_keep_the_column_text_and_numbers_stay_numbers():
    rows = [{"objid": "1", "z": "0.1", "n": "9007199254740992", "m": "1e999", "u": "1_000", "d": "١٢"},
            {"objid": OBJID, "z": "1e-3", "n": "-12", "m": "2", "u": "2", "d": "3"}]
    assert column_kinds(rows) == [("objid", "text"), ("z", "float"), ("n", "float"), ("m", "text"), ("u", "text"),
                                  ("d", "text")]
    assert column_kinds([{"id": "-9007199254740993"}]) == [("id", "text")]


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".parquet", ".csv"])
def test_sdss_objids_come_back_with_every_digit(tmp_path, suffix):
    rows = [("a", "a.jpeg", {"objid_copy": OBJID, "z": "0.25"}), ("b", "b.jpeg", {"objid_copy": "12", "z": ""})]
    path = _write(tmp_path / f"o{suffix}", rows, column_kinds(r[2] for r in rows))
    table = _read(path)
    assert [str(v) for v in table["objid_copy"]] == [OBJID, "12"]
    assert table["z"].dtype.kind == "f" and table["z"][0] == 0.25


def test_a_ray_merge_keeps_big_integers_text_as_one_machine_does(tmp_path):
    """The --ray merge decides kinds over all parts with `column_kinds`: a part of small integers
    and a part holding an objid make one text column with the digits kept."""
    from engine.ray_parts import finalize_parts

    parts = []
    for k, values in enumerate([["1", "2"], [OBJID, "3"]]):
        rows = [(f"r{k}{j}", f"r{k}{j}.jpeg", {"objid_copy": v}) for j, v in enumerate(values)]
        parts.append(_write(tmp_path / f"part-{k:06d}.parquet", rows, (("objid_copy", "text"),)))
    finalize_parts(parts)
    merged = pq.read_table(tmp_path)
    assert str(merged.schema.field("objid_copy").type) == "string"
    assert merged.column("objid_copy").to_pylist() == ["1", "2", OBJID, "3"]


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
