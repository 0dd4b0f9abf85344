"""The compact Xception (timm-registered) and `galaxy distill` on a small real subset."""

import json

import pytest
import torch
from click.testing import CliRunner

from galaxy.cli import cli
from galaxy.training.model import create_network, network_cost
from tests.conftest import SHARED_DATA


def test_compact_variants_are_timm_models_much_cheaper_than_the_full_one():
    import timm

    full = network_cost(create_network("legacy_xception", 2), 96)
    assert full["gflop_per_galaxy"] == pytest.approx(1.65, abs=0.01)  # the measurement
    assert "xception_compact_w50_d2" in timm.list_models("xception_compact_*")
    compact = create_network("xception_compact_w50_d2", 2, drop_rate=0.1)
    cost = network_cost(compact, 96)
    assert cost["gflop_per_galaxy"] <= 0.25 and cost["parameters"] < full["parameters"] / 5
    assert compact(torch.zeros(3, 3, 64, 64)).shape == (3, 2)
    assert len(compact.middle) == 2 and compact.get_classifier().in_features == 1024
    # counted where the network lies (a GPU after training there; meta stands in for it here)
    assert network_cost(compact.to("meta"), 96) == cost


@pytest.mark.slow
def test_distill_a_compact_student_from_the_shipped_model(tmp_path, default_model):
    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"the gz1-sdss data set is not at {SHARED_DATA}")
    out = tmp_path / "student"
    result = CliRunner().invoke(cli, ["distill", str(default_model[0]), "--data", str(SHARED_DATA / "labels.csv"),
                                      "-o", str(out), "--arch", "xception_compact_w25_d2", "--size", "32",
                                      "--batch-size", "8", "--limit", "16", "--epochs", "1", "--workers", "2",
                                      "--teacher-views", "1", "-q"])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "card.json").read_text())
    assert card["architecture"] == "xception_compact_w25_d2"
    training = card["training"]
    assert training["command"].startswith("galaxy distill ")
    assert training["teacher"]["teachers"][0]["weights_sha256"] == default_model[1].weights_sha256
    assert training["config"]["soft_temperature"] == 2.0 and training["config"]["init"] == "scratch"
    assert 0 < training["cost"]["gflop_per_galaxy"] < 0.01 and training["cost"]["parameters"] > 0
    from galaxy.training.model import load_network

    network, _ = load_network(out)  # the card's architecture name rebuilds the network
    assert network(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


@pytest.mark.slow
def test_train_seed_reruns_a_recipe_on_the_same_split(tmp_path, default_model):
    """--train-seed changes the weights, order and augmentation but not the split; --train-seed 0 is --seed 0."""
    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"the gz1-sdss data set is not at {SHARED_DATA}")

    def distil(name, *extra):
        out = tmp_path / name
        result = CliRunner().invoke(cli, ["distill", str(default_model[0]), "--data", str(SHARED_DATA / "labels.csv"),
                                          "-o", str(out), "--arch", "xception_compact_w25_d2", "--size", "32",
                                          "--batch-size", "8", "--limit", "16", "--epochs", "1", "--workers", "2",
                                          "--teacher-views", "1", "--no-calibrate", "-q", *extra])
        assert result.exit_code == 0, result.output
        return json.loads((out / "card.json").read_text())

    base, same, other = distil("base"), distil("same", "--train-seed", "0"), distil("other", "--train-seed", "1")
    assert base["split"] == same["split"] == other["split"]
    assert base["weights"] == same["weights"] and other["weights"] != base["weights"]
    assert other["training"]["config"]["train_seed"] == 1 and base["training"]["config"]["train_seed"] is None


def test_a_resume_refuses_a_teacher_whose_weights_changed(tmp_path, default_model):
    """The checkpoint did not say which targets it learned from: a teacher replaced between the kill
    and the resume was used for the rest of the run, and the card named only the new one."""
    import shutil

    from galaxy.card import shipped_model_dirs

    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"the gz1-sdss data set is not at {SHARED_DATA}")
    teacher = tmp_path / "teacher"
    shutil.copytree(default_model[0], teacher)
    common = ["distill", str(teacher), "--data", str(SHARED_DATA / "labels.csv"), "--arch", "xception_compact_w25_d2",
              "--size", "32", "--batch-size", "8", "--limit", "16", "--workers", "2", "--teacher-views", "1", "-q"]
    out = tmp_path / "student"
    assert CliRunner().invoke(cli, [*common, "-o", str(out), "--epochs", "1"]).exit_code == 0
    other = next(d for d in map(str, shipped_model_dirs()) if d != str(default_model[0]))
    shutil.rmtree(teacher)
    shutil.copytree(other, teacher)  # another model at the teacher's path
    result = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "resumed"), "--epochs", "2", "--resume",
                                      str(out / "checkpoints" / "last.pt")])
    assert result.exit_code == 2 and "learned from other soft targets" in result.output, result.output
    assert not (tmp_path / "resumed" / "checkpoints" / "soft_targets.npz").exists()  # refused before labelling


