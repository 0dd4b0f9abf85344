import shutil

import numpy as np
import pytest

from galaxy.errors import UsageError
from galaxy.labels import load_labelled, stratified_split
from galaxy.evaluation.metrics import classification_report, roc_auc
from tests.conftest import EXAMPLES


def test_csv_labels_with_relative_paths():
    data = load_labelled(EXAMPLES / "labels.csv", label_column="label", path_column="file")
    assert len(data) == 40
    assert all(p.startswith(str(EXAMPLES)) for p in data.paths)
    assert data.counts() == {"elliptical": 24, "spiral": 16}


def test_gz1_labels_csv_works_directly(shared_data):
    data = load_labelled(shared_data / "labels.csv", label_column="label", path_column="file")
    assert data.counts() == {"elliptical": 3716, "spiral": 1478}  # 171 unlabelled rows skipped


def test_class_folders(tmp_path):
    for name in ("elliptical", "spiral"):
        (tmp_path / name).mkdir()
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:3]:
        shutil.copy(path, tmp_path / "spiral")
    (tmp_path / "spiral" / "notes.txt").write_text("not an image")
    data = load_labelled(tmp_path)
    assert data.counts() == {"elliptical": 0, "spiral": 3}


def test_unknown_label_and_column_are_named(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("file,label\na.jpg,lenticular\n")
    with pytest.raises(UsageError, match="'lenticular'"):
        load_labelled(table)
    with pytest.raises(UsageError, match="no column 'kind'"):
        load_labelled(table, label_column="kind")


def test_a_galaxy_labelled_twice_is_refused(tmp_path):
    """Its copies could land on both sides of the split: validation figures would be optimistic."""
    table = tmp_path / "t.csv"
    table.write_text("file,label\na.jpeg,spiral\nb.jpeg,elliptical\nsub/a.jpeg,elliptical\n")
    with pytest.raises(UsageError, match=r"id 'a' .* is labelled 2 times .*sub/a.jpeg\); 1 repeated row in all"):
        load_labelled(table)


def test_training_needs_every_class(tmp_path):
    from galaxy.config import TrainConfig
    from galaxy.training.train_data import prepare_data

    table = tmp_path / "t.csv"
    table.write_text("file,label\n" + "".join(f"{p},spiral\n" for p in sorted(EXAMPLES.glob("*.jpeg"))[:8]))
    with pytest.raises(UsageError, match="fewer than 2 images labelled 'elliptical'"):
        prepare_data(TrainConfig(data=str(table), out_dir=str(tmp_path / "m")), tmp_path, None, None)


def test_split_is_stratified_and_reproducible():
    data = load_labelled(EXAMPLES / "labels.csv")
    train, val = stratified_split(data, 0.25, seed=7)
    again_train, again_val = stratified_split(data, 0.25, seed=7)
    assert val.ids == again_val.ids and train.ids == again_train.ids
    assert val.counts() == {"elliptical": 6, "spiral": 4}
    assert not set(train.ids) & set(val.ids)
    assert stratified_split(data, 0.25, seed=8)[1].ids != val.ids


def test_roc_auc_known_values():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


def test_report():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    report = classification_report(np.array([0, 1, 1, 1]), probs, ("e", "s"))
    assert report["accuracy"] == 0.75
    assert report["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert report["confusion"]["matrix"] == [[1, 0], [1, 2]]


def test_ece_and_coverage():
    from galaxy.evaluation.metrics import accuracy_at_coverage, expected_calibration_error

    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.95, 0.05], [0.6, 0.4], [0.45, 0.55], [0.8, 0.2]])
    ece, bins = expected_calibration_error(labels, probs, bins=5)
    # bins of width 0.1 from 0.5: 0.6 and 0.55 -> correct; 0.8 -> wrong; 0.95 -> correct
    assert ece == pytest.approx((0.45 + 0.4 + 0.8 + 0.05) / 4)
    assert sum(b["count"] for b in bins) == 4
    coverage = accuracy_at_coverage(labels, probs, (0.25, 0.5, 1.0))
    assert coverage == {"0.25": 1.0, "0.5": 0.5, "1": 0.75}


