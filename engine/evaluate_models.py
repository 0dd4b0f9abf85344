"""`galaxy evaluate`'s models: one model scored on a labelled set, the mean of an ensemble, and a
second model compared with the first on the same images (McNemar, label suspects).

Each model reads the images with its own InputSpec, backend session and calibration; a model that
learned any of the images scored is refused before anything is scored (`_comparable`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.artifacts import resolve_model
from engine.listing import Item
from engine.runner import Runner
from galaxy.card import training_ids, validation_ids
from galaxy.catalog.write import CatalogWriter
from galaxy.errors import UsageError
from galaxy.evaluation.metrics import mcnemar_p, require_finite
from galaxy.labels import learned_image
from galaxy.progress import progress

log = logging.getLogger(__name__)

SUSPECTS = "label_suspects.csv"


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
