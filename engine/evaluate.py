"""`galaxy evaluate`: how good a model is on labelled data, in numbers and pictures.

Accuracy, balanced accuracy, ROC AUC, confusion matrix, ECE with a reliability diagram,
accuracy at coverage (the most confident 10/25/50/75/100%), and the purity and completeness of
the sample each cut on a class's probability selects (p_spiral >= 0.8...), optionally with D4 test-time
augmentation. On the model's own training data use `split="val"`: only the validation ids
recorded with the model are scored. predictions.csv holds each image's probabilities, predicted
and true label (a catalog `galaxy montage` reads).

With `ensemble` models, the probabilities are those of the mean of the models (a stronger
teacher; each model reads the images with its own InputSpec). With a second model (`compare`) the same images are scored by both: an exact McNemar test says
whether their accuracies differ beyond chance (the check before shipping a retrained model), and
the galaxies both models put in the same class against the label go to label_suspects.csv.

Mistakes are refused before any image is scored: an output folder that cannot be written, DATA that
is one of the files written, a second model with MODEL_DIR's own weights. Images that cannot be read
are left out, counted in a warning and listed in report.json's `failed`; a model whose outputs are
not finite is refused rather than scored. Files of an earlier run into the folder that this run does
not write (label_suspects.csv) are removed, so the folder describes one run.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.artifacts import resolve_model
from engine.evaluate_models import (SUSPECTS, Scored, _compare, _comparable, _ensemble_members, _score,
                                    _score_ensemble, _write_predictions)
from galaxy.version import __version__
from galaxy.card import strict_json, training_ids, validation_ids
from galaxy.catalog.formats import sidecar_path
from galaxy.catalog.write import ErrorWriter, errors_path
from galaxy.config import config_dict
from galaxy.errors import UsageError
from galaxy.files import same_file, writable_folder
from galaxy.labels import (column_by_id, learned_image, load_labelled, require_outside_class_folders,
                           validation_split)
from galaxy.evaluation.metrics import (accuracy_at_coverage, accuracy_by_group, classification_report,
                                       expected_calibration_error, purity_completeness)
from galaxy.evaluation.plots import coverage_curve, purity_completeness_curves, reliability_diagram
from galaxy.votes import is_vote_table, rule_from_config

log = logging.getLogger(__name__)

REPORT, PREDICTIONS = "report.json", "predictions.csv"
PLOTS = ("reliability.png", "coverage.png", "purity_completeness.png")


def output_names(compare: bool = True) -> tuple[str, ...]:
    """The files evaluate writes into its output folder (with `compare`: also the label suspects);
    a CSV catalog's metadata sidecar included."""
    catalogs = (PREDICTIONS, SUSPECTS) if compare else (PREDICTIONS,)
    return (REPORT, *PLOTS, *(name for catalog in catalogs for name in (catalog, sidecar_path(catalog).name)),
            errors_path(Path(PREDICTIONS)).name)


def _output_folder(config) -> Path:
    """The output folder, made and found writable before any model loads (a folder that cannot be
    written had failed after every image was scored), and holding none of the inputs.

    Raises:
        UsageError: the folder is a file or cannot be made or written, or DATA is a file evaluate writes.
    """
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} is a file: name a folder for {REPORT}, {PREDICTIONS} and the plots")
    for name in output_names():
        if same_file(config.data, out / name):
            raise UsageError(f"{config.data} is the {name} evaluate writes into {out}: it would be overwritten; "
                             "name another output folder")
    return writable_folder(out, "evaluate's output")


def _labelled(model_dir, card, config):
    """The labelled images to score: the model's validation split of DATA, or all of DATA.

    Raises:
        UsageError: an unknown split, or --images with DATA that is not a vote table (whose paths name
            the images, so the folder would be ignored).
    """
    if config.split not in ("val", "all"):
        raise UsageError(f"split {config.split!r} is not 'val' or 'all'")
    if config.images_dir and not is_vote_table(config.data, config.label_column, vote_rule(card, config).kind):
        raise UsageError(f"--images {config.images_dir} is the image folder of a Galaxy Zoo vote table, and "
                         f"{config.data} is not one (it names its images itself): leave --images out")
    if config.split == "val":
        _refuse_another_vote_rule(card, config)
        return validation_split(model_dir, card, config.data, config.label_column, config.path_column,
                                complete=False, images_dir=config.images_dir)
    return load_labelled(config.data, card.classes, config.label_column, config.path_column,
                         rule_from_config(config_dict(config)))


