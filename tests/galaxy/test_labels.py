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
