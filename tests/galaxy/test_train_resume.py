"""What a resumed or interrupted training run may trust: the data it learned, the arithmetic it ran
on, the card written only once the model is finished, and clear errors for broken inputs."""

import json
import logging
import shutil

import pytest
import torch
from click.testing import CliRunner

from galaxy.cli import cli
from galaxy.errors import ImageReadError
from tests.conftest import EXAMPLES

COMMON = ["--size", "32", "--batch-size", "8", "--val-fraction", "0.25", "--workers", "2", "-q"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def data(tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "data")
    return tmp_path / "data"


def test_a_truncated_checkpoint_is_refused_in_one_line(tmp_path, data):
    """A checkpoint cut 5,000 bytes in raised an OSError traceback from torch's zip reader."""
    assert invoke("train", data / "labels.csv", "-o", tmp_path / "m", *COMMON, "--epochs", "1").exit_code == 0
    cut = tmp_path / "cut.pt"
    cut.write_bytes((tmp_path / "m" / "checkpoints" / "last.pt").read_bytes()[:5000])
    result = invoke("train", data / "labels.csv", "-o", tmp_path / "m2", *COMMON, "--epochs", "2", "--resume", cut)
    assert result.exit_code == 2 and "is not a checkpoint of galaxy train" in result.output, result.output


def test_a_resume_refuses_labelled_images_or_labels_changed_since_the_checkpoint(tmp_path, data):
    """Only the ids were compared: an image replaced under its name, or a label changed in the CSV, was
    learned from by the resumed epochs without a word."""
    model = tmp_path / "m"
    assert invoke("train", data / "labels.csv", "-o", model, *COMMON, "--epochs", "1").exit_code == 0
    recorded = json.loads((model / "card.json").read_text())["training"]["data"]["labelled_sha256"]
    assert len(recorded) == 64
    resume = ["--epochs", "2", "--resume", model / "checkpoints" / "last.pt"]
    images = sorted(data.glob("*.jpeg"))
    shutil.copy(images[1], images[0])  # one image replaced under its name
    result = invoke("train", data / "labels.csv", "-o", tmp_path / "r1", *COMMON, *resume)
    assert result.exit_code == 2 and "learned from other labelled data" in result.output, result.output
    shutil.copy(EXAMPLES / images[0].name, images[0])
    lines = (data / "labels.csv").read_text().splitlines()
    head, first = lines[0].split(","), lines[1].split(",")
    column = head.index("label")
    first[column] = {"spiral": "elliptical", "elliptical": "spiral"}[first[column]]
    (data / "labels.csv").write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n")  # one label changed
    result = invoke("train", data / "labels.csv", "-o", tmp_path / "r2", *COMMON, *resume)
    assert result.exit_code == 2 and "learned from other labelled data" in result.output, result.output
    shutil.copy(EXAMPLES / "labels.csv", data / "labels.csv")  # the data as it was: resumed
    result = invoke("train", data / "labels.csv", "-o", tmp_path / "r3", *COMMON, *resume)
    assert result.exit_code == 0, result.output


def test_a_resume_on_other_arithmetic_is_warned_of_and_recorded(tmp_path, data, caplog):
    """Bit-identical resumes hold on the same arithmetic only: with another thread count the resumed
    model differed from the uninterrupted one, and nothing said so."""
    model = tmp_path / "m"
    assert invoke("train", data / "labels.csv", "-o", model, *COMMON, "--epochs", "1").exit_code == 0
    assert "arithmetic" not in json.loads((model / "card.json").read_text())["training"]  # one part: the card's fields
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        with caplog.at_level(logging.WARNING):
            result = invoke("train", data / "labels.csv", "-o", tmp_path / "r", *COMMON, "--epochs", "2", "--resume",
                            model / "checkpoints" / "last.pt")
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "resuming on other arithmetic" in caplog.text and "threads" in caplog.text
    parts = json.loads((tmp_path / "r" / "card.json").read_text())["training"]["arithmetic"]
    assert [part["threads"] for part in parts] == [threads, 1 if threads > 1 else 2]


def test_the_card_is_written_last_so_a_run_killed_before_calibration_leaves_no_model(tmp_path, data, monkeypatch):
    """The card was written before the calibration and again after it: a run killed between the two left a
    folder that classify used uncalibrated and a rerun refused as finished."""
    import galaxy.training.train as training

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "calibration_record", killed)
    model = tmp_path / "m"
    assert invoke("train", data / "labels.csv", "-o", model, *COMMON, "--epochs", "1").exit_code != 0
    assert not (model / "card.json").exists()
    monkeypatch.undo()
    result = invoke("train", data / "labels.csv", "-o", model, *COMMON, "--epochs", "1", "--resume",
                    model / "checkpoints" / "last.pt")
    assert result.exit_code == 0, result.output
    card = json.loads((model / "card.json").read_text())
    assert card["calibration"]["temperature"] > 0 and card["metrics"]["validation"]["accuracy"] > 0
    assert card["training"]["data_minutes"] >= 0  # reading the images, counted apart from the epochs' minutes