def vote_rule(card, config):
    """The rule a vote table's labels are made with: with --split val the card's (the labels the model
    was validated on; a vote option given against it is refused), else the options given (defaults for
    those left out)."""
    return rule_from_config(card.training.get("config", {}) if config.split == "val" else config_dict(config))


def _refuse_another_vote_rule(card, config) -> None:
    """--split val scores the labels the model was validated on, which a vote table's rule in the card
    made: a --vote-threshold, --vote-kind or --min-votes given against that rule was silently replaced.

    Raises:
        UsageError: DATA is a vote table and an option given differs from the card's rule.
    """
    rule = rule_from_config(card.training.get("config", {}))
    if not is_vote_table(config.data, config.label_column, rule.kind):
        return
    for option, given, recorded in (("vote-threshold", config.vote_threshold, rule.threshold),
                                    ("vote-kind", config.vote_kind, rule.kind),
                                    ("min-votes", config.min_votes, rule.min_votes)):
        if given is not None and given != recorded:
            raise UsageError(f"--{option} {given}: --split val scores the labels {card.name} was validated on, "
                             f"made with --{option} {recorded} (the card's rule, or the default where the card "
                             "records none); leave it out, or score another rule's "
                             "labels with --split all")


def _metrics(scored: Scored, labels: np.ndarray, card, group_of: dict, config) -> dict:
    """The figures of report.json on the scored images, before the records of what was scored."""
    probabilities = scored.probabilities
    report = classification_report(labels, probabilities, card.classes)
    if len(set(labels.tolist())) < 2:
        log.warning("only one class (%s) is labelled among the %d galaxies scored: ROC AUC is undefined "
                    "(null in %s) and balanced accuracy is that class's recall", card.classes[labels[0]],
                    len(labels), REPORT)
    report["ece"], bins = expected_calibration_error(labels, probabilities)
    report["accuracy_at_coverage"] = accuracy_at_coverage(labels, probabilities)
    report["reliability_bins"] = bins
    groups = [group_of.get(i) for i in scored.ids] if config.by_column else None
    if config.by_column:
        report[f"accuracy_by_{config.by_column}"] = accuracy_by_group(labels, probabilities, groups)
    report["purity_completeness"] = purity_completeness(labels, probabilities, card.classes, groups)
    return report


def _clear_outputs(out: Path) -> None:
    """Remove what an earlier run into `out` wrote, once everything is scored and before anything is
    written, so every file there is of this run even if this one stops while writing (label_suspects.csv
    of a run with --compare outlived a run without). Only evaluate's own file names are touched."""
    for name in output_names(True):
        if (out / name).is_file():
            log.debug("removed %s: an earlier run's", out / name)
            (out / name).unlink()


def _groups(config, card, labelled) -> dict:
    """--by-column: each labelled id's group, read from DATA's column.

    Raises:
        UsageError: DATA is a vote table (its rows are read by catalog id, the column by file name), or
            no labelled image is found in the column's table (every group would be empty, unsaid).
    """
    if is_vote_table(config.data, config.label_column, vote_rule(card, config).kind):
        raise UsageError(f"--by-column reads a labels CSV's column by its {config.path_column!r} file names, and "
                         f"{config.data} is a vote table: write a CSV of the scored files and their groups")
    group_of = column_by_id(config.data, config.by_column, config.path_column)
    found = sum(i in group_of for i in labelled.ids)
    if not found:
        raise UsageError(f"--by-column {config.by_column}: none of the {len(labelled)} labelled images is a row of "
                         f"{config.data} by its {config.path_column!r} file name")
    return group_of


