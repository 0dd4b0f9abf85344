"""`galaxy evaluate` against the findings of a black-box review: inputs it overwrote, failures it kept
quiet, files of an earlier run it left, and figures it reported from data that cannot give them."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from galaxy.cli import cli
from tests.conftest import DATA, EXAMPLES, set_validation_ids

KAGGLE = DATA / "galaxy-zoo" / "kaggle" / "training_solutions_rev1.csv"
KAGGLE_IMAGES = KAGGLE.parent / "images_training_rev1"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def labels_csv(path, rows, encoding="utf-8"):
    """A labels table of (file, label) rows; files relative to the bundled samples are made absolute."""
    with open(path, "w", newline="", encoding=encoding) as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        writer.writerows((str(EXAMPLES / f) if f and "/" not in f else f, label) for f, label in rows)
    return path


@pytest.fixture(scope="module")
def samples():
    """(file, label) of the 40 bundled samples (validation galaxies of the shipped models)."""
    with open(EXAMPLES / "labels.csv", newline="") as fh:
        return [(row["file"], row["label"]) for row in csv.DictReader(fh)]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if evaluate gets as far as loading a model."""
    def refused(*args, **kwargs):
        raise AssertionError("a model was loaded before the refusal")

    monkeypatch.setattr("engine.evaluate.resolve_model", refused)


def test_data_that_is_an_output_file_is_refused_before_anything_is_written(tmp_path, samples, no_model_loads):
    """`evaluate M out/predictions.csv -o out` overwrote its own labels."""
    from engine.evaluate import output_names

    out = tmp_path / "out"
    out.mkdir()
    assert "label_suspects.csv.meta.json" in output_names() and "coverage.png" in output_names()
    for name in output_names():
        data = labels_csv(out / name, samples)
        before = data.read_bytes()
        result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "-o", out, "-q")
        assert result.exit_code == 2 and f"{data} is the {name} evaluate writes" in result.output, result.output
        assert data.read_bytes() == before
        data.unlink()


def test_output_folder_problems_are_usage_errors_before_the_model_loads(tmp_path, samples, no_model_loads):
    """`-o /proc/nope` scored every image, then failed with exit 1."""
    from engine.evaluate import evaluate
    from galaxy.config import EvaluateConfig
    from galaxy.errors import UsageError

    data = labels_csv(tmp_path / "labels.csv", samples)
    result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "-o", data / "sub", "-q")
    assert result.exit_code == 2 and f"evaluate's output: {data} is a file, not a folder" in result.output
    result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "-o", data, "-q")
    assert result.exit_code == 2 and "is a file" in result.output
    with pytest.raises(UsageError, match="is a file"):  # the library refuses it too, not only click
        evaluate(EvaluateConfig("sdss-xception-compact", str(data), str(data), split="all"))


def test_a_model_with_itself_and_images_with_a_labels_table_are_refused(tmp_path, samples, model_copy):
    """`--compare MODEL_DIR` printed "McNemar p 1, agree 1.0000"; `--images` beside a labels CSV was ignored."""
    data = labels_csv(tmp_path / "labels.csv", samples)
    for option in ("--compare", "--ensemble"):
        result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", option, model_copy,
                        "-o", tmp_path / "e", "-q")
        assert result.exit_code == 2 and f"{option} {model_copy} has the weights of" in result.output, result.output
    result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "--ensemble", "sdss-xception",
                    "--ensemble", "sdss-xception", "-o", tmp_path / "e", "-q")
    assert result.exit_code == 2 and "would count that model twice" in result.output
    result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "--images", tmp_path,
                    "-o", tmp_path / "e", "-q")
    assert result.exit_code == 2 and "--images" in result.output and "is not one" in result.output
    assert not (tmp_path / "e" / "report.json").exists()


def test_images_that_cannot_be_read_are_counted_in_a_warning_and_listed(tmp_path, samples, caplog):
    """A missing file and an empty path were dropped without a word (n 38 of 40), the empty path
    reported as the labels file's folder."""
    data = labels_csv(tmp_path / "labels.csv", samples[:6] + [(str(tmp_path / "gone.jpeg"), "spiral"), ("", "spiral")])
    out = tmp_path / "e"
    result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 6
    assert [f["path"] for f in report["failed"]] == [str(tmp_path / "gone.jpeg"), ""]
    assert report["failed"][1]["reason"].startswith("empty path")
    assert [f["id"] for f in report["failed"]] == ["gone", ""]  # the row's id, as classify's errors file has it
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"2 of the 8 labelled images could not be read and are not scored: {out / 'report.json'}" in warnings[0]


