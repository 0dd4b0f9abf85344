"""Galaxy Zoo vote tables as labels, on real rows of three releases (tests/data/galaxy-zoo)."""

import numpy as np
import pytest

from galaxy.errors import UsageError
from galaxy.labels import load_labelled
from galaxy.labels import load_votes
from galaxy.votes import VoteRule, detect, read_table, vote_labels
from tests.conftest import DATA

GZ = DATA / "galaxy-zoo"
KAGGLE = GZ / "kaggle" / "training_solutions_rev1.csv"
KAGGLE_IMAGES = str(GZ / "kaggle" / "images_training_rev1")
GZ2 = GZ / "gz2" / "gz2_hart16.csv"
DECALS = GZ / "decals" / "gz_decals_volunteers_5.csv"


def test_each_release_is_recognised_by_its_columns():
    assert detect(read_table(KAGGLE).colnames).name == "kaggle"
    assert detect(read_table(GZ2).colnames, "debiased").name == "gz2"
    assert detect(read_table(DECALS).colnames).name == "decals"
    assert detect(["id", "label", "file"]) is None


def test_kaggle_thresholds_on_real_rows():
    # Class1.1 / Class1.2 of the three rows: 0.383/0.617, 0.327/0.664, 0.766/0.177
    found = load_labelled(KAGGLE, votes=VoteRule(threshold=0.6, images=KAGGLE_IMAGES))
    assert dict(zip(found.ids, found.labels)) == {"100008": 1, "100023": 1, "100053": 0}
    assert all(p.startswith(KAGGLE_IMAGES) for p in found.paths)
    found = load_labelled(KAGGLE, votes=VoteRule(threshold=0.65, images=KAGGLE_IMAGES))
    assert dict(zip(found.ids, found.labels)) == {"100023": 1, "100053": 0}
    with pytest.raises(UsageError, match="no galaxy passes the vote threshold 0.8"):
        load_labelled(KAGGLE, votes=VoteRule(images=KAGGLE_IMAGES))


def test_gz2_debiased_fractions_and_asset_id_file_names():
    found = load_votes(GZ2, VoteRule(kind="debiased", images=str(GZ / "gz2" / "images")))
    # Sc+t (0.0 / 1.0) and Ser (0.031 / 0.943) are clean spirals; Sb?m(m) (0.655 / 0.667) is dropped
    assert found.ids == ("587737825678131439", "587736542560715163") and found.labels == (1, 1)
    assert [p.rsplit("/", 1)[1] for p in found.paths] == ["106587.jpg", "91609.jpg"]  # via gz2_filename_mapping.csv


def test_decals_min_votes_drops_thinly_voted_galaxies():
    table = read_table(DECALS)
    smooth, featured = table["smooth-or-featured_smooth_fraction"], table["smooth-or-featured_featured-or-disk_fraction"]
    votes = table["smooth-or-featured_total-votes"]
    assert vote_labels(smooth, featured, votes, VoteRule()).tolist() == [0, -1, -1, 1, -1, 1]
    assert vote_labels(smooth, featured, votes, VoteRule(min_votes=10)).tolist() == [-1, -1, -1, 1, -1, 1]
    with pytest.raises(UsageError, match="with an image"):  # the DECaLS PNGs are not shipped
        load_votes(DECALS, VoteRule())


@pytest.mark.parametrize("suffix", [".parquet", ".fits", ".ecsv"])
def test_parquet_fits_and_ecsv_tables_give_the_same_labels(tmp_path, suffix):
    table = read_table(KAGGLE)
    table["GalaxyID"] = table["GalaxyID"].astype(str)
    path = tmp_path / f"votes{suffix}"
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({name: list(table[name]) for name in table.colnames}), path)
    else:
        table.write(path, **({"format": "ascii.ecsv"} if suffix == ".ecsv" else {}))
    rule = VoteRule(threshold=0.6, images=KAGGLE_IMAGES)
    assert load_labelled(path, votes=rule) == load_labelled(KAGGLE, votes=rule)