def evaluate(config) -> dict:
    """Score a model on labelled data (an EvaluateConfig); write report.json, predictions.csv and PNG plots.

    Images that cannot be read are left out of every figure, listed with their reasons in report.json's
    `failed`, and counted in a warning.

    Raises:
        UsageError: a wrong input or output (before any image is scored).
        ModelError: a model whose outputs are not finite.
    """
    made = not Path(config.out_dir).exists()
    out = _output_folder(config)
    model_dir, card = resolve_model(config.model_dir)
    try:
        require_outside_class_folders(out, config.data, card.classes, "evaluate's output folder")
    except UsageError:
        if made:  # (the folder was made to prove it writable before the model was read)
            out.rmdir()
        raise
    labelled = _labelled(model_dir, card, config)
    other = _comparable(config.compare, model_dir, card, labelled, config) if config.compare else None
    members = _ensemble_members(model_dir, card, labelled, config)
    group_of = _groups(config, card, labelled) if config.by_column else {}
    scored = _score_ensemble(model_dir, card, members, labelled, config)
    theirs = _score(*other, labelled, config) if other else None  # before any output is touched: a failure
    # here had left this run's predictions beside an earlier run's report and plots
    label_of = dict(zip(labelled.paths, labelled.labels))
    labels = np.array([label_of[p] for p in scored.paths])
    report = _metrics(scored, labels, card, group_of, config)
    report["failed"] = scored.failed
    if scored.failed:
        log.warning("%d of the %d labelled images could not be read and are not scored: %s lists them with "
                    "the reasons (`failed`)", len(scored.failed), len(labelled), out / REPORT)
    report["model"] = {"name": card.name, "weights_sha256": card.weights_sha256}
    if config.split == "val":  # a labels file may hold part of the split: say how much was scored
        report["validation_images"] = {"in_labels": len(labelled), "scored": len(scored.ids),
                                       "in_split": len(validation_ids(model_dir, card))}
    if config.split == "all":  # the model's own training images score high: say how many were scored
        own = training_ids(model_dir, card)
        report["training_images_scored"] = None if own is None else sum(
            learned_image(i, path, own) for i, path in zip(scored.ids, scored.paths))
        if report["training_images_scored"]:
            log.warning("%d of the %d galaxies scored are %s's training images: these figures flatter it",
                        report["training_images_scored"], len(scored.ids), card.name)
        elif own is None:  # (said nothing, as if none were)
            log.warning("%s records no training ids (train_ids.txt): whether these galaxies were its training "
                        "images is not checked, and figures on them may flatter it", card.name)
    if config.ensemble:
        report["ensemble"] = [{"dir": str(d), "name": c.name, "weights_sha256": c.weights_sha256} for d, c in members]
    rule = vote_rule(card, config)
    if is_vote_table(config.data, config.label_column, rule.kind):  # the rule the labels were made with (the
        # config records a vote option left out as null: the card's rule with --split val, else the default)
        report["vote_rule"] = {"threshold": rule.threshold, "kind": rule.kind, "min_votes": rule.min_votes}
    report["backend"] = scored.backend
    report["config"] = config_dict(config)
    report["version"] = __version__
    report["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _clear_outputs(out)
    _write_predictions(out / PREDICTIONS, scored, labels, card, config, members)
    if scored.failed:  # beside the catalog, as classify's: `galaxy report` of predictions.csv had said "0 unread"
        errors = ErrorWriter(errors_path(out / PREDICTIONS))
        for failure in scored.failed:
            errors.write(failure["id"], failure["path"], failure.get("stage", "read"), failure["reason"])
        errors.close()
    if config.compare:
        report["comparison"] = _compare(scored, theirs, labels, card, *other, config, out, members)
    report = strict_json(report)
    (out / REPORT).write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    title = (f"{card.name}{f' + {len(config.ensemble)} more' if config.ensemble else ''} "
             f"({config.split}{', D4 TTA' if config.tta else ''}"
             f"{f', crop {config.crop_fraction:g}' if config.crop_fraction is not None else ''})")
    reliability_diagram(report["reliability_bins"], report["ece"], out / PLOTS[0], title)
    coverage_curve(report["accuracy_at_coverage"], out / PLOTS[1], title)
    purity_completeness_curves(report["purity_completeness"], out / PLOTS[2], title)
    return report