def _rewrite_targets(source, dest, drop=(), **changes):
    """A copy of a soft-targets file with arrays left out or replaced."""
    import numpy as np

    with np.load(source) as stored:
        arrays = {name: stored[name] for name in stored.files if name not in drop}
    arrays.update(changes)
    with open(dest, "wb") as fh:
        np.savez(fh, **arrays)
    return dest


@pytest.mark.slow
def test_a_targets_file_stands_in_for_its_teacher(tmp_path, default_model):
    """--teacher-targets: a run's soft_targets.npz instead of the teacher's weights (a GPU teacher's
    42 MB stay on the GPU machine) gives the student it would have given, bit for bit, and refuses
    a file made for other images, one that cannot show its teachers never saw the validation split,
    and one given with teachers."""
    import numpy as np

    if not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"the gz1-sdss data set is not at {SHARED_DATA}")
    common = ["distill", "--data", str(SHARED_DATA / "labels.csv"), "--arch", "xception_compact_w25_d2",
              "--size", "32", "--batch-size", "8", "--workers", "2", "--teacher-views", "1", "--epochs", "1",
              "--no-calibrate", "-q"]

    def distil(name, *extra, limit="16"):
        return CliRunner().invoke(cli, [*common, "--limit", limit, "-o", str(tmp_path / name), *extra])

    assert distil("taught", str(default_model[0])).exit_code == 0
    targets = tmp_path / "taught" / "checkpoints" / "soft_targets.npz"
    result = distil("from-file", "--teacher-targets", str(targets))
    assert result.exit_code == 0, result.output
    taught, from_file = (json.loads((tmp_path / name / "card.json").read_text()) for name in ("taught", "from-file"))
    assert from_file["weights"] == taught["weights"]
    record = from_file["training"]["teacher"]
    assert record["teachers"][0]["weights_sha256"] == default_model[1].weights_sha256 and record["views"] == 1
    assert record["targets_file"] == str(targets) and len(record["targets_sha256"]) == 64
    # what the teacher learned is recorded as learned by the student, as with the teacher itself
    assert ((tmp_path / "from-file" / "train_ids.txt").read_text()
            == (tmp_path / "taught" / "train_ids.txt").read_text())
    # the file is kept beside the card (the teacher's run folder is not in git): the copy makes the same student
    kept = tmp_path / "from-file" / "teacher_targets.npz"
    assert record["kept_as"] == kept.name and kept.read_bytes() == targets.read_bytes()
    again = distil("from-copy", "--teacher-targets", str(kept))
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "from-copy" / "card.json").read_text())["weights"] == taught["weights"]

    other_images = distil("fewer", "--teacher-targets", str(targets), limit="12")
    assert other_images.exit_code == 2 and "holds targets of 16 images, this run learns from 12" in other_images.output
    both = distil("both", str(default_model[0]), "--teacher-targets", str(targets))
    assert both.exit_code == 2 and "not both" in both.output
    neither = distil("neither")
    assert neither.exit_code == 2 and "--teacher-targets" in neither.output
    old = _rewrite_targets(targets, tmp_path / "old.npz", drop=("learned_ids",))
    unchecked = distil("old", "--teacher-targets", str(old))
    assert unchecked.exit_code == 2 and "does not record" in unchecked.output
    a_validation_id = (tmp_path / "taught" / "val_ids.txt").read_text().split()[0]
    saw = _rewrite_targets(targets, tmp_path / "saw.npz", learned_ids=np.array([a_validation_id], dtype=str))
    leaked = distil("leaked", "--teacher-targets", str(saw))
    assert leaked.exit_code == 2 and "trained on 1 of this run's validation images" in leaked.output, leaked.output
    assert not any((tmp_path / name / "card.json").exists() for name in ("fewer", "both", "neither", "old", "leaked"))
    with np.load(targets) as stored:  # the targets are what the student learns: other ones, other weights
        flipped = _rewrite_targets(targets, tmp_path / "flipped.npz", probabilities=stored["probabilities"][:, ::-1])
    assert distil("flipped", "--teacher-targets", str(flipped)).exit_code == 0
    assert json.loads((tmp_path / "flipped" / "card.json").read_text())["weights"] != taught["weights"]
    last = str(tmp_path / "from-file" / "checkpoints" / "last.pt")
    # the first file gone, the run resumes from the copy it kept (the same targets under another name)...
    moved = targets.rename(tmp_path / "moved.npz")
    from_copy = distil("resumed-copy", "--teacher-targets", str(kept), "--epochs", "2", "--resume", last)
    assert from_copy.exit_code == 0, from_copy.output
    assert json.loads((tmp_path / "resumed-copy" / "card.json").read_text())["training"]["teacher"][
        "targets_file"] == str(kept)
    moved.rename(targets)
    # ...but not from other targets under another name, nor at the path it learned from
    other = distil("resumed-other", "--teacher-targets", str(flipped), "--epochs", "2", "--resume", last)
    assert other.exit_code == 2 and "learned from other soft targets" in other.output, other.output
    targets.write_bytes(flipped.read_bytes())  # other targets at the path the checkpoint learned from
    resumed = distil("resumed", "--teacher-targets", str(targets), "--epochs", "2", "--resume", last)
    assert resumed.exit_code == 2 and "learned from other soft targets" in resumed.output, resumed.output