def test_every_unreadable_training_image_is_named_in_one_failure(tmp_path, data):
    """The first unreadable image ended the run: a folder of survey cutouts took one rerun per bad file."""
    from galaxy.errors import SHOWN
    from galaxy.training.image_cache import build_cache

    paths = sorted(str(p) for p in data.glob("*.jpeg"))
    bad = []
    for k in range(SHOWN + 2):
        path = tmp_path / f"bad{k}.jpeg"
        path.write_text("not a JPEG")
        bad.append(str(path))
    with pytest.raises(ImageReadError) as caught:
        build_cache(paths[:3] + bad + paths[3:5], 0.5, 16, 2, show=False)
    assert caught.value.path == bad[0] and f"{len(bad) - 1} more unreadable" in caught.value.reason
    assert all(name in caught.value.reason for name in bad[1:SHOWN]) and bad[-1] not in caught.value.reason
    assert build_cache(paths[:2], 0.5, 16, 2, show=False).shape == (2, 3, 16, 16)


def test_a_fitted_temperature_at_the_search_range_edge_is_told_apart():
    from galaxy.evaluation.calibration import at_range_edge

    assert at_range_edge(20.08554) and at_range_edge(0.04979)
    assert not at_range_edge(1.0) and not at_range_edge(15.0) and not at_range_edge(0.06)


def test_a_resume_that_changes_the_epochs_says_the_command_alone_no_longer_makes_the_model(tmp_path, data):
    """The card's command is the one that began the run: resumed with more epochs, it named a 1-epoch run."""
    model = tmp_path / "m"
    assert invoke("train", data / "labels.csv", "-o", model, *COMMON, "--epochs", "1").exit_code == 0
    training = json.loads((model / "card.json").read_text())["training"]
    assert "changed_on_resume" not in training
    resume = ["--resume", model / "checkpoints" / "last.pt"]
    assert invoke("train", data / "labels.csv", "-o", tmp_path / "r", *COMMON, "--epochs", "2", *resume).exit_code == 0
    again = ["--resume", tmp_path / "r" / "checkpoints" / "last.pt"]
    assert invoke("train", data / "labels.csv", "-o", tmp_path / "s", *COMMON, "--epochs", "3", "--no-calibrate",
                  *again).exit_code == 0
    training = json.loads((tmp_path / "s" / "card.json").read_text())["training"]
    assert "--epochs 1" in training["command"] and len(training["resumed_with"]) == 2
    assert training["changed_on_resume"] == {"epochs": [1, 3], "calibrate": [True, False]}


def test_a_run_refused_before_its_first_epoch_leaves_no_folder_of_its_own(tmp_path, data):
    """A usage error found once the folders were locked (fewer images than a batch) left -o holding its lock
    file and an empty checkpoints/ folder."""
    out = tmp_path / "m"
    result = invoke("train", data / "labels.csv", "-o", out, "--size", "32", "--batch-size", "64", "--workers", "2",
                    "--val-fraction", "0.25", "-q", "--epochs", "1")
    assert result.exit_code == 2 and "fewer than one batch of 64" in result.output, result.output
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a folder the user made stays, with what it held
    assert invoke("train", data / "labels.csv", "-o", out, "--size", "32", "--batch-size", "64", "--workers", "2",
                  "--val-fraction", "0.25", "-q", "--epochs", "1").exit_code == 2
    assert (out / "notes.txt").read_text() == "mine"


