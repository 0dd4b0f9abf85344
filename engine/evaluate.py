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
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.artifacts import resolve_model
from engine.listing import Item
from engine.runner import Runner
from galaxy.version import __version__
from galaxy.card import strict_json, training_ids, validation_ids
from galaxy.catalog.formats import sidecar_path
from galaxy.catalog.write import CatalogWriter, ErrorWriter, errors_path
from galaxy.config import config_dict
from galaxy.errors import UsageError
from galaxy.files import same_file, writable_folder
from galaxy.labels import (column_by_id, learned_image, load_labelled, require_outside_class_folders,
                           validation_split)
from galaxy.evaluation.metrics import (accuracy_at_coverage, accuracy_by_group, classification_report,
                                       expected_calibration_error, purity_completeness, require_finite)
from galaxy.evaluation.plots import coverage_curve, purity_completeness_curves, reliability_diagram
from galaxy.progress import progress
from galaxy.votes import is_vote_table, rule_from_config

log = logging.getLogger(__name__)

REPORT, PREDICTIONS, SUSPECTS = "report.json", "predictions.csv", "label_suspects.csv"
PLOTS = ("reliability.png", "coverage.png", "purity_completeness.png")


def output_names(compare: bool = True) -> tuple[str, ...]:
    """The files evaluate writes into its output folder (with `compare`: also the label suspects);
    a CSV catalog's metadata sidecar included."""
    catalogs = (PREDICTIONS, SUSPECTS) if compare else (PREDICTIONS,)
    return (REPORT, *PLOTS, *(name for catalog in catalogs for name in (catalog, sidecar_path(catalog).name)),
            errors_path(Path(PREDICTIONS)).name)


@dataclass
class Scored:
    """One model's probabilities over the readable images of a labelled set, in decode order."""

    ids: list[str]
    paths: list[str]
    probabilities: np.ndarray
    failed: list[dict]
    backend: str

    def subset(self, rows) -> "Scored":
        return Scored([self.ids[r] for r in rows], [self.paths[r] for r in rows], self.probabilities[rows], [],
                      self.backend)


def _score(model_dir, card, labelled, config) -> Scored:
    runner = Runner(model_dir, card, config.backend, config.decoder, config.batch_size, tta=config.tta,
                    spec=card.input_spec.with_crop(config.crop_fraction))
    id_of = dict(zip(labelled.paths, labelled.ids))
    failed, paths, probs = [], [], []
    bar = progress(f"evaluating {card.name}", "img", total=len(labelled), enabled=config.progress)

    def unread(failure):  # with the labelled row's id, as classify's errors file names a row
        failed.append({"id": id_of.get(failure.path, failure.id), "path": failure.path, "stage": failure.stage,
                       "reason": failure.reason})
        bar.update(1)

    for result in runner.run((Item(p) for p in labelled.paths), unread):
        probs.append(result.probabilities)
        paths.extend(result.paths)
        bar.update(len(result.paths))
    bar.close()
    if not paths:
        first = f": {failed[0]['path']}: {failed[0]['reason']}" if failed else ""
        raise UsageError(f"no readable labelled images in {config.data} ({len(failed)} unreadable{first})")
    probabilities = np.concatenate(probs)
    require_finite(probabilities, f"{card.name} ({model_dir})")
    return Scored([id_of[p] for p in paths], paths, probabilities, failed, f"{runner.backend} on {runner.session.device}")


def _write_predictions(path: Path, scored: Scored, labels: np.ndarray, card, config, members=()) -> None:
    """A catalog of the scored images (so `galaxy montage` reads it) with a `true_label` column."""
    spec = card.input_spec.with_crop(config.crop_fraction)
    # what `galaxy montage` and `galaxy report` need: the folder the relative paths are from, and how the
    # probabilities were made (a report shows the model card's figures only for the card's own reading)
    metadata = {"model": card.name, "weights": card.weights_sha256, "temp": card.temperature,
                "spec": json.dumps(spec.to_dict()), "backend": scored.backend, "cwd": os.getcwd(),
                "tta": json.dumps(config.tta)}
    if members:  # the mean of MODEL_DIR and these
        metadata["ensemble"] = json.dumps([{"name": c.name, "weights": c.weights_sha256} for _, c in members])
    writer = CatalogWriter(path, card.classes, metadata, "csv", extra=(("true_label", "text"),))
    writer.write(scored.ids, scored.paths, scored.probabilities,
                 [{"true_label": card.classes[k]} for k in labels])
    writer.close()


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: P(a split of the discordant pairs at least this uneven | equal accuracy)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def _comparable(name, model_dir, card, labelled, config, role: str = "--compare"):
    """(folder, card) of another model scored on the same images; refused if it cannot be scored fairly on `labelled`."""
    other_dir, other = resolve_model(name)
    if other.weights_sha256 == card.weights_sha256:
        use = "compared with itself agrees everywhere" if role == "--compare" else "averaged with itself is itself"
        raise UsageError(f"{role} {name} has the weights of {card.name} ({model_dir}; sha256 "
                         f"{card.weights_sha256[:12]}...): a model {use}; name another model")
    if other.classes != card.classes:
        raise UsageError(f"{role} {name} has classes {other.classes}, {card.name} has {card.classes}")
    other_train, own_recorded = training_ids(other_dir, other), None  # own_recorded: MODEL_DIR's, read below
    other_val = validation_ids(other_dir, other) if config.split == "val" and other_train is None else None
    if other_val is not None:  # a model that does not record its training images: outside its validation
        # split counts as trained on (its train_ids.txt, where it has one, says exactly: another survey's
        # validation galaxies had all been called its training images)
        trained_on = [i for i in labelled.ids if i not in other_val]
    else:  # its training ids tell (--split all, or a model that records them)
        own_recorded = training_ids(model_dir, card)
        own_train = own_recorded or set()
        if other_train is None and config.split == "val":
            raise UsageError(f"{role} {name} records neither its validation split nor its training images: "
                             "whether it learned these validation images cannot be checked")
        if other_train is None:
            log.warning("%s %s records no training ids: whether it was trained on these images is not checked",
                        role, name)
        learned = {i for i, path in zip(labelled.ids, labelled.paths) if learned_image(i, path, other_train or set())}
        if learned & own_train:  # both learned them: neither is favoured, but neither generalises there
            log.warning("%d of these images are training images of both models", len(learned & own_train))
        trained_on = sorted(learned - own_train)
    if trained_on:
        if config.split == "val":
            which = "validation images"
        elif own_recorded is not None:
            which = f"images, which {card.name} was not"
        else:
            which = f"images ({card.name} records no training ids)"
        raise UsageError(f"{role} {name} was trained on {len(trained_on)} of these {which} "
                         f"(e.g. {trained_on[0]}): a comparison on them would favour it")
    return other_dir, other


