import errno
import json
from pathlib import Path

import pytest

from galaxy.card import ModelCard, load_card
from galaxy.files import write_atomically
from galaxy.errors import ModelError
from galaxy.spec import FitsStretch, InputSpec


def test_card_round_trip(tmp_path):
    spec = InputSpec(size=80, crop_fraction=0.4, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6),
                     fits=FitsStretch(black_sigma=1.5, peak_level=0.5, u_range=(0.5, 30.0)), fits_bands=("i", "r", "g"))
    card = ModelCard("m", "legacy_xception", ("elliptical", "spiral"), spec, "ab" * 32,
                     training={"command": "galaxy train x"}, split={"seed": 3}, metrics={"validation": {"accuracy": 0.9}})
    card.save(tmp_path)
    loaded = load_card(tmp_path, verify=False)
    assert loaded.to_dict() == card.to_dict()
    assert loaded.input_spec == spec


def test_weights_that_do_not_match_the_card_are_refused(model_copy):
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="do not belong together"):
        load_card(model_copy)


def test_missing_card(tmp_path):
    with pytest.raises(ModelError, match="no card.json"):
        load_card(tmp_path)


@pytest.mark.parametrize("name, architecture, command", [
    ("sdss-xception", "legacy_xception", "galaxy train "),
    ("sdss-xception-compact", "xception_compact_w50_d8", "galaxy distill ")])
def test_shipped_cards_record_how_they_were_made(name, architecture, command):
    from galaxy.card import model_path

    card = load_card(model_path(name))
    assert card.architecture == architecture
    assert card.classes == ("elliptical", "spiral")
    assert card.training["command"].startswith(command)
    assert card.split["val_ids_sha256"] and card.split["seed"] == 0
    assert card.metrics["validation"]["accuracy"] > 0.85


def test_invalid_spec_values_are_named():
    with pytest.raises(Exception, match="crop fraction 1.5"):
        InputSpec(crop_fraction=1.5)


@pytest.mark.parametrize("key", ["mean", "std", "size", "crop_fraction"])
def test_a_card_without_the_normalisation_its_weights_need_is_refused(tmp_path, key):
    """A card whose input_spec lacked mean/std loaded with the dataclass's (0.5, 0.25) and gave confident,
    wrong probabilities without a word."""
    card = ModelCard("m", "legacy_xception", ("elliptical", "spiral"), InputSpec(mean=(0.1,) * 3), "ab" * 32)
    card.save(tmp_path)
    data = json.loads((tmp_path / "card.json").read_text())
    del data["input_spec"][key]
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=f"card.json is not a valid model card: its input_spec lacks {key} "):
        load_card(tmp_path, verify=False)


def test_card_json_is_plain_json(default_model):
    model_dir, _ = default_model
    data = json.loads((model_dir / "card.json").read_text())
    assert data["weights"]["dtype"] == "float16"


def test_shipped_models_are_named_and_found_by_name(tmp_path, monkeypatch):
    from galaxy.card import FULL_MODEL, MODELS_DIR, model_path, shipped_models

    names = shipped_models()
    assert names[0] == FULL_MODEL and all((MODELS_DIR / n / "card.json").is_file() for n in names)
    assert model_path(FULL_MODEL) == MODELS_DIR / FULL_MODEL
    monkeypatch.chdir(tmp_path)
    (tmp_path / FULL_MODEL).mkdir()  # a user's own folder of that name wins over the shipped one
    assert model_path(FULL_MODEL) == tmp_path.joinpath(FULL_MODEL).relative_to(tmp_path)
    assert str(model_path("runs/x")) == "runs/x"  # anything else is a folder path as typed


def test_the_default_is_the_compact_model_with_or_without_a_gpu(monkeypatch):
    """One default model on every machine: the catalog of a survey does not depend on whether
    the machine that classified it had a GPU."""
    from galaxy.card import COMPACT_MODEL, MODELS_DIR, default_model_dir

    assert (MODELS_DIR / COMPACT_MODEL / "card.json").is_file()
    assert default_model_dir() == MODELS_DIR / COMPACT_MODEL
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert default_model_dir() == MODELS_DIR / COMPACT_MODEL


def _card() -> ModelCard:
    return ModelCard("m", "legacy_xception", ("elliptical", "spiral"), InputSpec(size=64), "ab" * 32)