def test_one_class_gives_strict_json_and_n_a(tmp_path, samples, caplog):
    """`"roc_auc": NaN` in report.json (strict JSON parsers refuse it) and "ROC AUC nan" printed."""
    data = labels_csv(tmp_path / "labels.csv", [s for s in samples if s[1] == "spiral"][:5])
    result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "-o", tmp_path / "e")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "e" / "report.json").read_text()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    assert json.loads(text, parse_constant=refuse)["roc_auc"] is None
    assert "ROC AUC n/a," in result.output
    assert "only one class (spiral) is labelled among the 5 galaxies scored" in caplog.text


def test_a_run_removes_the_outputs_of_an_earlier_run_it_does_not_write(tmp_path, samples):
    """A run with --compare, then one without into the same folder, left the old label_suspects.csv."""
    out = tmp_path / "e"
    out.mkdir()
    stale = [out / "label_suspects.csv", out / "label_suspects.csv.meta.json"]
    for path in stale + [out / "notes.txt"]:
        path.write_text("an earlier run's\n")
    data = labels_csv(tmp_path / "labels.csv", samples[:4])
    result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in stale)
    assert (out / "notes.txt").read_text() == "an earlier run's\n"  # not evaluate's: left alone
    assert (out / "report.json").is_file()


def test_a_model_with_non_finite_outputs_is_refused(tmp_path, samples, model_copy):
    """A model whose weights are NaN was reported as "ROC AUC 0.5771, ECE 0.0000"."""
    from safetensors.numpy import load_file, save_file

    from galaxy.card import file_sha256

    weights = model_copy / "model.safetensors"
    tensors = {name: np.full_like(t, np.nan) if t.dtype.kind == "f" else t for name, t in load_file(weights).items()}
    save_file(tensors, weights)
    card = json.loads((model_copy / "card.json").read_text())
    card["weights"]["sha256"] = file_sha256(weights)
    (model_copy / "card.json").write_text(json.dumps(card))
    data = labels_csv(tmp_path / "labels.csv", samples[:4])
    result = invoke("evaluate", model_copy, data, "--split", "all", "-o", tmp_path / "e", "-q")
    assert result.exit_code == 1, result.output
    assert "the model's outputs are not finite for 4 of the 4 images: its weights are broken" in result.output
    assert not (tmp_path / "e" / "report.json").exists()
    # nor calibrated (it had been given T = 20.08 and ECE 0) nor checked (torch passed against it, agreement 1),
    # here on the 40 samples as its validation split
    with open(EXAMPLES / "labels.csv", newline="") as fh:
        set_validation_ids(model_copy, [row["id"] for row in csv.DictReader(fh)])
    card = json.loads((model_copy / "card.json").read_text())
    card["split"].pop("val_counts", None)
    (model_copy / "card.json").write_text(json.dumps(card))
    before = (model_copy / "card.json").read_text()
    for command in (["calibrate", model_copy, "--data", EXAMPLES / "labels.csv"],
                    ["check-backends", model_copy, "--data", EXAMPLES / "labels.csv", "--backend", "torch"]):
        result = invoke(*command)
        assert result.exit_code == 1 and "not finite" in result.output and "weights are broken" in result.output, (
            command[0], result.output)
    assert (model_copy / "card.json").read_text() == before