def _ensemble_members(model_dir, card, labelled, config) -> list[tuple]:
    """(folder, card) of each `config.ensemble` model, checked before anything is scored: each can be
    scored fairly on `labelled` and no two of the models have the same weights (the mean would count
    one model twice)."""
    members = [_comparable(name, model_dir, card, labelled, config, "--ensemble") for name in config.ensemble]
    seen = {}
    for name, (_, member) in zip(config.ensemble, members):
        if member.weights_sha256 in seen:
            raise UsageError(f"--ensemble {name} has the weights of --ensemble {seen[member.weights_sha256]}: "
                             "the mean would count that model twice")
        seen[member.weights_sha256] = name
    return members


def _score_ensemble(model_dir, card, members, labelled, config) -> Scored:
    """The model's probabilities, averaged with those of the `members` models (each with its own
    InputSpec, backend session and calibration) over the images every member could read."""
    scored = _score(model_dir, card, labelled, config)
    if not members:
        return scored
    members = [scored] + [_score(member_dir, member, labelled, config) for member_dir, member in members]
    where = [{path: i for i, path in enumerate(m.paths)} for m in members]
    rows = [r for r, path in enumerate(scored.paths) if all(path in w for w in where)]
    probabilities = np.mean([m.probabilities[[w[scored.paths[r]] for r in rows]] for m, w in zip(members, where)],
                            axis=0).astype(np.float32)
    unread = {}  # one record per file: the members mostly fail the same ones
    for failure in (f for m in members for f in m.failed):
        unread.setdefault(failure["path"], failure)
    return Scored([scored.ids[r] for r in rows], [scored.paths[r] for r in rows], probabilities, list(unread.values()),
                  f"{scored.backend}, mean of {len(members)} models")


def _compare(scored: Scored, theirs: Scored, labels: np.ndarray, card, other_dir, other, config, out: Path,
             members=()) -> dict:
    """A second model scored on the same images (`theirs`): paired accuracy test and the labels both models reject.

    Galaxies where two independently trained models agree with each other and not with the label
    are written to label_suspects.csv: mostly label noise, or a blind spot the two share. Their
    share estimates how far below 100% any model must stay against these labels.
    """
    where = {path: i for i, path in enumerate(scored.paths)}
    pairs = np.array([(where[path], j) for j, path in enumerate(theirs.paths) if path in where], dtype=int).reshape(-1, 2)
    rows = pairs[:, 0]
    a, y = scored.probabilities[rows].argmax(axis=1), labels[rows]
    b = theirs.probabilities[pairs[:, 1]].argmax(axis=1)
    agree = a == b
    suspects = rows[agree & (a != y)]
    only_a, only_b = int(np.sum((a == y) & (b != y))), int(np.sum((b == y) & (a != y)))
    unread_here = {failure["path"] for failure in scored.failed}
    _write_predictions(out / SUSPECTS, scored.subset(suspects), labels[suspects], card, config, members)
    return {"model": {"name": other.name, "weights_sha256": other.weights_sha256, "dir": str(other_dir)},
            "backend": theirs.backend, "n": len(rows),
            "accuracy": float(np.mean(b == y)), "accuracy_this": float(np.mean(a == y)),
            "only_this_right": only_a, "only_other_right": only_b, "mcnemar_p": mcnemar_p(only_a, only_b),
            "agreement": float(np.mean(agree)), "accuracy_where_agree": float(np.mean(a[agree] == y[agree])),
            "agree_against_label": len(suspects), "agree_against_label_fraction": len(suspects) / max(len(rows), 1),
            "label_suspects": SUSPECTS,
            # images the other model could not read (they are not in its n): only a smaller n had said so
            "failed": [f for f in theirs.failed if f["path"] not in unread_here]}


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
