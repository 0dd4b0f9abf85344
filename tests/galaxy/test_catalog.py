"""Input catalogs in every supported format, streamed."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

from galaxy.catalog.read import read_input_catalog
from galaxy.errors import UsageError


@pytest.mark.parametrize("suffix", [".csv", ".ecsv", ".parquet", ".fits"])
def test_catalog_formats(tmp_path, suffix):
    ids = [f"o{k}" for k in range(20000)]
    files = [f"cut/{k}.jpeg" for k in range(20000)]
    path = tmp_path / f"cat{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({"objid": ids, "file_loc": files, "mag": list(range(20000))}), path)
    else:
        Table({"objid": ids, "file_loc": files, "mag": list(range(20000))}).write(path)
    rows = list(read_input_catalog(path, keep=("mag",)))
    assert len(rows) == 20000
    assert rows[0] == (str(tmp_path / "cut/0.jpeg"), "o0", {"mag": "0"}) and rows[-1][1] == "o19999"
    assert rows[-1][2] == {"mag": "19999"}


def test_catalog_column_errors_name_the_columns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("name,where\na,b.jpg\n")
    with pytest.raises(UsageError, match="no path column"):
        list(read_input_catalog(path))
    assert list(read_input_catalog(path, path_column="where")) == [(str(tmp_path / "b.jpg"), None, {})]
    with pytest.raises(UsageError, match="no column 'redshift' to keep"):
        list(read_input_catalog(path, path_column="where", keep=("redshift",)))
    with pytest.raises(UsageError, match="cannot keep column 'label'"):
        list(read_input_catalog(path.with_name("d.csv"), keep=("label",)) if path.with_name("d.csv").write_text(
            "file,label\na.jpg,x\n") else ())
    with pytest.raises(UsageError, match="no id column 'objid'"):
        list(read_input_catalog(path, path_column="where", id_column="objid"))
    with pytest.raises(UsageError, match="is not .csv"):
        list(read_input_catalog(tmp_path / "c.txt"))


def test_outputs_with_the_same_stem_keep_their_own_errors_file(tmp_path):
    from galaxy.catalog.write import errors_path

    csv_errors, fits_errors = errors_path(tmp_path / "res.csv"), errors_path(tmp_path / "res.fits")
    assert csv_errors != fits_errors  # `-o res.csv` then `-o res.fits` must not erase the first run's errors
    assert csv_errors.name == "res.csv.errors.csv" and fits_errors.name == "res.fits.errors.csv"


def test_unique_ids_suffix_repeats_in_order_and_respect_taken_ids():
    from galaxy.catalog.write import UniqueIds

    ids = UniqueIds(["a"])  # a resumed catalog's row
    assert [ids.take(i) for i in ["a", "b", "a", "a#3", "a", "b"]] == ["a#2", "b", "a#3", "a#3#2", "a#4", "b#2"]
    assert "a#4" in ids and len(ids) == 7
    many = UniqueIds()
    assert [many.take("x") for _ in range(20000)][-1] == "x#20000"  # linear: the old rule took seconds here


def test_damaged_parquet_with_a_non_utf8_name_is_named_and_closed(tmp_path):
    # pyarrow cannot encode such a name, so galaxy opens the file itself (galaxy.files.arrow_source): a file that
    # is not Parquet had left that handle open (a ResourceWarning at collection, a leak per file in a long run)
    import gc
    import os
    import warnings

    path = tmp_path / os.fsdecode(b"cat\xff.parquet")
    path.write_text("file\na.jpg\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(UsageError, match="cannot read catalog"):
            list(read_input_catalog(path))
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