def test_images_names_the_folder_of_a_vote_table_also_for_the_validation_split(tmp_path, model_copy):
    """With --split val the card's recorded image folder (the training machine's) was used, --images ignored."""
    card = json.loads((model_copy / "card.json").read_text())
    card.setdefault("training", {})["config"] = {"vote_threshold": 0.6, "images_dir": str(tmp_path / "gone")}
    (model_copy / "card.json").write_text(json.dumps(card))
    set_validation_ids(model_copy, ["100008", "100023", "100053"])
    result = invoke("evaluate", model_copy, KAGGLE, "--images", KAGGLE_IMAGES, "-o", tmp_path / "e", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["n"] == 3 and report["validation_images"]["scored"] == 3


def test_a_vote_rule_given_against_the_cards_is_refused_for_the_validation_split(tmp_path, model_copy):
    """With --split val, --vote-threshold 0.9 was silently replaced by the card's 0.6: the report was of
    labels the user had not asked for."""
    card = json.loads((model_copy / "card.json").read_text())
    card.setdefault("training", {})["config"] = {"vote_threshold": 0.6}
    (model_copy / "card.json").write_text(json.dumps(card))
    set_validation_ids(model_copy, ["100008", "100023", "100053"])
    given = ["--images", KAGGLE_IMAGES, "-o", tmp_path / "e", "-q"]
    result = invoke("evaluate", model_copy, KAGGLE, "--vote-threshold", "0.9", *given)
    assert result.exit_code == 2 and "--vote-threshold 0.9: --split val scores the labels" in result.output
    assert "--vote-threshold 0.6 (the card's rule" in result.output and not (tmp_path / "e" / "report.json").exists()
    for same in (["--vote-threshold", "0.6"], ["--vote-kind", "fraction"], []):  # the card's rule, or the default
        assert invoke("evaluate", model_copy, KAGGLE, *same, *given).exit_code == 0
        report = json.loads((tmp_path / "e" / "report.json").read_text())
        assert report["vote_rule"] == {"threshold": 0.6, "kind": "fraction", "min_votes": 0}  # the rule used
    # the default's value given explicitly is a rule given too (it was taken for "not given" and replaced)
    result = invoke("evaluate", model_copy, KAGGLE, "--vote-threshold", "0.8", *given)
    assert result.exit_code == 2 and "--vote-threshold 0.8: --split val scores the labels" in result.output


def test_a_labels_csv_with_a_byte_order_mark_reads_and_an_empty_one_says_so(tmp_path, samples):
    """Excel's "CSV UTF-8" gave `has no column 'file'; columns are ['\\ufefffile', 'label']`."""
    from galaxy.errors import UsageError
    from galaxy.labels import column_by_id, load_labelled

    plain = load_labelled(labels_csv(tmp_path / "plain.csv", samples))
    marked = labels_csv(tmp_path / "bom.csv", samples, encoding="utf-8-sig")
    assert marked.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert load_labelled(marked) == plain
    assert column_by_id(marked, "label") == dict(zip(plain.ids, (label for _, label in samples)))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UsageError, match=f"{empty} is empty"):
        load_labelled(empty)


def test_the_most_confident_half_is_one_definition():
    """report.json had accuracy_most_confident_half of 518/519 galaxies beside a 50% coverage of 519/520."""
    from galaxy.evaluation.metrics import accuracy_at_coverage, classification_report

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1039):
        probabilities = rng.dirichlet((1, 1), n)
        labels = rng.integers(0, 2, n)
        half = classification_report(labels, probabilities, ("e", "s"))["accuracy_most_confident_half"]
        assert half == accuracy_at_coverage(labels, probabilities)["0.5"]
    labels = np.array([0, 1, 1])  # the 2 most confident of 3 (round(1.5) = 2): right, wrong
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]])
    assert classification_report(labels, probabilities, ("e", "s"))["accuracy_most_confident_half"] == 0.5


def test_an_ordinary_run_writes_its_files_and_no_failures(tmp_path):
    """The bundled samples, --split val: nothing unreadable, a finite AUC, and exactly evaluate's files."""
    result = invoke("evaluate", "sdss-xception-compact", EXAMPLES / "labels.csv", "-o", tmp_path / "e", "-q")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["n"] == 40 and report["failed"] == []
    assert report["roc_auc"] > 0.9 and report["accuracy"] >= 0.85  # the shipped model's figures, not any AUC
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == sorted(
        ["report.json", "predictions.csv", "predictions.csv.meta.json", "reliability.png", "coverage.png",
         "purity_completeness.png"])


def test_the_vote_rule_of_the_validation_split_is_the_cards(default_model):
    """The --images check read a vote table with the default kind even where the card's rule was another
    (a debiased-only table was then not recognised as a vote table with --split val)."""
    import dataclasses

    from engine.evaluate import vote_rule
    from galaxy.config import EvaluateConfig

    _, card = default_model
    card = dataclasses.replace(card, training={"config": {"vote_kind": "debiased", "vote_threshold": 0.7}})
    val = EvaluateConfig(None, "votes.csv", "out")
    assert (vote_rule(card, val).kind, vote_rule(card, val).threshold) == ("debiased", 0.7)
    everything = EvaluateConfig(None, "votes.csv", "out", split="all", vote_threshold=0.9)
    assert (vote_rule(card, everything).kind, vote_rule(card, everything).threshold) == ("fraction", 0.9)