def test_ece_bins_every_galaxy_and_coverage_does_not_depend_on_row_order():
    """A top-class confidence a float32 rounding below 1/K (an ensemble's mean of mirror-image members) fell in
    no bin: ECE 0.05 for 0.30; two galaxies tied at the cut, one right, scored 1 or 0 by their order."""
    from galaxy.evaluation.metrics import accuracy_at_coverage, expected_calibration_error

    probs = np.array([[0.49999997, 0.49999997], [0.9, 0.1]], np.float32)
    ece, bins = expected_calibration_error(np.array([0, 0]), probs)
    assert ece == pytest.approx(0.30) and sum(b["count"] for b in bins) == 2 and bins[0]["count"] == 1
    tied = np.array([[0.1, 0.9], [0.1, 0.9], [0.8, 0.2]])
    for labels in ([1, 0, 1], [0, 1, 1]):
        assert accuracy_at_coverage(np.array(labels), tied, (0.34, 0.67, 1.0)) == pytest.approx(
            {"0.34": 0.5, "0.67": 0.5, "1": 1 / 3})
    assert accuracy_at_coverage(np.array([], int), np.zeros((0, 2)), (0.5,))["0.5"] != 0.5  # nan, not a figure


def test_calibration_reads_an_underflowed_probability_at_float32s_floor(caplog):
    """The floor had been 1e-12 (logit gaps capped at 27.6, confident mistakes cheap); a 0 is now said."""
    from galaxy.evaluation.calibration import log_probabilities

    logits = log_probabilities(np.array([[1.0, 1e-30], [0.5, 0.5]], np.float32))
    assert logits[0, 0] - logits[0, 1] == pytest.approx(np.log(1e30), rel=1e-6) and not caplog.records
    logits = log_probabilities(np.array([[1.0, 0.0]], np.float32))
    assert logits[0, 0] - logits[0, 1] == pytest.approx(-np.log(np.finfo(np.float32).tiny))
    assert "1 of 1 galaxies have a class probability below" in caplog.text


def test_purity_and_completeness_of_a_cut_on_a_class_probability():
    """The sample p_c >= cut, not the top-class label: p_spiral >= 0.3 takes a galaxy whose label is
    elliptical; an empty sample has no purity; groups give the share of each finer class taken."""
    from galaxy.evaluation.metrics import purity_completeness

    labels = np.array([0, 0, 1, 1, 1])
    p_spiral = np.array([0.05, 0.35, 0.3, 0.6, 0.95])
    probs = np.stack([1 - p_spiral, p_spiral], axis=1)
    table = purity_completeness(labels, probs, ("elliptical", "spiral"), ["e", "e", "face-on", "edge-on", "face-on"],
                                cuts=(0.3, 0.5, 0.99))
    spiral = {row["cut"]: row for row in table["spiral"]}
    assert spiral[0.3]["selected"] == 4 and spiral[0.3]["purity"] == pytest.approx(3 / 4)
    assert spiral[0.3]["completeness"] == 1.0
    assert spiral[0.5]["purity"] == 1.0 and spiral[0.5]["completeness"] == pytest.approx(2 / 3)
    assert spiral[0.5]["selected_by_group"] == {"e": 0.0, "edge-on": 1.0, "face-on": 0.5}
    assert spiral[0.99] == {"cut": 0.99, "selected": 0, "purity": None, "completeness": 0.0,
                            "selected_by_group": {"e": 0.0, "edge-on": 0.0, "face-on": 0.0}}
    elliptical = {row["cut"]: row for row in table["elliptical"]}
    # p_elliptical 0.95, 0.65, 0.7, 0.4, 0.05: the third is a spiral
    assert elliptical[0.5]["selected"] == 3 and elliptical[0.5]["purity"] == pytest.approx(2 / 3)
    # one class unlabelled: completeness has no meaning there
    only = purity_completeness(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]), ("elliptical", "spiral"))
    assert all(row["completeness"] is None for row in only["elliptical"]) and "selected_by_group" not in only["spiral"][0]


@pytest.mark.parametrize("row, reason", [('"b.jpeg,elliptical', "line 3: unexpected end of data"),
                                         ('"b.jpeg"x,elliptical', "line 3: ',' expected after '\"'"),
                                         ("b\xff.jpeg,elliptical", r"not UTF-8 text \(line 3")])
def test_a_damaged_labels_csv_is_refused_naming_its_line(tmp_path, row, reason):
    """An unclosed quote took the rows after it into one path cell with no label: they were dropped as
    unlabelled, silently (2 of 3 rows lost); text after a closing quote was read as part of the cell; a
    byte that is not UTF-8 was a UnicodeDecodeError traceback (session 39)."""
    table = tmp_path / "t.csv"
    table.write_bytes(("file,label\na.jpeg,spiral\n" + row + "\nc.jpeg,spiral\n").encode("utf-8", "surrogateescape")
                      if "\xff" not in row else b"file,label\na.jpeg,spiral\nb\xff.jpeg,elliptical\nc.jpeg,spiral\n")
    with pytest.raises(UsageError, match=f"{table}.*{reason}"):
        load_labelled(table)


