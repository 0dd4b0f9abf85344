"""Temperature scaling: the fit recovers a known temperature, and every backend applies it."""

import json

import numpy as np
import pytest

from galaxy.evaluation.calibration import calibration_record, fit_temperature, softmax_t
from galaxy.card import load_card
from tests.conftest import EXAMPLES


def _overconfident(n=20000, true_t=1.0, shown_t=3.0, seed=1):
    """Labels drawn from softmax(z), and the logits z * shown_t of an overconfident model."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, 2))
    p = softmax_t(z, true_t)
    labels = (rng.random(n) < p[:, 1]).astype(np.int64)
    return z * shown_t, labels


def test_fit_recovers_the_temperature():
    logits, labels = _overconfident(shown_t=3.0)
    assert fit_temperature(logits, labels) == pytest.approx(3.0, rel=0.05)
    logits, labels = _overconfident(shown_t=0.5)
    assert fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.05)


def test_record_lowers_ece_and_nll_of_an_overconfident_model():
    logits, labels = _overconfident(n=4000)
    record = calibration_record(logits, labels)
    assert record["nll_after"] < record["nll_before"]
    assert record["ece_after"] < record["ece_before"] / 3
    assert record["ece_after_crossfit"] < record["ece_before"] / 3
    # averaged over random halvings, with their range: one halving's figure moved with its seed more than
    # the margins it was read against (review of evaluation, session 40)
    low, high = record["ece_after_crossfit_range"]
    assert record["crossfit_splits"] == 20 and low <= record["ece_after_crossfit"] <= high and low < high
    assert calibration_record(logits, labels) == record  # seeded: the same record again


def _set_temperature(model_dir, temperature):
    card = load_card(model_dir)
    card.calibration = {"temperature": temperature}
    card.save(model_dir)
    return load_card(model_dir)


def test_every_backend_applies_the_cards_temperature(model_copy):
    from engine import backends
    from galaxy.io.images import load_input

    card = _set_temperature(model_copy, 1.0)  # raw softmax first, whatever the shipped card holds
    batch = np.stack([load_input(p, card.input_spec)[0] for p in sorted(EXAMPLES.glob("*.jpeg"))[:8]])
    options = backends.BackendOptions()
    raw = backends.load("onnxruntime", model_copy, card, options).run(batch)
    hot = _set_temperature(model_copy, 2.0)
    assert hot.engine_key != card.engine_key  # cached engines of the raw model are not reused
    expected = softmax_t(np.log(raw), 2.0)
    for name in ("onnxruntime", "torch"):
        probs = backends.load(name, model_copy, hot, options).run(batch)
        tolerance = 1e-4 if name == "onnxruntime" else 2e-2  # torch runs bf16 on AMX CPUs
        np.testing.assert_allclose(probs, expected, atol=tolerance)
        assert (probs.argmax(1) == raw.argmax(1)).all()  # calibration never changes a label


def test_calibrate_command_composes_with_the_stored_temperature(model_copy, shared_data):
    from galaxy.cli import cli
    from click.testing import CliRunner

    _set_temperature(model_copy, 3.0)  # a deliberately wrong temperature
    result = CliRunner().invoke(cli, ["calibrate", str(model_copy), "--data", str(shared_data / "labels.csv")])
    assert result.exit_code == 0, result.output
    card = json.loads((model_copy / "card.json").read_text())
    first = card["calibration"]["temperature"]
    assert card["calibration"]["ece_after"] < card["calibration"]["ece_before"]
    assert 0.3 < first < 3.0
    result = CliRunner().invoke(cli, ["calibrate", str(model_copy), "--data", str(shared_data / "labels.csv")])
    assert json.loads((model_copy / "card.json").read_text())["calibration"]["temperature"] == first  # exactly:
    # a refit of the same model keeps it (rounding moved it, and a new temperature withdraws the int8 check)
    # ... and the whole record: the refit's "before" is of the calibrated model (the README's
    # `galaxy calibrate galaxy/models/sdss-xception` overwrote ece_before 0.0244 with 0.0187)
    assert json.loads((model_copy / "card.json").read_text())["calibration"] == card["calibration"]


def test_a_new_temperature_withdraws_the_int8_check(model_copy, shared_data, tmp_path, monkeypatch):
    """The int8 model is quantized with the temperature in its graph: after calibrate the card's int8
    check was of another model, yet `galaxy models` listed it as checked, and the failed rebuild
    blamed equal onnxruntime versions."""
    from galaxy.cli import cli
    from click.testing import CliRunner
    from engine import int8_models
    from galaxy.card import load_card
    from galaxy.errors import BackendUnavailable

    import engine.calibrate

    monkeypatch.setenv("GALAXY_CACHE", str(tmp_path / "cache"))
    _set_temperature(model_copy, 3.0)
    assert "onnxruntime-int8" in load_card(model_copy).backends["results"]
    real = engine.calibrate.calibration_record  # a fit away from the shipped temperature (the int8 model's)
    monkeypatch.setattr(engine.calibrate, "calibration_record", lambda *args: {**real(*args), "temperature": 1.5})
    result = CliRunner().invoke(cli, ["calibrate", str(model_copy), "--data", str(shared_data / "labels.csv")])
    assert result.exit_code == 0, result.output
    card = load_card(model_copy)
    assert "onnxruntime-int8" not in card.backends["results"] and "torch" in card.backends["results"]
    assert "temperature refitted from 3 to" in card.backends["not_checked"]["onnxruntime-int8"]
    listed = CliRunner().invoke(cli, ["models", str(model_copy)]).output
    assert "onnxruntime-int8 int8" not in listed.split(str(model_copy))[-1]
    with pytest.raises(BackendUnavailable, match="the same onnxruntime .*temperature or the exported ONNX changed"):
        int8_models.require_int8(model_copy, card)  # its int8.json predates recording the temperature


def test_calibrate_refuses_labels_the_model_was_not_validated_on(model_copy, shared_data, tmp_path):
    """A labels file with every label flipped was taken, and its temperature replaced the good one."""
    import csv

    from galaxy.cli import cli
    from click.testing import CliRunner

    rows = list(csv.DictReader(open(shared_data / "labels.csv")))
    flip = {"elliptical": "spiral", "spiral": "elliptical", "": ""}
    with open(tmp_path / "flipped.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "file": str(shared_data / r["file"]), "label": flip[r["label"]]} for r in rows)
    before = (model_copy / "card.json").read_text()
    result = CliRunner().invoke(cli, ["calibrate", str(model_copy), "--data", str(tmp_path / "flipped.csv")])
    assert result.exit_code == 2 and "it was validated on {'elliptical': 743, 'spiral': 296}" in result.output
    assert (model_copy / "card.json").read_text() == before


def test_calibrate_refuses_labels_swapped_between_galaxies_where_the_card_records_who_has_which(model_copy,
                                                                                                  shared_data):
    """The class counts alone let labels swapped between two galaxies pass; a card that records the digest of
    (id, label) (every model trained since 2026-12-01) refuses them, and takes its own labels."""
    import dataclasses

    from engine.calibrate import _require_the_validated_labels
    from galaxy.card import labels_digest
    from galaxy.errors import UsageError
    from galaxy.labels import validation_split

    card = load_card(model_copy)
    val = validation_split(model_copy, card, shared_data / "labels.csv")
    card.split["val_labels_sha256"] = labels_digest(val)
    _require_the_validated_labels(card, val, "labels.csv")
    labels = list(val.labels)
    a, b = labels.index(0), labels.index(1)
    labels[a], labels[b] = 1, 0
    swapped = dataclasses.replace(val, labels=tuple(labels))
    assert swapped.counts() == val.counts()
    with pytest.raises(UsageError, match="otherwise than the labels it was validated on"):
        _require_the_validated_labels(card, swapped, "swapped.csv")


def test_a_far_off_stored_temperature_is_refitted_in_one_go(model_copy, shared_data, caplog):
    """The refit was a factor on the scaled probabilities, itself held to [e^-3, e^3] and composed: from T = 20
    one run stopped at 0.9958 without a word and the same command again moved it to 0.9761 (review, session
    39). Fitted on the network's own logits, one run gives what a run from T = 1 gives."""
    import engine.calibrate

    _set_temperature(model_copy, 1.0)
    plain = engine.calibrate.calibrate(model_copy, load_card(model_copy), shared_data / "labels.csv")["temperature"]
    _set_temperature(model_copy, 20.0)
    record = engine.calibrate.calibrate(model_copy, load_card(model_copy), shared_data / "labels.csv")
    assert record["temperature"] == pytest.approx(plain, rel=2e-3) and 0.3 < plain < 3
    assert "edge" not in caplog.text