def test_predictions_open_from_another_folder(tmp_path, monkeypatch):
    """predictions.csv keeps the labels' relative paths; without the folder they are relative to (`cwd` in
    its metadata, as a classify catalog records it) `galaxy montage` run elsewhere could read none."""
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    labels = EXAMPLES.relative_to(ROOT) / "labels.csv"
    assert invoke("evaluate", "sdss-xception-compact", labels, "-o", tmp_path / "e", "-q").exit_code == 0
    assert not csv.DictReader(open(tmp_path / "e" / "predictions.csv")).__next__()["path"].startswith("/")
    assert json.loads((tmp_path / "e" / "predictions.csv.meta.json").read_text())["cwd"] == str(ROOT)
    monkeypatch.chdir(tmp_path)
    result = invoke("montage", tmp_path / "e" / "predictions.csv", "-o", tmp_path / "m.png")
    assert result.exit_code == 0 and "could not be read" not in result.output, result.output


def test_a_vote_table_naming_a_galaxy_or_a_file_twice_is_refused(tmp_path):
    """A vote table's repeated id was scored twice, both rows with the last row's label, and two ids
    naming one file were scored as one id (review of the evaluation statistics)."""
    from galaxy.errors import UsageError
    from galaxy.labels import load_labelled

    with open(KAGGLE, newline="") as fh:
        rows = list(csv.reader(fh))
    header, first, second = rows[0], rows[1], rows[2]

    def table(name, *body):
        path = tmp_path / name
        with open(path, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *body])
        return path

    assert len(load_labelled(table("plain.csv", first, second), votes=_images_rule())) == 2
    with pytest.raises(UsageError, match=f"id '{first[0]}'.* labelled 2 times"):
        load_labelled(table("twice.csv", first, second, first), votes=_images_rule())


def _images_rule():
    from galaxy.votes import VoteRule

    return VoteRule(threshold=0.6, images=str(KAGGLE_IMAGES))


def test_two_ids_naming_one_file_are_refused():
    from galaxy.errors import UsageError
    from galaxy.labels import LabelledSet, require_unique_ids

    with pytest.raises(UsageError, match="file a/x.jpg is named by 2 rows \\(ids 1, 2\\)"):
        require_unique_ids(LabelledSet(("a/x.jpg", "a/y.jpg", "a/x.jpg"), ("1", "3", "2"), (0, 1, 0), ("e", "s")), "t")


def test_a_failed_comparison_leaves_the_earlier_run_whole(tmp_path, samples, model_copy):
    """A --compare model that failed after the predictions were written left them beside the earlier
    run's report and plots: the folder no longer described one run."""
    from safetensors.numpy import load_file, save_file

    from galaxy.card import file_sha256

    data = labels_csv(tmp_path / "labels.csv", samples[:4])
    out = tmp_path / "e"
    assert invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "-o", out, "-q").exit_code == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    weights = model_copy / "model.safetensors"
    save_file({name: np.full_like(t, np.nan) if t.dtype.kind == "f" else t for name, t in load_file(weights).items()},
              weights)
    card = json.loads((model_copy / "card.json").read_text())
    card["weights"]["sha256"] = file_sha256(weights)
    card["name"] = "broken"
    (model_copy / "card.json").write_text(json.dumps(card))
    result = invoke("evaluate", "sdss-xception", data, "--split", "all", "--compare", model_copy, "-o", out, "-q")
    assert result.exit_code == 1 and "not finite" in result.output, result.output
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_by_column_that_finds_no_group_is_refused(tmp_path, samples):
    """--by-column on a vote table (rows by catalog id, the column by file name) gave an empty
    accuracy_by_ table and exit 0."""
    result = invoke("evaluate", "sdss-xception-compact", KAGGLE, "--images", KAGGLE_IMAGES, "--split", "all",
                    "--vote-threshold", "0.6", "--by-column", "Class1.1", "-o", tmp_path / "e", "-q")
    assert result.exit_code == 2 and "is a vote table" in result.output, result.output
    data = labels_csv(tmp_path / "labels.csv", samples[:4])
    result = invoke("evaluate", "sdss-xception-compact", data, "--split", "all", "--by-column", "label",
                    "-o", tmp_path / "f", "-q")
    assert result.exit_code == 0, result.output  # DATA's own column: found