def test_the_kept_copy_of_a_targets_file_is_the_file_the_run_read(tmp_path):
    """keep_targets copies the --teacher-targets file beside the card only as the run read it: a file changed or
    gone since is refused; the copy itself given as the file (a rebuild from git) is left as it is."""
    import hashlib

    from galaxy.errors import UsageError
    from galaxy.training.targets_file import KEPT_TARGETS_FILE, keep_targets

    source = tmp_path / "targets.npz"
    source.write_bytes(b"the targets")
    record = {"targets_file": str(source), "targets_sha256": hashlib.sha256(b"the targets").hexdigest()}
    out = tmp_path / "model"
    out.mkdir()
    assert keep_targets(record, out)["kept_as"] == KEPT_TARGETS_FILE
    assert (out / KEPT_TARGETS_FILE).read_bytes() == b"the targets"
    from_copy = dict(record, targets_file=str(out / KEPT_TARGETS_FILE))
    assert keep_targets(from_copy, out) == {**from_copy, "kept_as": KEPT_TARGETS_FILE}
    source.write_bytes(b"other targets")
    with pytest.raises(UsageError, match="changed while this run read it"):
        keep_targets(record, tmp_path / "model")
    source.unlink()
    with pytest.raises(UsageError, match="cannot read it again"):
        keep_targets(record, tmp_path / "model")
    assert (out / KEPT_TARGETS_FILE).read_bytes() == b"the targets"


def test_a_targets_file_of_other_images_or_arrays_is_refused(tmp_path):
    import numpy as np

    from galaxy.errors import UsageError
    from galaxy.training.targets_file import _write_targets, contents_digest, targets_from_file

    images = sorted((SHARED_DATA / "images").glob("*.jpeg"))[:3] if (SHARED_DATA / "images").is_dir() else []
    if len(images) < 3:
        pytest.skip(f"the gz1-sdss images are not at {SHARED_DATA}")
    ids = ["a", "b"]
    key = {"teachers": [{"name": "t"}], "views": 8, "contents_sha256": contents_digest(images[:2])}
    path = tmp_path / "soft_targets.npz"
    _write_targets(path, ids, np.full((2, 2), 0.5, dtype=np.float32), key, ("elliptical", "spiral"), ["x"])
    classes = ("elliptical", "spiral")
    probabilities, record, learned = targets_from_file(path, classes, images[:2], ids, 8)
    assert probabilities.shape == (2, 2) and learned == {"x"} and record["views"] == 8
    with pytest.raises(UsageError, match="same names and other contents"):
        targets_from_file(path, classes, images[1:], ids, 8)
    with pytest.raises(UsageError, match="for classes"):
        targets_from_file(path, ("spiral", "elliptical"), images[:2], ids, 8)
    with pytest.raises(UsageError, match="holds 8-view targets: give --teacher-views 8"):
        targets_from_file(path, classes, images[:2], ids, 1)
    (tmp_path / "torn.npz").write_bytes(path.read_bytes()[:100])
    with pytest.raises(UsageError, match="not a soft-targets file"):
        targets_from_file(tmp_path / "torn.npz", classes, images[:2], ids, 8)
    # hand-made files (review): each array is what _write_targets writes, or the file is refused
    bad = {"learned_ids": (np.array("x"), "learned ids are not a non-empty list of strings"),
           "probabilities": (np.array([[1.5, -0.5], [0.5, 0.5]], dtype=np.float32), "not one distribution per image"),
           "key": (np.array("[1, 2]"), "its key is not a record")}
    for name, (value, message) in bad.items():
        with pytest.raises(UsageError, match=message):
            targets_from_file(_rewrite_targets(path, tmp_path / f"{name}.npz", **{name: value}), classes, images[:2],
                              ids, 8)
    with pytest.raises(UsageError, match="learned ids are not a non-empty"):
        targets_from_file(_rewrite_targets(path, tmp_path / "none.npz", learned_ids=np.array([], dtype=str)),
                          classes, images[:2], ids, 8)
    with pytest.raises(UsageError, match=r"its probabilities are \(2, 3\), expected \(2, 2\)"):
        targets_from_file(_rewrite_targets(path, tmp_path / "three.npz", probabilities=np.full((2, 3), 1 / 3)),
                          classes, images[:2], ids, 8)


def test_a_torn_soft_targets_cache_is_labelled_again(tmp_path, caplog):
    """A cached soft-targets file cut short (a kill while copying, a full disk) was a BadZipFile
    traceback: np.load raises that, not an OSError or ValueError, for a torn zip."""
    import numpy as np

    from galaxy.training.targets_file import _read_targets, _write_targets

    path = tmp_path / "soft_targets.npz"
    _write_targets(path, ["a"], np.full((1, 2), 0.5, dtype=np.float32), {"views": 8})
    assert _read_targets(path, {"views": 8}, ["a"]) is not None
    for torn in (path.read_bytes()[:100], b""):
        path.write_bytes(torn)
        assert _read_targets(path, {"views": 8}, ["a"]) is None
    assert "recomputing" in caplog.text
