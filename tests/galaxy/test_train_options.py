"""`galaxy train` / `distill` options that make no sense are refused before any image is read, and a
run whose loss stops being a number stops instead of saving a broken model."""

import pytest
from click.testing import CliRunner

from galaxy.cli import cli
from tests.conftest import EXAMPLES


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("command", ["train", "distill"])
@pytest.mark.parametrize("option, match", [
    (["--crop", "0"], "'--crop'"), (["--crop", "2"], "'--crop'"), (["--crop", "1e-9"], "'--crop'"),
    (["--lr", "-1"], "'--lr'"), (["--lr", "0"], "'--lr'"), (["--lr", "nan"], "not a finite number"),
    (["--weight-decay", "-1"], "'--weight-decay'"), (["--drop-rate", "1.5"], "'--drop-rate'"),
    (["--soft-temperature", "0"], "'--soft-temperature'"), (["--soft-weight", "-1"], "'--soft-weight'"),
    (["--scale-consistency", "-1"], "'--scale-consistency'"), (["--scale-consistency", "inf"], "not a finite"),
    (["--fits-probability", "2"], "'--fits-probability'"), (["--limit", "0"], "'--limit'"),
    (["--limit", "-5"], "'--limit'"), (["--zoom-range", "0.8", "0.2"], "LOW is above HIGH"),
    (["--zoom-range", "0", "0.5"], "'--zoom-range'"), (["--unlabeled-framing", "auto"], "give --unlabeled DIR"),
])
def test_options_that_make_no_sense_are_usage_errors(tmp_path, command, option, match):
    where = ["--data", EXAMPLES / "labels.csv", "sdss-xception-compact"] if command == "distill" else [
        EXAMPLES / "labels.csv"]
    result = invoke(command, *where, "-o", tmp_path / "m", *option)
    assert result.exit_code == 2, result.output
    assert match in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("option", [["--freeze-epochs", "-1"], ["--layer-decay", "0"], ["--vote-threshold", "2"],
                                    ["--vote-threshold", "0.5"],
                                    ["--min-votes", "-1"]])
def test_train_only_options_out_of_range_are_usage_errors(tmp_path, option):
    result = invoke("train", EXAMPLES / "labels.csv", "-o", tmp_path / "m", *option)
    assert result.exit_code == 2 and option[0] in result.output, result.output


def test_a_loss_that_is_not_a_number_stops_the_run_without_a_model(tmp_path, monkeypatch):
    """--lr 1e6 or a soft temperature of 0 made the loss NaN: the run went on, saved a model whose
    weights were all NaN with exit 0, and evaluate scored it (ROC AUC 0.58, ECE 0)."""
    import galaxy.training.train as training

    real = training._batch_loss
    monkeypatch.setattr(training, "_batch_loss", lambda *args: real(*args) * float("nan"))
    out = tmp_path / "m"
    result = invoke("train", EXAMPLES / "labels.csv", "-o", out, "--arch", "xception_compact_w25_d2", "--size", "32",
                    "--batch-size", "8", "--val-fraction", "0.25", "--workers", "2", "--epochs", "1", "-q")
    assert result.exit_code == 1, result.output
    assert "training diverged: the loss is nan at epoch 1, batch 1" in result.output
    assert not (out / "card.json").exists() and not (out / "model.safetensors").exists()


