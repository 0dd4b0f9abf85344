"""The CLI in-process, end to end on the shipped model and sample images."""

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from engine.pipelines import dali_installed
from galaxy.card import load_card, model_path
from galaxy.cli import cli
from tests.conftest import EXAMPLES, ROOT, set_validation_ids


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def labels():
    return {row["id"]: row["label"] for row in read_csv(EXAMPLES / "labels.csv")}


def test_classify_samples_to_csv(tmp_path, labels, default_model):
    out = tmp_path / "catalog.csv"
    result = invoke("classify", EXAMPLES, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert list(rows[0]) == ["id", "path", "p_elliptical", "p_spiral", "label"]
    assert len(rows) == 40 and {r["id"] for r in rows} == set(labels)
    for row in rows:
        assert abs(float(row["p_elliptical"]) + float(row["p_spiral"]) - 1) < 1e-5
        assert row["label"] == ("spiral" if float(row["p_spiral"]) > 0.5 else "elliptical")
    accuracy = sum(r["label"] == labels[r["id"]] for r in rows) / len(rows)
    assert accuracy >= 0.85, accuracy
    meta = json.loads((tmp_path / "catalog.csv.meta.json").read_text())
    assert meta["weights"] == default_model[1].weights_sha256
    assert result.output == ""  # -q: nothing to act on, nothing printed


def test_bad_file_among_good_ones(tmp_path, default_model):
    inputs = tmp_path / "in"
    shutil.copytree(EXAMPLES, inputs)
    (inputs / "broken.jpeg").write_bytes(b"\xff\xd8\xff garbage")
    (inputs / "sub").mkdir()
    (inputs / "sub" / "empty.png").write_bytes(b"")
    out = tmp_path / "c.parquet"
    result = invoke("classify", inputs, "-o", out, "-q")
    assert result.exit_code == 3, result.output
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == 40
    assert table.schema.metadata[b"galaxy.model"] == default_model[1].name.encode()
    errors = read_csv(tmp_path / "c.parquet.errors.csv")
    assert sorted(e["path"] for e in errors) == sorted([str(inputs / "broken.jpeg"), str(inputs / "sub" / "empty.png")])
    assert all(e["reason"] for e in errors)


def test_fits_output_and_catalog_input(tmp_path, labels, default_model):
    from astropy.table import Table

    out = tmp_path / "c.fits"
    result = invoke("classify", "--catalog", EXAMPLES / "labels.csv", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    table = Table.read(out)
    assert len(table) == 40 and set(table["id"]) == set(labels)
    assert table.meta["MODEL"] == default_model[1].name and len(table.meta["WEIGHTS"]) == 64


def test_fits_input_gets_objid(tmp_path):
    import numpy as np
    from astropy.io import fits
    from PIL import Image

    rgb = np.asarray(Image.open(min(EXAMPLES.glob("*.jpeg"))), np.float32)
    hdu = fits.PrimaryHDU(rgb.transpose(2, 0, 1)[::-1, ::-1])  # planes as R,G,B; FITS rows bottom-up
    hdu.header["OBJID"] = "42"
    hdu.writeto(tmp_path / "cutout.fits")
    out = tmp_path / "c.csv"
    assert invoke("classify", tmp_path / "cutout.fits", "-o", out, "-q").exit_code == 0
    assert read_csv(out)[0]["id"] == "42"


@pytest.mark.parametrize("args,message", [
    (["classify", "nowhere", "-o", "x.csv"], "does not exist"),
    (["classify", str(EXAMPLES), "-o", "x.txt"], "cannot tell the output format"),
    (["classify", "-o", "x.csv"], "no inputs"),
    (["classify", str(EXAMPLES), "-o", "x.csv", "--backend", "magic"], "unknown backend 'magic'"),
    (["quantize", "sdss-xception-compact", "--calibration", str(EXAMPLES / "labels.csv"), "--method", "qat", "--ship"],
     "--ship takes ptq-sensitive or ptq"),
])
def test_usage_errors_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_imagenet_init_without_network_is_a_clear_error(tmp_path, monkeypatch):
    """No network, whatever the machine: HF_HUB_OFFLINE alone did not stop legacy_xception's download
    (its weights are a GitHub release fetched by torch.hub), nor a cached copy in TORCH_HOME."""
    import torch.hub

    def offline(*args, **kwargs):
        raise ConnectionError("no network in this test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr("timm.models._builder.load_state_dict_from_url", offline)  # timm's own reference
    result = invoke("train", EXAMPLES / "labels.csv", "-o", tmp_path / "m", "--init", "imagenet")
    assert result.exit_code == 2
    assert "could not get ImageNet weights" in result.output and "--init PATH" in result.output


@pytest.mark.slow
def test_train_then_export_then_classify(tmp_path):
    model = tmp_path / "tiny"
    result = invoke("train", EXAMPLES / "labels.csv", "-o", model, "--epochs", "1", "--size", "32",
                    "--batch-size", "8", "--val-fraction", "0.25", "--workers", "2")
    assert result.exit_code == 0, result.output
    card = json.loads((model / "card.json").read_text())
    assert card["split"]["n_val"] == 10 and card["input_spec"]["size"] == 32
    from galaxy.card import labels_digest, load_card
    from galaxy.labels import validation_split
    # which galaxy has which label, as calibrate reads the split back
    assert card["split"]["val_labels_sha256"] == labels_digest(validation_split(model, load_card(model),
                                                                                EXAMPLES / "labels.csv"))
    assert card["training"]["command"].startswith("galaxy train")
    assert (model / "checkpoints" / "last.pt").is_file()
    result = invoke("export", model)
    assert result.exit_code == 0, result.output
    assert json.loads((model / "card.json").read_text())["export"]["parity"]["max_abs_dp"] <= 1e-4
    out = tmp_path / "c.csv"
    assert invoke("classify", EXAMPLES, "-o", out, "--model", model, "-q").exit_code == 0
    assert len(read_csv(out)) == 40


def test_fits_catalog_input_with_ids(tmp_path, labels):
    from astropy.table import Table

    files = sorted(EXAMPLES.glob("*.jpeg"))[:5]
    table = Table({"objid": [f"obj{k}" for k in range(5)], "file_loc": [str(p) for p in files],
                   "ra": [10.0 + k for k in range(5)]})
    table.write(tmp_path / "in.fits")
    out = tmp_path / "c.csv"
    result = invoke("classify", "--catalog", tmp_path / "in.fits", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert [r["id"] for r in rows] == [f"obj{k}" for k in range(5)]
    assert [r["path"] for r in rows] == [str(p) for p in files]
    # FITS names are case-insensitive: a survey's OBJID / FILE_LOC are the same columns (they were refused)
    table.rename_columns(["objid", "file_loc"], ["OBJID", "FILE_LOC"])
    table.write(tmp_path / "upper.fits")
    result = invoke("classify", "--catalog", tmp_path / "upper.fits", "-o", tmp_path / "u.csv", "-q")
    assert result.exit_code == 0, result.output
    assert read_csv(tmp_path / "u.csv") == rows


@pytest.mark.parametrize("signal_name, status, said", [("SIGINT", 130, "Ctrl-C"), ("SIGTERM", 143, "SIGTERM")])
def test_ctrl_c_keeps_the_rows_and_exits_130(tmp_path, signal_name, status, said):
    """SIGTERM (SLURM's scancel and time limit) too: it ended the run at once with 143 and no catalog,
    only the journal."""
    import signal
    import subprocess
    import sys
    import time

    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(60):
        for path in EXAMPLES.glob("*.jpeg"):
            (inputs / f"{path.stem}_{k}.jpeg").symlink_to(path)
    out = tmp_path / "c.csv"
    # Ctrl-C as a shell delivers it: the child starts with SIGINT at its default, whatever this
    # process has (a library imported by an earlier test can leave SIGINT ignored here, and an
    # ignored signal is inherited: the child then ran to the end and exited 0)
    proc = subprocess.Popen([sys.executable, "-m", "galaxy.cli", "classify", str(inputs), "-o", str(out),
                             "--backend", "onnxruntime", "--batch-size", "8", "--commit-every", "16", "-q"],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("c.csv.partial/chunk-*.csv")):
        time.sleep(0.1)
    proc.send_signal(getattr(signal, signal_name))
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == status, stderr
    rows = read_csv(out)
    assert 16 <= len(rows) < 2400
    assert all(r["label"] in ("elliptical", "spiral") for r in rows)  # complete rows only
    assert f"interrupted ({said}): the {len(rows)} images classified so far are in" in stderr
    assert not (tmp_path / "c.csv.partial").exists()
    # the catalog says it is short (it read as a finished one), until a rerun finishes it
    assert json.loads((tmp_path / "c.csv.meta.json").read_text())["complete"] is False
    if signal_name == "SIGTERM":
        assert invoke("classify", inputs, "-o", out, "--backend", "onnxruntime", "-q").exit_code == 0
        assert len(read_csv(out)) == 2400 and json.loads((tmp_path / "c.csv.meta.json").read_text())["complete"]


def test_evaluate_writes_report_and_plots(tmp_path):
    out = tmp_path / "eval"
    from galaxy.card import default_model_dir

    result = invoke("evaluate", default_model_dir(), EXAMPLES / "labels.csv", "-o", out, "--split", "all")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 40 and report["accuracy"] >= 0.85
    assert 0 <= report["ece"] <= 1 and set(report["accuracy_at_coverage"]) == {"0.1", "0.25", "0.5", "0.75", "1"}
    spiral = {row["cut"]: row for row in report["purity_completeness"]["spiral"]}
    assert spiral[0.5]["selected"] == report["confusion"]["matrix"][0][1] + report["confusion"]["matrix"][1][1]
    for name in ("reliability.png", "coverage.png", "purity_completeness.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_evaluate_names_its_unreadable_images_beside_its_predictions_for_report(tmp_path):
    """`galaxy report eval/predictions.csv` said "could not be read: 0" where evaluate had failed on 3 of
    20 images (they were only in report.json); a later run without failures leaves no stale errors file
    (review of evaluation, session 40)."""
    from galaxy.card import default_model_dir

    rows = list(csv.DictReader(open(EXAMPLES / "labels.csv", newline="")))[:20]
    for row in rows[:3]:
        row["file"] = "missing/" + row["file"]
    labels = tmp_path / "l.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows[3:]:  # the labels' paths are read from the CSV's folder
        shutil.copy(EXAMPLES / row["file"], tmp_path / row["file"])
    out = tmp_path / "eval"
    result = invoke("evaluate", default_model_dir(), labels, "-o", out, "--split", "all", "-q")
    assert result.exit_code == 0, result.output
    with open(out / "predictions.csv.errors.csv", newline="") as fh:
        failed = list(csv.DictReader(fh))
    assert [r["path"].split("/")[-2] for r in failed] == ["missing"] * 3 and {r["stage"] for r in failed} == {"read"}
    result = invoke("report", out / "predictions.csv", "-o", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert "<th>could not be read</th><td>3" in (tmp_path / "r.html").read_text()
    result = invoke("evaluate", default_model_dir(), EXAMPLES / "labels.csv", "-o", out, "--split", "all", "-q")
    assert result.exit_code == 0 and not (out / "predictions.csv.errors.csv").exists()


def test_evaluate_on_part_of_the_validation_split_scores_that_part(tmp_path, caplog):
    """The 40 bundled samples are validation galaxies of the shipped models: a labels file holding
    part of the split is scored, with a warning and the count in report.json; none of it is refused."""
    out = tmp_path / "eval"
    result = invoke("evaluate", "sdss-xception-compact", EXAMPLES / "labels.csv", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["validation_images"] == {"in_labels": 40, "scored": 40,
                                                                                   "in_split": 1039}
    assert "holds 40 of the 1039 validation images" in caplog.text
    table = tmp_path / "none.csv"
    table.write_text("id,file,label\n1,x.jpeg,spiral\n")
    result = invoke("evaluate", "sdss-xception-compact", table, "-o", tmp_path / "e2", "-q")
    assert result.exit_code == 2 and "holds 0 of the 1039 validation images" in result.output


def test_classify_tta(tmp_path):
    out = tmp_path / "c.csv"
    files = sorted(EXAMPLES.glob("*.jpeg"))[:4]
    assert invoke("classify", *files, "-o", out, "-q", "--tta", "--backend", "onnxruntime").exit_code == 0
    rows = read_csv(out)
    assert len(rows) == 4
    # what --tta means: the mean of the 8 rotations/flips of each image (a CLI that dropped it passed)
    from engine.artifacts import resolve_model
    from engine.backends import BackendOptions, load
    from engine.tta import run_d4
    from galaxy.io.images import load_input

    model_dir, card = resolve_model(None)
    session = load("onnxruntime", model_dir, card, BackendOptions())
    tensor = np.stack([load_input(f, card.input_spec)[0] for f in files])
    expected = run_d4(session, tensor)[:, card.classes.index("spiral")]
    plain = session.run(tensor)[:, card.classes.index("spiral")]
    got = np.array([float(r["p_spiral"]) for r in rows])
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert np.abs(plain - expected).max() > 1e-3


@pytest.mark.slow
def test_train_resume_continues_from_the_checkpoint(tmp_path):
    model = tmp_path / "tiny"
    common = ["train", EXAMPLES / "labels.csv", "-o", model, "--size", "32", "--batch-size", "8",
              "--val-fraction", "0.25", "--workers", "2"]
    assert invoke(*common, "--epochs", "2").exit_code == 0
    first = json.loads((model / "history.json").read_text())
    result = invoke(*common, "--epochs", "2")  # a finished model is not overwritten by accident
    assert result.exit_code == 2 and "already holds a model" in result.output
    result = invoke(*common, "--epochs", "3", "--resume", model / "checkpoints" / "last.pt")
    assert result.exit_code == 0, result.output
    history = json.loads((model / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[:2] == first
    result = invoke(*common, "--epochs", "3", "--lr", "0.01", "--resume", model / "checkpoints" / "last.pt")
    assert result.exit_code == 2 and "lr: 0.001 then, 0.01 now" in result.output
    result = invoke(*common, "--epochs", "2", "--resume", model / "checkpoints" / "last.pt")  # fewer than it ran
    assert result.exit_code == 2 and "--epochs 2: checkpoint" in result.output and "trained 3 epochs" in result.output
    # resumed into another folder: the epochs before come with the checkpoint (they were lost)
    other = [tmp_path / "other" if a == model else a for a in common]
    shutil.copy(model / "checkpoints" / "last.pt", tmp_path / "epoch3.pt")
    result = invoke(*other, "--epochs", "4", "--resume", tmp_path / "epoch3.pt")
    assert result.exit_code == 0, result.output
    assert [row["epoch"] for row in json.loads((tmp_path / "other" / "history.json").read_text())] == [1, 2, 3, 4]
    card = json.loads((model / "card.json").read_text())["training"]  # the command that started the run: the
    assert "--resume" not in card["command"] and "--epochs 2" in card["command"]  # resume one only copied weights
    assert len(card["resumed_with"]) == 1 and "--resume" in card["resumed_with"][0]
    # a checkpoint after the last epoch, resumed into a new -o: its history comes too
    result = invoke(*[tmp_path / "late" if a == model else a for a in common], "--epochs", "4", "--resume",
                    tmp_path / "other" / "checkpoints" / "last.pt")
    assert result.exit_code == 0 and len(json.loads((tmp_path / "late" / "history.json").read_text())) == 4
    # an -o holding a model this run did not write (a teacher's folder) is refused, not overwritten
    from galaxy.card import default_model_dir

    shutil.copytree(default_model_dir(), tmp_path / "teacher")
    result = invoke(*[tmp_path / "teacher" if a == model else a for a in common], "--epochs", "3", "--resume",
                    model / "checkpoints" / "last.pt")
    assert result.exit_code == 2 and "holds a model that this run did not write" in result.output, result.output
    assert (tmp_path / "teacher" / "model.safetensors").read_bytes() == (default_model_dir() / "model.safetensors"
                                                                         ).read_bytes()
    for junk in (model / "card.json", model / "model.safetensors"):  # not checkpoints: one line, exit 2
        result = invoke(*common, "--epochs", "4", "--resume", junk)
        assert result.exit_code == 2 and "is not a checkpoint of galaxy train" in result.output, result.output


def test_a_resume_from_another_folder_names_the_same_files(tmp_path, monkeypatch):
    """The checkpoint's relative paths were read from the folder of the resume, not of the run it began
    in: the same labels.csv named from its own folder was refused as other data."""
    shutil.copytree(EXAMPLES, tmp_path / "data")
    common = ["--size", "32", "--batch-size", "8", "--val-fraction", "0.25", "--workers", "2"]
    monkeypatch.chdir(tmp_path)
    assert invoke("train", "data/labels.csv", "-o", "m", *common, "--epochs", "1").exit_code == 0
    monkeypatch.chdir(tmp_path / "data")
    resume = ["--resume", "../m/checkpoints/last.pt"]
    result = invoke("train", "labels.csv", "-o", "../m", *common, "--epochs", "2", *resume)
    assert result.exit_code == 0, result.output
    training = json.loads((tmp_path / "m" / "card.json").read_text())["training"]
    # the card names its files as the run that began it did, from the folder it began in
    assert training["cwd"] == str(tmp_path) and training["config"]["data"] == "data/labels.csv"
    assert training["config"]["out_dir"] == str(tmp_path / "m")  # where it wrote, read from cwd as well
    shutil.copy("labels.csv", "other.csv")
    result = invoke("train", "other.csv", "-o", "../m", *common, "--epochs", "3", *resume)
    assert result.exit_code == 2 and "data: " in result.output and "other.csv" in result.output, result.output


@pytest.mark.slow
def test_a_run_killed_and_resumed_keeps_the_best_epoch_from_before_the_kill(tmp_path, monkeypatch):
    """The best weights live in the checkpoint: a kill after the best epoch used to lose it (the
    resumed run kept the best of the epochs after the kill). Killed in the last epoch, and after it."""
    import galaxy.training.train as training

    common = ["train", EXAMPLES / "labels.csv", "--arch", "xception_compact_w25_d2", "--size", "32", "--epochs", "3",
              "--batch-size", "4", "--workers", "2", "-q"]
    assert invoke(*common, "-o", tmp_path / "whole").exit_code == 0
    whole = json.loads((tmp_path / "whole" / "card.json").read_text())
    real_report, calls = training.classification_report, []

    def killed_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) > 4:  # two reports (raw, EMA) per epoch
            raise KeyboardInterrupt
        return real_report(*args, **kwargs)

    monkeypatch.setattr(training, "classification_report", killed_in_epoch_3)
    assert invoke(*common, "-o", tmp_path / "killed").exit_code != 0
    monkeypatch.setattr(training, "classification_report", real_report)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.pt"
    assert invoke(*common, "-o", tmp_path / "killed", "--resume", checkpoint).exit_code == 0
    shutil.copytree(tmp_path / "whole", tmp_path / "after", ignore=shutil.ignore_patterns("model.safetensors"))
    (tmp_path / "after" / "card.json").unlink()  # killed after the last checkpoint, before the model was saved
    assert invoke(*common, "-o", tmp_path / "after", "--resume", tmp_path / "after" / "checkpoints" / "last.pt"
                  ).exit_code == 0
    for run in ("killed", "after"):
        card = json.loads((tmp_path / run / "card.json").read_text())
        assert card["weights"] == whole["weights"], run
        assert card["training"]["chosen"] == whole["training"]["chosen"]


def test_mcnemar_exact_p_values():
    from galaxy.evaluation.metrics import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(7, 7) == 1.0
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32) and mcnemar_p(5, 0) == mcnemar_p(0, 5)
    assert mcnemar_p(27, 29) > 0.8 and mcnemar_p(10, 30) < 0.01


def _model_copy(tmp_path, name, val_ids, source=None):
    """A shipped model (default: the default one) under another folder, its validation split set to
    `val_ids` (weights linked)."""
    from galaxy.card import default_model_dir

    model = tmp_path / name
    model.mkdir()
    for f in (source or default_model_dir()).iterdir():
        (model / f.name).symlink_to(f) if f.name == "model.safetensors" else shutil.copy(f, model / f.name)
    set_validation_ids(model, val_ids)
    return model


def test_evaluate_compare_writes_predictions_and_label_suspects(tmp_path, labels):
    from galaxy.card import model_path

    ids = list(labels)  # a copy of the model itself is refused (test_evaluate_review.py): the other shipped one
    model, other = _model_copy(tmp_path, "a", ids), _model_copy(tmp_path, "b", ids, model_path("sdss-xception"))
    out = tmp_path / "eval"
    result = invoke("evaluate", model, EXAMPLES / "labels.csv", "--compare", other, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    predictions = read_csv(out / "predictions.csv")
    assert len(predictions) == report["n"] == 40
    wrong = {r["id"] for r in predictions if r["label"] != r["true_label"]}
    assert report["accuracy"] == pytest.approx(1 - len(wrong) / 40)
    comparison = report["comparison"]  # two classes: where this model is wrong, the other is right or agrees with it
    suspects = {r["id"] for r in read_csv(out / "label_suspects.csv")}
    assert suspects <= wrong and len(wrong) - len(suspects) == comparison["only_other_right"]
    assert comparison["agree_against_label"] == len(suspects) and comparison["n"] == 40
    assert comparison["failed"] == []  # what only the other model could not read is listed there
    assert comparison["only_this_right"] - comparison["only_other_right"] == round(
        40 * (comparison["accuracy_this"] - comparison["accuracy"]))
    assert invoke("montage", out / "predictions.csv", "-o", tmp_path / "m.png").exit_code == 0


def test_evaluate_compare_refuses_a_model_trained_on_the_images(tmp_path, labels):
    from galaxy.card import model_path

    ids = sorted(labels)
    model, other = _model_copy(tmp_path, "a", ids), _model_copy(tmp_path, "b", ids[1:], model_path("sdss-xception"))
    with open(other / "train_ids.txt", "a") as fh:  # what it learned, as its train_ids.txt records
        fh.write(ids[0] + "\n")
    result = invoke("evaluate", model, EXAMPLES / "labels.csv", "--compare", other, "-o", tmp_path / "e", "-q")
    assert result.exit_code == 2 and "trained on 1 of these validation images" in result.output
    (other / "train_ids.txt").unlink()  # without the record: every image outside its split counts as learned
    result = invoke("evaluate", model, EXAMPLES / "labels.csv", "--compare", other, "-o", tmp_path / "e", "-q")
    assert result.exit_code == 2 and "trained on 1 of these validation images" in result.output


def test_ctrl_c_during_start_up_exits_130(tmp_path, monkeypatch):
    def interrupted_while_loading(config):
        raise KeyboardInterrupt

    monkeypatch.setattr("engine.run.classify", interrupted_while_loading)
    result = CliRunner().invoke(cli, ["classify", str(EXAMPLES), "-o", str(tmp_path / "c.csv"), "-q"])
    assert result.exit_code == 130, result.output
    assert "Aborted!" not in result.output and "interrupted" in result.output


def test_quiet_means_quiet_and_a_normal_run_prints_one_summary_line(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:6]:
        shutil.copy(path, folder)
    jpeg = min(EXAMPLES.glob("*.jpeg")).read_bytes()
    (folder / "truncated.jpeg").write_bytes(jpeg[:1500])  # DALI logs an [ERROR]
    (folder / "header-only.jpeg").write_bytes(jpeg[:600])  # DALI: "[ERROR] [jpeg_parser] Invalid marker"
    half = (EXAMPLES / "587732578296267050.jpeg").read_bytes()
    (folder / "half.jpeg").write_bytes(half[:len(half) // 2])  # libjpeg: "Input file read error"

    def stderr_of(*extra):
        run = subprocess.run([sys.executable, "-m", "galaxy.cli", "classify", str(folder), "-o", str(tmp_path / "c.csv"),
                              "--overwrite", *extra], capture_output=True, text=True, timeout=300)
        assert run.returncode == 3 and run.stdout == "", run.stderr
        return run.stderr.splitlines()

    errors = tmp_path / "c.csv.errors.csv"
    assert stderr_of("-q") == [f"failed 3 of 9; errors in {errors}"]  # only what needs acting on
    lines = [line for line in stderr_of() if not line.startswith("classifying: ")]  # progress lines in a log
    assert len(lines) == 1 and lines[0].startswith("classified 6, failed 3, ")
    assert lines[0].endswith(f"errors in {errors}")


def test_evaluate_ensemble_is_the_mean_of_its_models_and_refuses_leaky_members(tmp_path, labels):
    from galaxy.card import model_path

    ids = sorted(labels)  # a copy of the model itself is refused (test_evaluate_review.py): the other shipped one
    model, other, leaky = (_model_copy(tmp_path, "a", ids), _model_copy(tmp_path, "b", ids, model_path("sdss-xception")),
                           _model_copy(tmp_path, "c", ids[1:], model_path("sdss-xception")))
    with open(leaky / "train_ids.txt", "a") as fh:  # it learned the galaxy its split lacks
        fh.write(ids[0] + "\n")
    runs = {name: tmp_path / name for name in ("a", "b", "pair")}
    for name in ("a", "b"):
        assert invoke("evaluate", tmp_path / name, EXAMPLES / "labels.csv", "-o", runs[name], "-q").exit_code == 0
    result = invoke("evaluate", model, EXAMPLES / "labels.csv", "--ensemble", other, "-o", runs["pair"], "-q")
    assert result.exit_code == 0, result.output
    pair = json.loads((runs["pair"] / "report.json").read_text())
    assert pair["n"] == 40 and [m["dir"] for m in pair["ensemble"]] == [str(other)]
    assert "mean of 2 models" in pair["backend"]
    p = {name: {r["id"]: float(r["p_spiral"]) for r in read_csv(run / "predictions.csv")} for name, run in runs.items()}
    assert all(p["pair"][i] == pytest.approx((p["a"][i] + p["b"][i]) / 2, abs=2e-6) for i in ids)
    result = invoke("evaluate", model, EXAMPLES / "labels.csv", "--ensemble", leaky, "-o", tmp_path / "e", "-q")
    assert result.exit_code == 2 and "--ensemble" in result.output and "trained on 1" in result.output


def test_evaluate_by_column_gives_each_groups_recall(tmp_path):
    from galaxy.card import default_model_dir

    out = tmp_path / "eval"
    result = invoke("evaluate", default_model_dir(), EXAMPLES / "labels.csv", "-o", out, "--split", "all",
                    "--by-column", "label", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    groups, matrix = report["accuracy_by_label"], report["confusion"]["matrix"]
    assert groups["spiral"]["n"] == sum(matrix[1]) and groups["spiral"]["accuracy"] == matrix[1][1] / sum(matrix[1])
    bad = invoke("evaluate", default_model_dir(), EXAMPLES / "labels.csv", "-o", out, "--split", "all",
                 "--by-column", "nope", "-q")
    assert bad.exit_code == 2 and "no column 'nope'" in bad.output


def test_model_is_taken_by_name(tmp_path):
    out = tmp_path / "catalog.csv"
    result = invoke("classify", EXAMPLES, "-o", out, "-q", "--model", "sdss-xception",
                    "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert len(read_csv(out)) == len(list(EXAMPLES.glob("*.jpeg")))
    meta = json.loads((tmp_path / "catalog.csv.meta.json").read_text())  # that model, not the default
    assert meta["model"] == "sdss-xception-96" and meta["weights"] == load_card(model_path("sdss-xception")).weights_sha256
    bad = invoke("classify", EXAMPLES, "-o", out, "--model", "sdss-resnet")
    assert bad.exit_code == 2 and "neither a model folder nor a shipped model" in bad.output


def test_models_lists_the_folders_after_a_broken_one_and_says_which_is_broken(tmp_path):
    """The first folder whose card cannot be read ended the command: the folders after it went unlisted."""
    import shutil

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "card.json").write_text('{"name": ')
    shutil.copytree(ROOT / "galaxy" / "models" / "sdss-xception-compact", tmp_path / "copy")
    result = CliRunner().invoke(cli, ["models", str(tmp_path / "broken"), str(tmp_path / "copy"),
                                      str(ROOT / "galaxy" / "models" / "sdss-xception-compact")])
    assert result.exit_code == 1 and "broken/card.json is not a valid model card" in result.output, result.output
    # the shipped one and the copy named after the broken one; the shipped one named again is listed once
    assert result.output.count("sdss-xception-compact-64 ") == 2


def test_a_card_naming_an_unknown_architecture_is_named_in_the_error(tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(ROOT / "galaxy" / "models" / "sdss-xception-compact", model)
    card = json.loads((model / "card.json").read_text())
    (model / "card.json").write_text(json.dumps({**card, "architecture": "nope"}))
    result = CliRunner().invoke(cli, ["export", str(model)])
    assert result.exit_code == 1 and f"{model / 'card.json'}: unknown timm architecture 'nope'" in result.output


def test_models_lists_each_shipped_model_with_its_checked_backends(monkeypatch):
    """Both shipped cards hold int8 checks of their current int8 model on vnni CPUs (2026-12-01, an AMX Xeon)
    and an avx2 check of the model built before the export's folds were made exact: that one holds nowhere,
    and is said so on an avx2 CPU, not listed as a check on another CPU's arithmetic elsewhere."""
    from engine import machine

    for arithmetic in ("avx2", "vnni", "avx512"):
        monkeypatch.setattr(machine, "int8_arithmetic", lambda: arithmetic)
        result = invoke("models")
        assert result.exit_code == 0, result.output
        for name in ("sdss-xception-96", "sdss-xception-compact-64"):
            assert name in result.output
        (default,) = [line for line in result.output.splitlines() if "(the default" in line]
        assert default.startswith("sdss-xception-compact-64 ")
        speeds = [line for line in result.output.splitlines() if line.strip().startswith("engine images/s on ")]
        assert len(speeds) == 6 and all("onnxruntime " in line for line in speeds)  # each card's three machines
        lines = result.output.splitlines()
        checked = [line for line in lines if line.strip().startswith("checked backends")
                   and "onnxruntime-int8 int8 (99." in line and f"kept on {arithmetic} CPUs; its recipe ships" in line]
        elsewhere = [line for line in lines if "onnxruntime-int8 checked on vnni CPUs only: this CPU's int8 "
                     f"arithmetic ({arithmetic})" in line]
        stale = [line for line in lines if "checked on another model or precision than it would run here: "
                 "onnxruntime-int8" in line]
        expected = {"vnni": (2, 0, 0), "avx2": (0, 0, 2), "avx512": (0, 2, 0)}[arithmetic]
        assert (len(checked), len(elsewhere), len(stale)) == expected, result.output


def test_an_output_that_is_an_input_is_refused_before_anything_is_deleted(tmp_path):
    """`--catalog c.csv -o c.csv --overwrite` deleted the input catalog."""
    table = tmp_path / "c.csv"
    table.write_text("file,label\n" + "".join(f"{p},x\n" for p in sorted(EXAMPLES.glob("*.jpeg"))[:2]))
    before = table.read_text()
    result = invoke("classify", "--catalog", table, "-o", table, "--overwrite", "-q")
    assert result.exit_code == 2 and "is an input of this run" in result.output and table.read_text() == before


def test_an_output_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch):
    """classify refuses before loading the model; any command that meets a refused file says which."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = invoke("classify", EXAMPLES, "-o", blocker / "out.csv")
    assert result.exit_code == 2 and f"{blocker} is a file, not a folder" in result.output
    assert not list(tmp_path.glob("**/*.partial"))

    import engine.run

    def refused(*_):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.csv.partial"))

    monkeypatch.setattr(engine.run, "Journal", refused)  # what a folder without write permission gives a non-root user
    result = invoke("classify", EXAMPLES, "-o", tmp_path / "out.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().endswith(f"Error: {tmp_path / 'out.csv.partial'}: Permission denied")

    def disk_full(*_):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")  # a write's error: no file named

    monkeypatch.setattr(engine.run, "Journal", disk_full)
    result = invoke("classify", EXAMPLES, "-o", tmp_path / "out.csv")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: No space left on device (free space and rerun the same command" in result.output
    monkeypatch.undo()
    catalog = tmp_path / "c.csv"
    assert invoke("classify", *sorted(EXAMPLES.glob("*.jpeg"))[:2], "-o", catalog, "-q").exit_code == 0
    result = invoke("report", catalog, "-o", blocker / "r.html")
    assert result.exit_code == 1 and f"Error: {blocker}: " in result.output and "a folder is needed" in result.output


def test_evaluate_on_training_images_says_so_and_refuses_a_comparison(tmp_path, shared_data, caplog):
    from galaxy.card import model_path

    trained = sorted((model_path("sdss-xception") / "train_ids.txt").read_text().split())[:6]
    rows = {r["objid"]: r for r in csv.DictReader(open(shared_data / "labels.csv")) if r["objid"] in trained}
    table = tmp_path / "trained.csv"
    table.write_text("id,file,label\n" + "".join(f"{i},{shared_data / r['file']},{r['label']}\n"
                                                 for i, r in rows.items()))
    result = invoke("evaluate", "sdss-xception-compact", table, "--split", "all", "-o", tmp_path / "e", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "report.json").read_text())["training_images_scored"] == 6
    # both shipped models learned these: neither is favoured, so the comparison runs (with a warning)
    result = invoke("evaluate", "sdss-xception-compact", table, "--split", "all", "--compare", "sdss-xception",
                    "-o", tmp_path / "c", "-q")
    assert result.exit_code == 0 and "training images of both models" in caplog.text
    fresh = tmp_path / "fresh"  # a model that never saw them, against one that did
    shutil.copytree(model_path("sdss-xception-compact"), fresh)
    (fresh / "train_ids.txt").write_text("\n".join(sorted(set((fresh / "train_ids.txt").read_text().split())
                                                          - set(trained))) + "\n")
    result = invoke("evaluate", fresh, table, "--split", "all", "--compare", "sdss-xception", "-o", tmp_path / "f",
                    "-q")
    assert result.exit_code == 2 and "was trained on 6 of these images, which" in result.output


@pytest.mark.parametrize("option", ["--workers=1000000", "--workers=-1", "--threads=-1",
                                    "--threads=99999999999999999999", "--crop-fraction=1e-9"])
def test_classify_refuses_thread_counts_and_crops_it_cannot_use(tmp_path, option):
    """--workers 1000000 aborted without a word, --threads 1000000 hung ONNX Runtime, -1 gave
    tracebacks; a crop of 1e-9 (under a pixel) ran and flipped most labels."""
    result = invoke("classify", EXAMPLES, "-o", tmp_path / "c.csv", option)
    assert result.exit_code == 2 and "Invalid value" in result.output
    assert not (tmp_path / "c.csv").exists()


def test_hdu_and_bands_reach_the_reader_through_the_command_line(tmp_path):
    """Only their refusals went through the CLI: a classify that dropped --hdu or --bands passed."""
    from astropy.io import fits

    from galaxy.card import default_model_dir
    from galaxy.io.fits import read_fits_cutout

    rng = np.random.default_rng(0)
    y, x = np.mgrid[:128, :128] - 64
    disc = np.exp(-np.hypot(x, y / 0.5) / 10)
    planes = np.stack([100 + rng.normal(0, 1, (128, 128)) + scale * disc for scale in (50, 400, 3000)])
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((8, 8), np.float32) + 1, name="MASK"),
                  fits.ImageHDU(planes.astype(np.float32), name="SCI")]).writeto(tmp_path / "g.fits")
    card = load_card(default_model_dir())
    p = {}
    for bands in ("0,1,2", "2,1,0"):
        out = tmp_path / f"c{bands.replace(',', '')}.csv"
        result = invoke("classify", tmp_path / "g.fits", "--hdu", "SCI", "--bands", bands, "-o", out,
                        "--backend", "onnxruntime", "--decoder", "reference", "-q")
        assert result.exit_code == 0, result.output
        p[bands] = float(read_csv(out)[0]["p_spiral"])
        meta = json.loads((tmp_path / f"{out.name}.meta.json").read_text())
        assert meta["spec"]["fits_bands"] == [int(b) for b in bands.split(",")]  # an object in the sidecar
    assert p["0,1,2"] != p["2,1,0"]  # the band order reached the composite
    pixels, _ = read_fits_cutout(tmp_path / "g.fits", card.input_spec.replace(fits_bands=(2, 1, 0)), hdu="SCI")
    assert pixels[..., 0].mean() > pixels[..., 2].mean()  # plane 2 (brightest) shown as red
    wrong = invoke("classify", tmp_path / "g.fits", "--hdu", "MASK", "-o", tmp_path / "m.csv", "--backend",
                   "onnxruntime", "--decoder", "reference", "-q")
    assert wrong.exit_code == 3  # the 8 x 8 MASK extension, as asked: too small, an errors row


@pytest.mark.skipif(not dali_installed(), reason="nvidia-dali is not installed")
def test_the_summary_says_which_inputs_the_reference_reader_decoded(tmp_path):
    """An all-FITS run on the CPU said "dali decode" though the reference reader read every file."""
    from tests.galaxy.test_sky_columns import _fits_cutouts

    _fits_cutouts(tmp_path / "in", n_files=2)
    for path in sorted(EXAMPLES.glob("*.jpeg"))[:3]:
        shutil.copy(path, tmp_path / "in")
    result = invoke("classify", tmp_path / "in", "-o", tmp_path / "c.csv", "--decoder", "dali")
    assert result.exit_code == 0 and "dali decode (2 by the reference reader)," in result.output, result.output
    result = invoke("classify", tmp_path / "in", "-o", tmp_path / "r.csv", "--decoder", "reference")
    assert result.exit_code == 0 and "reference decode," in result.output, result.output


@pytest.mark.parametrize("command", [["models"], ["evaluate", "--split", "all", "-o", "e"], ["export"]])
def test_a_folder_that_is_not_a_model_is_a_usage_error_for_every_command(tmp_path, command):
    """`galaxy models DIR` listed the shipped cards and then failed with exit 1; classify said exit 2."""
    (tmp_path / "notes").mkdir()
    args = [*command[:1], tmp_path / "notes", *([EXAMPLES / "labels.csv"] if command[0] == "evaluate" else []),
            *command[1:]]
    result = invoke(*args)
    assert result.exit_code == 2 and "is a folder but not a model: it has no card.json" in result.output, result.output
    assert "sdss-xception" not in result.output.split("Error")[0]  # refused before anything is listed


def test_a_bad_progress_interval_is_one_line_before_any_work_folder(tmp_path):
    """GALAXY_PROGRESS_INTERVAL=abc was a traceback once a run had made OUT.partial/ (or train's checkpoints);
    review of the README, session 39."""
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["classify", str(EXAMPLES), "-o", str(out)],
                                env={"GALAXY_PROGRESS_INTERVAL": "abc"})
    assert result.exit_code == 2 and "GALAXY_PROGRESS_INTERVAL='abc': expected a number of seconds >= 0" in result.output
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_runs_the_command():
    """`python -m galaxy.cli_entry ...` ran nothing and exited 0."""
    import subprocess
    import sys

    for module in ("galaxy.cli", "galaxy.cli_entry"):
        done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "version" in done.stdout, done.stdout + done.stderr


def test_an_interrupted_process_ends_even_with_a_thread_stuck_in_a_read():
    """After SIGTERM a run said "interrupted" and saved its work, but a decode thread stuck in a file that looped
    astropy's reader kept the process alive (Python joins threads at exit): 10 minutes, 8 GB, until kill -9;
    review of FITS inputs, session 39. It now ends after galaxy.errors.INTERRUPT_GRACE seconds."""
    import subprocess
    import sys

    script = ("import sys, threading, time\nimport galaxy.errors as errors\nerrors.INTERRUPT_GRACE = 1.0\n"
              "threading.Thread(target=time.sleep, args=(600,)).start()\n"
              "errors.end_at_once_on_interrupt(143)\nsys.exit(143)\n")
    done = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert done.returncode == 143


def test_a_full_disk_while_the_errors_file_is_written_names_the_errors_file(tmp_path, monkeypatch):
    """ENOSPC names no file, and the catalog was blamed for the errors file's write (carried since session 37)."""
    import errno

    import galaxy.catalog.write

    (tmp_path / "in").mkdir()
    shutil.copy(sorted(EXAMPLES.glob("*.jpeg"))[0], tmp_path / "in")
    (tmp_path / "in" / "broken.jpeg").write_bytes(b"not a jpeg")

    def full(self, *args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(galaxy.catalog.write.ErrorWriter, "write", full)
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(cli, ["classify", str(tmp_path / "in"), "-o", str(out), "-q", "--backend", "onnxruntime"])
    assert result.exit_code == 1 and f"{out}.errors.csv: No space left on device" in result.output, result.output