def test_a_vote_table_with_a_byte_order_mark_gives_the_same_labels(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a byte-order mark: the first column was
    '\ufeffGalaxyID', so the table was not recognised as a vote table."""
    path = tmp_path / "votes.csv"
    path.write_bytes(b"\xef\xbb\xbf" + KAGGLE.read_bytes())
    rule = VoteRule(threshold=0.6, images=KAGGLE_IMAGES)
    assert read_table(path).colnames == read_table(KAGGLE).colnames
    assert load_labelled(path, votes=rule) == load_labelled(KAGGLE, votes=rule)


def test_bad_rules_are_usage_errors():
    with pytest.raises(UsageError, match="one class wins"):
        VoteRule(threshold=0.5)
    with pytest.raises(UsageError, match="elliptical and spiral"):
        load_votes(KAGGLE, VoteRule(threshold=0.6, images=KAGGLE_IMAGES), classes=("smooth", "disk"))
    # options a table cannot honour: they had been ignored, and recorded in report.json as applied (review, s45)
    with pytest.raises(UsageError, match="--min-votes 100: .*kaggle.* has no vote count column"):
        load_votes(KAGGLE, VoteRule(threshold=0.6, min_votes=100, images=KAGGLE_IMAGES))
    with pytest.raises(UsageError, match="--vote-kind debiased: .*has one kind of vote fraction"):
        load_votes(KAGGLE, VoteRule(threshold=0.6, kind="debiased", images=KAGGLE_IMAGES))
    with pytest.raises(UsageError, match="vote threshold 0.8 and --min-votes 100000 with an image"):
        load_votes(GZ2, VoteRule(kind="debiased", min_votes=100000, images=str(GZ / "gz2" / "images")))


def test_the_default_model_calls_gz2s_confident_spirals_spiral(default_model):
    """Another Galaxy Zoo release, never seen in training: GZ2 galaxies with debiased features >= 0.8."""
    from galaxy.api import load_model

    found = load_votes(GZ2, VoteRule(kind="debiased", images=str(GZ / "gz2" / "images")))
    table = load_model(backend="onnxruntime").classify(list(found.paths))
    assert list(table["label"]) == ["spiral", "spiral"]
    assert np.all(table["p_spiral"] > 0.9)


def test_a_vote_tables_missing_words_are_missing_and_other_words_are_refused_by_row(tmp_path):
    """A word in a vote column (R's NA, text) made numpy's float() end train, evaluate, calibrate, quantize
    and check-backends in a traceback. Words tables write for no value are missing (no label from that
    fraction); any other is refused, naming the row and column."""
    rule = VoteRule(threshold=0.6, images=KAGGLE_IMAGES)
    lines = KAGGLE.read_text().splitlines(keepends=True)
    header = lines[0].split(",")
    smooth = header.index("Class1.1")

    def with_cell(row, value):
        cells = lines[row].split(",")
        cells[smooth] = value
        path = tmp_path / f"votes-{value or 'empty'}.csv"
        path.write_text("".join(lines[:row] + [",".join(cells)] + lines[row + 1:]))
        return path

    for word in ("NA", "null", "--", ""):  # row 3 (100053) was elliptical by its smooth fraction 0.766
        assert dict(zip(*(lambda s: (s.ids, s.labels))(load_labelled(with_cell(3, word), votes=rule)))) == {
            "100008": 1, "100023": 1}
    with pytest.raises(UsageError, match=r"votes-abc.csv, row 3: column Class1.1 holds 'abc', not a number"):
        load_labelled(with_cell(3, "abc"), votes=rule)


def test_a_vote_csv_whose_rows_are_not_whole_is_refused(tmp_path):
    """astropy's CSV reader took an unclosed quote's rest of the file as one cell, and a row cut short
    as no galaxy: scored on fewer galaxies without a word."""
    rule = VoteRule(threshold=0.6, images=KAGGLE_IMAGES)
    lines = KAGGLE.read_text().splitlines(keepends=True)
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text("".join(lines[:2] + ['"' + lines[2]] + lines[3:]))
    with pytest.raises(UsageError, match="cannot read the table .*unclosed.csv: unexpected end of data"):
        load_labelled(unclosed, votes=rule)
    short = tmp_path / "short.csv"
    short.write_text("".join(lines[:3]) + ",".join(lines[3].split(",")[:5]))  # cut inside its last row
    with pytest.raises(UsageError, match=r"short.csv: it ends inside a row \(5 of the header's \d+ fields\)"):
        load_labelled(short, votes=rule)
    # a short row with its line end is astropy's to pad with missing values, and blank lines are none, as before
    short.write_text("".join(lines[:3]) + ",".join(lines[3].split(",")[:5]) + "\n   \n\n")
    assert load_labelled(short, votes=rule).labels == load_labelled(KAGGLE, votes=rule).labels  # (its votes are
    # in its first five fields)


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 500])
def test_a_fits_labels_table_astropy_cannot_identify_is_one_clear_error(tmp_path, content):
    """astropy's IORegistryError is no OSError: it escaped as a traceback with a 60-line table of formats."""
    path = tmp_path / "labels.fits"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="cannot read the table .*labels.fits: not a FITS table astropy can read"):
        read_table(path)


def test_a_parquet_vote_table_named_in_bytes_that_are_not_utf8_is_read(tmp_path):
    """pyarrow takes UTF-8 names only: such a table had been "cannot read the table" (review, session 45)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from galaxy.votes import read_table

    path = tmp_path / os.fsdecode(b"votes\xff.parquet")
    with open(path, "wb") as fh:
        pq.write_table(pa.table({"GalaxyID": [1, 2], "Class1.1": [0.9, 0.1], "Class1.2": [0.1, 0.9]}), fh)
    assert len(read_table(path)) == 2