@pytest.mark.parametrize("command", ["train", "distill"])
def test_an_output_that_cannot_be_written_is_refused_before_any_image_is_read(tmp_path, command, monkeypatch):
    """train made its folder with a bare mkdir: a file in the way gave a traceback (a folder nothing could
    be written in failed at the first checkpoint, after the caches: the same check, writable_folder,
    refuses it; tests/engine/test_journal.py holds that case for classify)."""
    import galaxy.training.train as training

    monkeypatch.setattr(training, "pick_device", lambda: pytest.fail("got past the output check"))
    where = ["--data", EXAMPLES / "labels.csv", "sdss-xception-compact"] if command == "distill" else [
        EXAMPLES / "labels.csv"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke(command, *where, "-o", blocker / "m")
    assert result.exit_code == 2 and f"cannot write the model: {blocker} is a file, not a folder" in result.output
    result = invoke(command, *where, "-o", tmp_path / "m", "--work-dir", blocker / "ck")
    assert result.exit_code == 2 and "cannot write the checkpoints" in result.output, result.output


def test_a_second_train_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Two runs into one -o both said "wrote": they shared the checkpoints and the last to finish replaced
    the other's model."""
    from galaxy.files import hold_lock
    from galaxy.training.train import TRAIN_LOCK

    out = tmp_path / "m"
    out.mkdir()
    running = hold_lock(out / TRAIN_LOCK, "the first run")  # as the first run holds it
    try:
        result = invoke("train", EXAMPLES / "labels.csv", "-o", out, "--epochs", "1", "--size", "32")
        assert result.exit_code == 2 and f"another galaxy train is writing {out}" in result.output
    finally:
        running.close()
    assert not (out / "card.json").exists()
    # two runs into other -o sharing one --work-dir (or another run's default OUT/checkpoints) wrote over each
    # other's last.pt
    from galaxy.training.train import CHECKPOINTS_LOCK

    shared = tmp_path / "a" / "checkpoints"
    shared.mkdir(parents=True)
    running = hold_lock(shared / CHECKPOINTS_LOCK, "the first run")  # as `train -o a` holds it
    try:
        result = invoke("train", EXAMPLES / "labels.csv", "-o", tmp_path / "m2", "--work-dir", shared, "--epochs", "1",
                        "--size", "32")
        assert result.exit_code == 2 and f"writing its checkpoints to {shared}" in result.output, result.output
    finally:
        running.close()
    # -o and --work-dir one folder: the run does not lock itself out
    result = invoke("train", EXAMPLES / "labels.csv", "-o", tmp_path / "same", "--work-dir", tmp_path / "same",
                    "--epochs", "1", "--size", "32", "--batch-size", "8", "--val-fraction", "0.25")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("options, match", [
    ({"zoom_range": (0.8, 0.2)}, "LOW is above HIGH"), ({"unlabeled_framing": "auto"}, "give --unlabeled DIR"),
    ({"apparent_size": (0.45, 0.2), "augment": ("zoom",)}, "0 < LOW <= HIGH < 1"),
    ({"apparent_size": (0.2, 0.45), "augment": ("rotate",)}, "needs the zoom augmentation"),
    # each was accepted and ignored: the run's weights were the plain run's
    ({"fits_probability": 0.9}, "--fits-probability needs --fits-views"),
    ({"zoom_range": (0.2, 0.3), "augment": ("rotate",)}, "--zoom-range needs the zoom augmentation"),
    ({"soft_weight": 3.0}, "--soft-weight needs a teacher"), ({"soft_temperature": 2.0}, "--soft-temperature needs"),
    ({"teacher_views": "1"}, "--teacher-views needs a teacher"),
    ({"batch_size": 1}, "at least 2 images a step"),  # it ended in a BatchNorm traceback
    # every zoomed view at another scale than the model reads (review of training, session 39)
    ({"crop_fraction": 0.8, "augment": ("zoom",)}, "--crop 0.8 is outside --zoom-range 0.35 0.65")])
def test_a_config_built_in_python_is_held_to_the_commands_checks(options, match):
    """The combination checks lived in the click layer: TrainConfig built in Python skipped them."""
    from galaxy.config import TrainConfig
    from galaxy.errors import UsageError

    with pytest.raises(UsageError, match=match):
        TrainConfig(data="labels.csv", out_dir="m", **options)


def test_vote_options_with_labels_that_are_not_votes_are_refused(tmp_path):
    """--vote-threshold (or --min-votes, --vote-kind, --images) with a labels CSV was ignored, and the card
    recorded a vote rule its labels were never made by."""
    result = invoke("train", EXAMPLES / "labels.csv", "-o", tmp_path / "m", "--epochs", "1", "--size", "32",
                    "--vote-threshold", "0.9", "--images", EXAMPLES)
    assert result.exit_code == 2 and "--vote-threshold, --images make labels from a Galaxy Zoo vote table" in \
        result.output, result.output
    assert not (tmp_path / "m" / "card.json").exists()


def test_export_refuses_a_negative_tolerance():
    """--tolerance -1 was taken, and every export then failed its parity check (exit 1)."""
    result = invoke("export", "sdss-xception-compact", "--tolerance", "-1")
    assert result.exit_code == 2 and "-1.0 is not in the range x>=0" in result.output


def test_the_vote_threshold_help_gives_the_range_the_rule_takes():
    """The help said [0<=x<=1]; a threshold of 0.5 or less makes no clean label and was refused later."""
    result = invoke("train", "--help")
    assert "0.5<x<=1" in " ".join(result.output.split())


def test_a_model_folder_inside_a_class_folder_is_refused(tmp_path):
    import shutil

    for name in ("elliptical", "spiral"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for image in sorted(EXAMPLES.glob("*.jpeg"))[:2]:
            shutil.copy(image, tmp_path / "data" / name)
    result = invoke("train", tmp_path / "data", "-o", tmp_path / "data" / "spiral" / "m", "--epochs", "1")
    assert result.exit_code == 2 and "would be read as spiral galaxies" in result.output, result.output
    assert not (tmp_path / "data" / "spiral" / "m").exists()