def test_a_labels_csv_naming_a_column_twice_or_cut_inside_a_row_is_refused(tmp_path):
    """csv's DictReader took the last of two 'label' columns (a run scored against the wrong one, exit 0),
    and a row cut short read as a row without a label, skipped with an INFO line."""
    lines = (EXAMPLES / "labels.csv").read_text().splitlines()
    twice = tmp_path / "twice.csv"
    twice.write_text("\n".join([lines[0] + ",label"] + [line + ",elliptical" for line in lines[1:]]) + "\n")
    with pytest.raises(UsageError, match="twice.csv names column 'label' 2 times"):
        load_labelled(twice)
    cut = tmp_path / "cut.csv"
    cut.write_text("\n".join(lines[:5] + [lines[5].rsplit(",", 1)[0]]))  # the file ends inside its last row
    with pytest.raises(UsageError, match=r"cut.csv, line 6: the file ends inside a row, before its 'label' column"):
        load_labelled(cut)
    # with its line end, a row that leaves off an empty label is an unlabelled row; a blank line is none
    cut.write_text("\n".join(lines[:5] + [lines[5].rsplit(",", 1)[0], "   "]) + "\n")
    assert len(load_labelled(cut).ids) == 4


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_an_input_catalog_naming_a_used_column_twice_is_refused(tmp_path, suffix):
    """The CSV reader took the last of two 'file' columns, Parquet's one of two kept columns, without a word;
    a column the run does not read may be named twice."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from galaxy.catalog.read import read_input_catalog

    path = tmp_path / f"c{suffix}"
    names, columns = ["file", "z", "z", "note", "note"], [["a.jpeg"], ["1"], ["2"], ["x"], ["y"]]
    if suffix == ".csv":
        path.write_text(",".join(names) + "\n" + ",".join(c[0] for c in columns) + "\n")
    else:
        pq.write_table(pa.Table.from_arrays([pa.array(c) for c in columns], names=names), path)
    with pytest.raises(UsageError, match=f"c{suffix} names column 'z' 2 times"):
        list(read_input_catalog(path, keep=("z",)))
    assert [p for p, _, _ in read_input_catalog(path)] == [str(tmp_path / "a.jpeg")]


def test_a_blank_group_cell_is_in_no_group(tmp_path):
    """--by-column had made the rows with a blank cell a group named '' in report.json (review, session 45)."""
    from galaxy.labels import column_by_id

    table = tmp_path / "groups.csv"
    table.write_text("file,label,kind\na.jpeg,spiral,edge-on\nb.jpeg,spiral,\nc.jpeg,spiral, \n")
    assert column_by_id(table, "kind") == {"a": "edge-on", "b": None, "c": None}


def test_an_unlabelled_folder_given_twice_or_inside_another_is_one_pool(tmp_path):
    """Each image had been learned twice (review, session 45)."""
    import shutil

    from galaxy.labels import list_unlabelled
    from tests.conftest import EXAMPLES

    inner = tmp_path / "pool" / "inner"
    inner.mkdir(parents=True)
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:3]:
        shutil.copy(path, inner)
    paths, ids = list_unlabelled([tmp_path / "pool", inner, f"{inner}/"])
    assert len(paths) == 3 and len(set(ids)) == 3


def test_an_output_folder_inside_a_class_folder_is_refused(tmp_path):
    """`galaxy train data/ -o data/spiral/run` wrote curves.png there, read as a spiral galaxy by the next run."""
    from galaxy.labels import require_outside_class_folders

    for name in ("elliptical", "spiral"):
        (tmp_path / "data" / name).mkdir(parents=True)
    data, classes = tmp_path / "data", ("elliptical", "spiral")
    with pytest.raises(UsageError, match=r"-o .*run is inside the class folder .*spiral: the PNG files"):
        require_outside_class_folders(data / "spiral" / "run", data, classes, "-o")
    with pytest.raises(UsageError, match="inside the class folder"):  # named through a link or with ..
        require_outside_class_folders(data / "runs" / ".." / "elliptical", str(data), classes, "-o")
    for fine in (data, data / "runs", data / "spiral" / ".runs" / "m", tmp_path / "elsewhere"):
        require_outside_class_folders(fine, data, classes, "-o")  # not read as images of a class
    require_outside_class_folders(data / "spiral" / "m", tmp_path / "labels.csv", classes, "-o")  # a table names
    # its images
