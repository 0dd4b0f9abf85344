"""`galaxy evaluate`: how good a model is on labelled data, in numbers and pictures.

Accuracy, balanced accuracy, ROC AUC, confusion matrix, ECE with a reliability diagram, and
accuracy at coverage (the most confident 10/25/50/75/100%), optionally with D4 test-time
augmentation. On the model's own training data use `split="val"`: only the validation ids
recorded with the model are scored.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine import backends
from engine.artifacts import resolve_model
from engine.batching import batches
from engine.checks import validation_split
from engine.listing import Item
from engine.pipelines import open_pipeline
from engine.tta import run_d4
from galaxy import __version__
from galaxy.config import config_dict
from galaxy.errors import UsageError
from galaxy.labels import load_labelled
from galaxy.metrics import accuracy_at_coverage, classification_report, expected_calibration_error
from galaxy.plots import coverage_curve, reliability_diagram
from galaxy.progress import progress
from galaxy.votes import rule_from_config

log = logging.getLogger(__name__)


def evaluate(config) -> dict:
    """Score a model on labelled data (an EvaluateConfig); write report.json and PNG plots."""
    model_dir, card = resolve_model(config.model_dir)
    if config.split == "val":
        labelled = validation_split(model_dir, card, config.data, config.label_column, config.path_column)
    elif config.split == "all":
        labelled = load_labelled(config.data, card.classes, config.label_column, config.path_column,
                                 rule_from_config(config_dict(config)))
    else:
        raise UsageError(f"split {config.split!r} is not 'val' or 'all'")
    session = backends.load(config.backend, model_dir, card, backends.BackendOptions(batch_size=config.batch_size))
    pipeline = open_pipeline(config.decoder, card.input_spec, os.cpu_count() or 1, 4 * config.batch_size,
                             batch_size=config.batch_size, device=session.device)
    label_of = dict(zip(labelled.paths, labelled.labels))
    failed, paths, probs = [], [], []
    bar = progress("evaluating", "img", total=len(labelled), enabled=config.progress)

    for batch in batches(pipeline.decode(Item(p) for p in labelled.paths), config.batch_size,
                         lambda item: failed.append({"path": item.path, "reason": item.error.reason})):
        tensor = batch.tensor[: batch.n_valid]
        probs.append(run_d4(session, tensor) if config.tta else session.run(tensor))
        paths.extend(batch.paths)
        bar.update(batch.n_valid)
    bar.close()
    if not paths:
        raise UsageError(f"no readable labelled images in {config.data}")
    probabilities = np.concatenate(probs)
    labels = np.array([label_of[p] for p in paths])
    report = classification_report(labels, probabilities, card.classes)
    report["ece"], bins = expected_calibration_error(labels, probabilities)
    report["accuracy_at_coverage"] = accuracy_at_coverage(labels, probabilities)
    report["reliability_bins"] = bins
    report["failed"] = failed
    report["model"] = {"name": card.name, "weights_sha256": card.weights_sha256}
    report["backend"] = f"{session.name} {session.precision} on {session.device}"
    report["config"] = config_dict(config)
    report["version"] = __version__
    report["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    title = f"{card.name} ({config.split}{', D4 TTA' if config.tta else ''})"
    reliability_diagram(bins, report["ece"], out / "reliability.png", title)
    coverage_curve(report["accuracy_at_coverage"], out / "coverage.png", title)
    return report
