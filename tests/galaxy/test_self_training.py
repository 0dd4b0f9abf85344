"""Self-training (`galaxy train --unlabeled`): real gz1-sdss and unlabeled-sdss subsets, 32 px, 1-2 epochs."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from galaxy.cli import cli
from galaxy.errors import UsageError
from galaxy.labels import list_unlabelled
from galaxy.training.soft_targets import sharpen, soft_target_loss
from galaxy.training.targets_file import TARGETS_FILE
from tests.conftest import EXAMPLES, SHARED_DATA

UNLABELLED = SHARED_DATA.parent / "unlabeled-sdss" / "images"


@pytest.fixture(scope="module")
def unlabelled_subset(tmp_path_factory):
    if not UNLABELLED.is_dir() or not (SHARED_DATA / "labels.csv").is_file():
        pytest.skip(f"the gz1-sdss and unlabeled-sdss data sets are not at {SHARED_DATA.parent}")
    folder = tmp_path_factory.mktemp("unlabelled")
    for path in sorted(UNLABELLED.glob("*.jpg"))[:16]:
        (folder / path.name).symlink_to(path)
    return folder


def _train(out, unlabelled, *extra):
    return CliRunner().invoke(cli, ["train", str(SHARED_DATA / "labels.csv"), "-o", str(out), "--size", "32",
                                    "--batch-size", "8", "--limit", "16", "--workers", "2", "--init", "default",
                                    "--unlabeled", str(unlabelled), "--drop-rate", "0.2", "--augment", "all", "-q", *extra])


def test_soft_target_loss_is_cross_entropy_at_t1_and_sharpen_keeps_rows_normalised():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    onehot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    assert torch.allclose(soft_target_loss(logits, onehot, 1.0), expected)
    soft = sharpen(torch.tensor([[0.9, 0.1]]), 2.0)
    assert torch.allclose(soft.sum(dim=1), torch.ones(1)) and 0.5 < float(soft[0, 0]) < 0.9


def test_validation_ids_in_the_unlabelled_pool_are_refused(tmp_path, real_jpeg):
    (tmp_path / "x.jpeg").symlink_to(real_jpeg)
    with pytest.raises(UsageError, match="validation images"):
        list_unlabelled([tmp_path], refuse_ids=["x"])
    assert list_unlabelled([tmp_path], exclude_ids=["x"]) == ((), ())


@pytest.mark.slow
def test_self_training_runs_is_resumable_and_reuses_soft_targets(tmp_path, unlabelled_subset, monkeypatch):
    full = tmp_path / "full"
    result = _train(full, unlabelled_subset, "--epochs", "2")
    assert result.exit_code == 0, result.output
    card = json.loads((full / "card.json").read_text())
    teacher = card["training"]["teacher"]
    assert teacher["views"] == 8 and teacher["n"] == 32 and teacher["teachers"][0]["name"] == "sdss-xception-96"
    assert card["training"]["data"]["unlabeled"]["n"] == 16
    # the unlabelled images were learned from (the teacher's targets): a later leak check must find them
    learned = set((full / "train_ids.txt").read_text().split())
    assert {path.stem for path in unlabelled_subset.iterdir()} <= learned
    assert card["training"]["config"]["augment"] == ["zoom", "rotate", "flux", "noise", "blur", "curve"]
    with np.load(full / "checkpoints" / TARGETS_FILE) as stored:
        assert stored["probabilities"].shape == (32, 2)
        assert np.allclose(stored["probabilities"].sum(axis=1), 1, atol=1e-5)

    # The same run killed during epoch 2, then resumed: identical weights, soft targets reused.
    import galaxy.training.train

    real_report, calls = galaxy.training.train.classification_report, []

    def crash_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real_report(*args, **kwargs)

    killed = tmp_path / "killed"
    monkeypatch.setattr(galaxy.training.train, "classification_report", crash_in_epoch_2)
    assert _train(killed, unlabelled_subset, "--epochs", "2").exit_code != 0
    monkeypatch.setattr(galaxy.training.train, "classification_report", real_report)
    checkpoint = killed / "checkpoints" / "last.pt"
    result = _train(killed, unlabelled_subset, "--epochs", "2", "--resume", str(checkpoint))
    assert result.exit_code == 0, result.output
    assert "reused" in json.loads((killed / "card.json").read_text())["training"]["teacher"]
    a, b = (torch.load(d / "checkpoints" / "last.pt", weights_only=True)["model"] for d in (full, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # A model trained with --limit teaches a student trained with the same --limit (its validation
    # split is the first images of the same split, not another split).
    student = _train(tmp_path / "student", unlabelled_subset, "--epochs", "1", "--teacher", str(full))
    assert student.exit_code == 0, student.output
    assert json.loads((tmp_path / "student" / "card.json").read_text())["training"]["teacher"]["teachers"][0][
        "dir"] == str(full)


def test_teacher_ensemble_averages_and_the_cache_is_keyed_by_teachers_and_views(tmp_path, model_copy, default_model):
    from galaxy.training.predict import pick_device
    from galaxy.training.soft_targets import teacher_probabilities
    from tests.conftest import EXAMPLES

    paths = sorted(str(p) for p in EXAMPLES.glob("*.jpeg"))[:4]
    ids = [p.rsplit("/", 1)[1].split(".")[0] for p in paths]
    device, amp = pick_device()
    classes = default_model[1].classes

    def label(teachers, views, work):
        return teacher_probabilities(teachers, classes, paths, ids, work, views, 2, device, amp, show=False)

    single, record = label([default_model[0]], 8, tmp_path / "one")
    pair, _ = label([default_model[0], model_copy], 8, tmp_path / "two")
    plain, _ = label([default_model[0]], 1, tmp_path / "one")  # other views: recomputed, not reused
    again, reused = label([default_model[0]], 1, tmp_path / "one")
    assert single.shape == (4, 2) and np.allclose(single.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(pair, single, atol=1e-6)  # a model averaged with itself
    assert "reused" not in record and "reused" in reused and np.array_equal(again, plain)
    assert not np.allclose(plain, single, atol=1e-6)  # D4 averaging changes the targets


def test_an_ensemble_reuses_each_members_labels_from_the_cache(tmp_path, monkeypatch):
    from galaxy.card import model_path
    from galaxy.training.predict import pick_device
    from galaxy.training.soft_targets import teacher_probabilities
    from tests.conftest import EXAMPLES

    paths = sorted(str(p) for p in EXAMPLES.glob("*.jpeg"))[:3]
    ids = [p.rsplit("/", 1)[1].split(".")[0] for p in paths]
    device, amp = pick_device()
    full, compact = (str(model_path(name)) for name in ("sdss-xception", "sdss-xception-compact"))
    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path / "cache"))

    def label(teachers, work):
        return teacher_probabilities(teachers, ("elliptical", "spiral"), paths, ids, tmp_path / work, 1, 2,
                                     device, amp, show=False)

    alone, first = label([full], "a")
    other, _ = label([compact], "b")
    pair, record = label([full, compact], "c")  # a new work dir: only the per-teacher cache can help
    assert first["members_reused"] == [] and len(record["members_reused"]) == 2
    assert "reused" not in record and np.allclose(pair, (alone + other) / 2, atol=1e-6)
    assert not np.allclose(alone, other, atol=1e-3)  # two different teachers, so the mean is a real mean


def test_soft_targets_are_reused_for_the_same_teacher_in_another_folder(tmp_path, model_copy, default_model):
    from galaxy.training.predict import pick_device
    from galaxy.training.soft_targets import teacher_probabilities
    from tests.conftest import EXAMPLES

    paths = sorted(str(p) for p in EXAMPLES.glob("*.jpeg"))[:2]
    ids = [p.rsplit("/", 1)[1].split(".")[0] for p in paths]
    device, amp = pick_device()
    args = (default_model[1].classes, paths, ids, tmp_path, 1, 2, device, amp, False)
    first, record = teacher_probabilities([default_model[0]], *args)
    again, reused = teacher_probabilities([model_copy], *args)  # same weights, other folder
    assert "reused" in reused and np.array_equal(first, again)
    assert reused["teachers"][0]["dir"] == str(model_copy)  # the card still says where it came from


def test_soft_targets_are_keyed_by_the_images_contents_and_the_teachers_input(tmp_path, model_copy, default_model,
                                                                              monkeypatch):
    """Keyed by ids (file stems) alone, a folder of other images under the same names reused the old
    targets (31 of 50 off by more than 0.1), a teacher reading another crop reused them, and two files
    of one name in two folders got one target on a reuse."""
    import shutil

    from galaxy.training.predict import pick_device
    from galaxy.training.soft_targets import teacher_probabilities
    from tests.conftest import EXAMPLES

    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path / "cache"))
    sources = sorted(EXAMPLES.glob("*.jpeg"))
    folder = tmp_path / "pool"
    folder.mkdir()
    for k in range(2):
        shutil.copy(sources[k], folder / f"g{k}.jpeg")
    paths = [str(folder / f"g{k}.jpeg") for k in range(2)]
    ids = ["g0", "g1"]
    device, amp = pick_device()

    def label(work, teacher=default_model[0], paths=paths, ids=ids):
        return teacher_probabilities([teacher], default_model[1].classes, paths, ids, tmp_path / work, 1, 2, device,
                                     amp, False)

    first, _ = label("a")
    shutil.copy(sources[5], folder / "g0.jpeg")  # another galaxy under the same name
    changed, record = label("b")
    assert "reused" not in record and record["members_reused"] == []
    fresh, _ = label("c")
    assert np.array_equal(changed, fresh) and not np.allclose(changed[0], first[0])
    card = json.loads((model_copy / "card.json").read_text())
    card["input_spec"]["crop_fraction"] = 0.8
    (model_copy / "card.json").write_text(json.dumps(card))
    _, record = label("d", teacher=model_copy)
    assert record["members_reused"] == []  # same weights, another crop: labelled again
    (tmp_path / "other").mkdir()
    shutil.copy(sources[7], tmp_path / "other" / "g0.jpeg")
    twins = [paths[0], str(tmp_path / "other" / "g0.jpeg")]
    both, _ = label("e", paths=twins, ids=["g0", "g0"])
    again, record = label("e", paths=twins, ids=["g0", "g0"])
    assert "reused" in record and np.array_equal(both, again) and not np.allclose(both[0], both[1])


def test_unlabeled_framing_auto_reads_the_pool_at_the_crop_matching_its_framing(tmp_path, unlabelled_subset):
    from galaxy.training.soft_targets import teacher_probabilities
    from galaxy.training.predict import pick_device
    from galaxy.card import model_path

    teacher = str(model_path("sdss-xception-compact"))
    labelled = sorted((SHARED_DATA / "images").glob("*.jpeg"))[:4]
    pool = sorted(unlabelled_subset.glob("*.jpg"))[:4]
    paths = [str(p) for p in labelled + pool]
    ids = [p.stem for p in labelled + pool]
    device, amp = pick_device()

    def label(work, scale):
        return teacher_probabilities([teacher], ("elliptical", "spiral"), paths, ids, tmp_path / work, 1, 2, device,
                                     amp, False, scale, len(labelled))

    plain, _ = label("plain", 1.0)
    framed, record = label("framed", 1.2)
    assert record["framing"]["scale"] == 1.2
    assert np.array_equal(plain[:4], framed[:4])  # the labelled images: the teacher's own crop
    assert not np.allclose(plain[4:], framed[4:], atol=1e-4)  # the pool: a crop 1.2x the teacher's

    result = _train(tmp_path / "run", unlabelled_subset, "--epochs", "1", "--unlabeled-framing", "auto",
                    "--teacher", teacher)
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert 0.8 < card["training"]["teacher"]["framing"]["scale"] < 1.6  # GZ2 cutouts: galaxies ~1.2x larger
    assert card["training"]["config"]["unlabeled_framing"] == "auto"


def test_unlabelled_scale_reuses_the_pool_measurement_with_the_same_result(unlabelled_subset):
    from galaxy.config import TrainConfig
    from galaxy.training.train_data import pool_framing_of, unlabelled_scale

    labelled = [str(p) for p in sorted((SHARED_DATA / "images").glob("*.jpeg"))[:16]]
    pool = [str(p) for p in sorted(unlabelled_subset.glob("*.jpg"))]
    config = TrainConfig(data=str(SHARED_DATA / "labels.csv"), out_dir="unused", size=32, workers=2)
    measured = unlabelled_scale(labelled, pool, config)
    assert measured == unlabelled_scale(labelled, pool, config, pool_framing_of(labelled + pool, config))


def test_apparent_size_and_scale_consistency_train_and_are_recorded(tmp_path, unlabelled_subset):
    teacher = "sdss-xception-compact"
    bad = _train(tmp_path / "bad", unlabelled_subset, "--epochs", "1", "--apparent-size", "0.45", "0.2")
    assert bad.exit_code == 2 and "--apparent-size 0.45 0.2" in bad.output
    no_zoom = CliRunner().invoke(cli, ["train", str(SHARED_DATA / "labels.csv"), "-o", str(tmp_path / "nz"),
                                       "--augment", "rotate", "--apparent-size", "0.2", "0.45"])
    assert no_zoom.exit_code == 2 and "needs the zoom augmentation" in no_zoom.output

    result = _train(tmp_path / "run", unlabelled_subset, "--epochs", "1", "--apparent-size", "0.2", "0.45",
                    "--scale-consistency", "1", "--teacher", teacher)
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["training"]["config"]["apparent_size"] == ["0.2", "0.45"]
    assert card["training"]["config"]["scale_consistency"] == 1.0
    framing = card["training"]["data"]["pool_framing"]
    assert framing["images"] == 32 and framing["measured"] >= 28 and 0.08 < framing["median"] < 0.3


def test_copies_of_labelled_images_under_other_names_are_refused_or_dropped(tmp_path):
    """A GZ2 vote table's ids are its dr7objids, a folder of the same cutouts gives asset ids: the id checks
    matched nothing, and all 40 validation images of a run went into its unlabelled pool."""
    import shutil

    jpegs = sorted(EXAMPLES.glob("*.jpeg"))[:3]
    pool = tmp_path / "pool"
    pool.mkdir()
    for k, source in enumerate(jpegs):
        shutil.copy(source, pool / f"asset{k}.jpeg")
    with pytest.raises(UsageError, match=r"1 unlabelled images are copies of validation images \(e.g. .*asset2"):
        list_unlabelled([pool], refuse_files=[str(jpegs[2])])
    paths, ids = list_unlabelled([pool], exclude_files=[str(jpegs[0]), str(tmp_path / "missing.jpeg")])
    assert ids == ("asset1", "asset2")  # the training image's copy is dropped, as its id would be


def test_a_run_file_records_what_stands_in_for_its_teachers_and_an_old_one_is_brought_up_to_date(
        tmp_path, default_model):
    """A run's soft_targets.npz records its classes and its teachers' training ids (--teacher-targets
    needs them); one written before it did is rewritten with them when the run reuses it."""
    from galaxy.card import training_ids
    from galaxy.training.predict import pick_device
    from galaxy.training.soft_targets import teacher_probabilities
    from galaxy.training.targets_file import TARGETS_FILE, _records_provenance, _write_targets
    from tests.conftest import EXAMPLES

    paths = sorted(str(p) for p in EXAMPLES.glob("*.jpeg"))[:2]
    ids = [p.rsplit("/", 1)[1].split(".")[0] for p in paths]
    device, amp = pick_device()
    args = (default_model[1].classes, paths, ids, tmp_path, 1, 2, device, amp, False)
    first, _ = teacher_probabilities([default_model[0]], *args)
    path = tmp_path / TARGETS_FILE
    with np.load(path) as stored:
        assert stored["classes"].tolist() == list(default_model[1].classes)
        assert set(stored["learned_ids"].tolist()) == training_ids(*default_model)
        key = str(stored["key"])
    _write_targets(path, ids, first, json.loads(key))  # as written before 2026-11-30
    assert not _records_provenance(path)
    again, record = teacher_probabilities([default_model[0]], *args)
    assert "reused" in record and np.array_equal(first, again) and _records_provenance(path)