def test_a_validation_list_that_is_not_the_cards_is_refused(tmp_path, model_copy):
    """A val_ids.txt replaced by training ids was scored as the validation split, unsaid."""
    train_ids = (model_copy / "train_ids.txt").read_text().split()[:40]
    (model_copy / "val_ids.txt").write_text("\n".join(train_ids) + "\n")
    result = invoke("evaluate", model_copy, EXAMPLES / "labels.csv", "-o", tmp_path / "e", "-q")
    assert result.exit_code == 1 and "not the validation split" in result.output, result.output


def test_a_compared_model_without_a_validation_list_is_checked_by_its_training_ids(tmp_path, model_copy):
    """It was said to be "trained on N of these validation images", which its train_ids.txt disproved."""
    (model_copy / "val_ids.txt").unlink()
    card = json.loads((model_copy / "card.json").read_text())
    card["name"] = "no-val-list"
    (model_copy / "card.json").write_text(json.dumps(card))
    given = ["evaluate", "sdss-xception", EXAMPLES / "labels.csv", "--compare", model_copy, "-o", tmp_path / "e", "-q"]
    result = invoke(*given)
    assert result.exit_code == 0, result.output  # the samples are none of its training images
    assert json.loads((tmp_path / "e" / "report.json").read_text())["comparison"]["model"]["name"] == "no-val-list"
    (model_copy / "train_ids.txt").unlink()
    result = invoke(*given)
    assert result.exit_code == 2 and "records neither its validation split nor its training images" in result.output


def test_coverage_rounds_half_up():
    """The most confident half of 1,037 galaxies was 518 and of 1,039 520: round() goes to the even side."""
    from galaxy.evaluation.metrics import accuracy_at_coverage

    labels = np.array([0, 0, 1, 1, 1])  # the 3 most confident of 5 (2.5 up): right, right, wrong
    probabilities = np.array([[0.99, 0.01], [0.95, 0.05], [0.9, 0.1], [0.4, 0.6], [0.45, 0.55]])
    assert accuracy_at_coverage(labels, probabilities, (0.5,))["0.5"] == pytest.approx(2 / 3)


def test_a_training_image_is_known_by_its_file_stem_too():
    """A vote table names galaxies by catalog id; a model records its training files' stems as well."""
    from engine.evaluate import learned_image

    assert learned_image("J587736585508487456", "/data/587736585508487456.png", {"587736585508487456"})
    assert not learned_image("J1", "/data/2.png", {"1"})


def test_a_model_of_another_survey_compares_with_a_shipped_one_on_its_own_split(tmp_path, model_copy):
    """--compare sdss-xception on one's own model's validation split (another survey's galaxies) was
    refused: every image outside sdss-xception's split was taken for its training image, though its
    train_ids.txt names none of them (review of bringing one's own data)."""
    card = json.loads((model_copy / "card.json").read_text())
    card.setdefault("training", {})["config"] = {"vote_threshold": 0.6}
    card["name"] = "own"
    (model_copy / "card.json").write_text(json.dumps(card))
    set_validation_ids(model_copy, ["100008", "100023", "100053"])
    (model_copy / "train_ids.txt").write_text("100090\n")
    result = invoke("evaluate", model_copy, KAGGLE, "--images", KAGGLE_IMAGES, "--compare", "sdss-xception",
                    "-o", tmp_path / "e", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "report.json").read_text())["comparison"]["n"] == 3


def test_a_model_without_training_ids_scored_on_any_images_is_said_to_be_unchecked(tmp_path, samples, model_copy,
                                                                                    caplog):
    """`--split all` said nothing where MODEL_DIR records no train_ids.txt (report.json's null alone), as if none
    of the images were its training images (review, session 45)."""
    (model_copy / "train_ids.txt").unlink()
    data = labels_csv(tmp_path / "labels.csv", samples[:4])
    result = invoke("evaluate", model_copy, data, "--split", "all", "-o", tmp_path / "e", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "report.json").read_text())["training_images_scored"] is None
    assert "records no training ids (train_ids.txt): whether these galaxies were its training images is not" in (
        caplog.text)


def test_an_output_folder_inside_a_class_folder_is_refused_before_any_image_is_scored(tmp_path):
    import shutil

    for name in ("elliptical", "spiral"):
        (tmp_path / name).mkdir()
        shutil.copy(sorted(EXAMPLES.glob("*.jpeg"))[0], tmp_path / name)
    result = invoke("evaluate", "sdss-xception-compact", tmp_path, "--split", "all", "-o", tmp_path / "elliptical" /
                    "e", "-q")
    assert result.exit_code == 2 and "would be read as elliptical galaxies" in result.output, result.output
    assert not (tmp_path / "elliptical" / "e").exists()