def test_a_full_disk_while_saving_is_one_line_that_says_to_resume(tmp_path, data, monkeypatch):
    """torch.save on a full disk raised a RuntimeError ('unexpected pos' from its zip writer), safetensors a
    SafetensorError: tracebacks that named neither the disk nor the file, and the advice was to start over."""
    import shutil as shutil_module
    from collections import namedtuple

    import galaxy.training.train as training

    def cut_short(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1024 vs 980")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(training.torch, "save", cut_short)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**9, 10**9 - 4096, 4096))
    result = invoke("train", data / "labels.csv", "-o", tmp_path / "m", *COMMON, "--epochs", "1")
    assert result.exit_code == 1, result.output
    assert "last.pt: No space left on device" in result.output and "--resume" in result.output


@pytest.mark.parametrize("damage", ["missing", "not a JPEG"])
def test_one_run_names_the_bad_images_of_both_splits_and_leaves_no_folder(tmp_path, data, damage):
    """The training split's bad files ended the run before the validation split's were read (a bad
    validation image showed only on the next run); a missing file ended the hashing at the first, uncounted;
    and the refusal (an ImageReadError, not a UsageError) left -o holding its lock and checkpoints/."""
    images = sorted(data.glob("*.jpeg"))
    for image in images:
        if damage == "missing":
            image.unlink()
        else:
            image.write_text(damage)
    out = tmp_path / "m"
    result = CliRunner().invoke(cli, ["train", str(data / "labels.csv"), "-o", str(out), *COMMON, "--epochs", "1"])
    assert result.exit_code == 1 and f"{len(images) - 1} more unreadable" in result.output, result.output
    assert not out.exists()


def test_a_file_torch_will_not_load_is_refused_without_advice_to_run_its_code(tmp_path, data):
    """torch's weights-only refusal went on for six lines and advised loading with weights_only=False (which
    runs any code the file holds); a truncated checkpoint said only 'RuntimeError'."""
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"garbage" * 100)
    for option in ("--init", "--resume"):
        result = invoke("train", data / "labels.csv", "-o", tmp_path / option[2:], *COMMON, "--epochs", "1", option,
                        garbage)
        assert result.exit_code == 2 and "torch's weights-only loader refused it" in result.output, result.output
        assert "weights_only" not in result.output and len(result.output.strip().splitlines()[-1]) < 300
    torch.save({"a": torch.zeros(3)}, tmp_path / "whole.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((tmp_path / "whole.pt").read_bytes()[:300])
    result = invoke("train", data / "labels.csv", "-o", tmp_path / "m", *COMMON, "--epochs", "1", "--resume", cut)
    assert result.exit_code == 2 and "(give CHECKPOINT_DIR/last.pt): RuntimeError: PytorchStreamReader" in result.output


def test_a_new_run_never_writes_over_another_runs_checkpoint(tmp_path):
    """A run into the folder of an interrupted one (or with --work-dir at a finished model's checkpoints) had
    replaced its last.pt, which could then no longer be resumed (review, session 45)."""
    from click.testing import CliRunner

    from galaxy.cli import cli

    work = tmp_path / "out" / "checkpoints"
    work.mkdir(parents=True)
    (work / "last.pt").write_bytes(b"an interrupted run's checkpoint")
    result = CliRunner().invoke(cli, ["train", str(EXAMPLES / "labels.csv"), "-o", str(tmp_path / "out"),
                                      "--size", "32", "--epochs", "1"])
    assert result.exit_code == 2 and "is another run's checkpoint: resume it (--resume" in result.output
    assert (work / "last.pt").read_bytes() == b"an interrupted run's checkpoint"
    result = CliRunner().invoke(cli, ["train", str(EXAMPLES / "labels.csv"), "-o", str(tmp_path / "new"),
                                      "--work-dir", str(work), "--size", "32", "--epochs", "1"])
    assert result.exit_code == 2 and not (tmp_path / "new").exists()