def test_a_fit_at_the_edge_of_the_range_is_warned_of(model_copy, shared_data, monkeypatch, caplog):
    import engine.calibrate

    real = engine.calibrate.calibration_record
    monkeypatch.setattr(engine.calibrate, "calibration_record", lambda *args: {**real(*args), "temperature": 0.04979})
    record = engine.calibrate.calibrate(model_copy, load_card(model_copy), shared_data / "labels.csv")
    assert record["temperature"] == pytest.approx(0.04979) and "at the edge of 0.05-20" in caplog.text
    caplog.clear()  # and when that temperature is kept (a refit of it): the warning had been skipped there
    card = load_card(model_copy)
    assert engine.calibrate.calibrate(model_copy, card, shared_data / "labels.csv") is card.calibration  # kept
    assert "at the edge of 0.05-20" in caplog.text


def test_the_crossfit_spread_script_measures_a_model_without_changing_its_card(default_model, shared_data, capsys):
    import json

    from benchmarks.crossfit_spread import main
    from galaxy.card import file_sha256

    model_dir, card = default_model
    before = file_sha256(model_dir / "card.json")
    main([str(model_dir), str(shared_data / "labels.csv")])
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == card.name and record["fitted_on_n"] == 1039 and record["crossfit_splits"] == 20
    assert record["temperature"] == pytest.approx(card.temperature, rel=1e-3)
    assert file_sha256(model_dir / "card.json") == before