def test_a_card_blocked_by_a_folder_names_the_card_not_a_temporary_file(tmp_path):
    (tmp_path / "card.json").mkdir()
    with pytest.raises(IsADirectoryError) as raised:
        _card().save(tmp_path)
    assert raised.value.filename == str(tmp_path / "card.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]


def test_a_write_that_fails_names_the_destination_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "card.json"
    path.write_text("old")

    def full_disk(tmp):
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")  # what a full disk's write raises: no file named

    with pytest.raises(OSError, match="No space left on device") as raised:
        write_atomically(path, full_disk)
    assert raised.value.filename == str(path) and raised.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_a_folder_that_cannot_be_written_fails_before_the_work(tmp_path, monkeypatch):
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr("pathlib.Path.open", read_only)
    work = []
    with pytest.raises(OSError, match="Read-only file system") as raised:
        write_atomically(tmp_path / "model.onnx", work.append)
    assert raised.value.filename == str(tmp_path / "model.onnx") and work == []
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_left_by_a_killed_process_are_swept_by_the_next_write(tmp_path):
    """A kill -9 while writing a checkpoint left .last.pt.<pid>.tmp (a 108 MB partial) for ever."""
    import os
    import subprocess
    import time

    from galaxy.files import STALE_SECONDS

    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that ran and is gone
    left = tmp_path / f".last.pt.{dead.pid}.tmp"
    left.write_bytes(b"partial")
    old = time.time() - STALE_SECONDS - 60
    os.utime(left, (old, old))
    recent = tmp_path / f".last.pt.{dead.pid + 1}.tmp"  # too recent to be judged: a writer on another host
    recent.write_bytes(b"in progress")
    live = tmp_path / f".last.pt.{os.getppid()}.tmp"  # a process that is running
    live.write_bytes(b"in progress")
    os.utime(live, (old, old))
    write_atomically(tmp_path / "last.pt", lambda tmp: tmp.write_bytes(b"whole"))
    assert (tmp_path / "last.pt").read_bytes() == b"whole"
    assert not left.exists() and recent.exists() and live.exists()


def test_a_shipped_model_is_named_by_its_folder_or_by_its_cards_name(tmp_path, monkeypatch):
    """A catalog's metadata records the card's name (`sdss-xception-compact-64`), which --model refused."""
    from galaxy.card import MODELS_DIR, model_path, shipped_models

    for name in shipped_models():
        card_name = load_card(MODELS_DIR / name, verify=False).name
        assert model_path(name) == model_path(card_name) == MODELS_DIR / name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sdss-xception-96").mkdir()  # a user's folder of that name wins
    assert model_path("sdss-xception-96") == Path("sdss-xception-96")
    assert model_path("nothing-of-that-name") == Path("nothing-of-that-name")


def _edited(model_copy, edit):
    card = model_copy / "card.json"
    data = json.loads(card.read_text())
    edit(data)
    card.write_text(json.dumps(data))
    return model_copy


@pytest.mark.parametrize("edit, says", [
    (lambda d: d["calibration"].update(temperature=-1.0), "temperature -1.0 is not a number in"),
    (lambda d: d["calibration"].update(temperature=0), "temperature 0 is not a number in"),
    (lambda d: d["calibration"].update(temperature="hot"), "temperature 'hot' is not a number in"),
    (lambda d: d["calibration"].update(temperature=None), "temperature None is not a number in"),
    (lambda d: d["classes"].reverse(), "are not in the order of training.config.classes"),
    (lambda d: d.update(calibration=None), "its 'calibration' is None, not an object"),
    (lambda d: d.update(backends=None), "its 'backends' is None, not an object"),
    (lambda d: d.update(classes=[0, 1]), "its classes [0, 1] are not a list of names"),
    (lambda d: d["input_spec"].update(mean="0.1"), "input_spec mean '0.1' is not a list of numbers"),
    (lambda d: d["input_spec"].update(crop_fraction=0), "crop fraction 0 is not in (0, 1]"),
    (lambda d: d["input_spec"].update(fits="x"), "its input_spec fits 'x' is not an object"),
    (lambda d: d["input_spec"]["fits"].update(u_range="ab"), "its input_spec fits u_range 'ab' is not a list of"),
    (lambda d: d["input_spec"].update(fits_bands=3), "its input_spec fits_bands 3 is not a list of band"),
    (lambda d: d["input_spec"].update(sizes=64), "its input_spec has 'sizes', which is not a preprocessing"),
    (lambda d: d["input_spec"].update(layout=3), "its input_spec layout 3 is not text"),
    (lambda d: d.update(format=2), "card format 2 is not 1 (written by a newer galaxy-engine"),
    (lambda d: d["backends"]["results"]["torch"].pop("precision"), "backends.results['torch']"),
    (lambda d: d["backends"].update(results=[]), "its backends.results [] is not an object"),
])
def test_a_hand_edited_card_is_one_line_naming_it(model_copy, edit, says):
    """A negative temperature flipped every label (exit 0), classes reversed by hand put each probability
    under the other name, null sections and a string mean were tracebacks, a bad input_spec a usage error
    naming no file; review of cards, session 39. A `fits` that is not an object, a u_range of text were
    AttributeError / TypeError wording naming no key (session 44)."""
    import re

    _edited(model_copy, edit)
    with pytest.raises(ModelError, match=re.escape(f"{model_copy / 'card.json'}") + ".*" + re.escape(says)):
        load_card(model_copy)


def test_infinity_in_a_card_is_refused_and_an_old_cards_nan_figure_is_not(model_copy):
    """json.loads took Infinity: every galaxy got 0.5 / 0.5 and the label of the first class. A bare NaN (the
    ROC AUC of a one-class split, in cards written before they were strict JSON) is only a figure: it loads."""
    card = model_copy / "card.json"
    text = card.read_text()
    temperature = json.loads(text)["calibration"]["temperature"]
    card.write_text(text.replace(f'"temperature": {temperature}', '"temperature": Infinity', 1))
    with pytest.raises(ModelError, match="temperature None is not a number"):
        load_card(model_copy)
    data = json.loads(text)
    data["metrics"]["validation"]["roc_auc"] = float("nan")
    card.write_text(json.dumps(data))
    assert load_card(model_copy).metrics["validation"]["roc_auc"] is None
