"""The calibration record a model's temperature gives today, without changing its card: the in-sample
ECE and the two-fold cross-fitted ECE averaged over `CROSSFIT_SPLITS` random halvings with their range
(what `galaxy calibrate` records since 2026-11-30; a card calibrated before holds one halving's
figure, seed 0, which moves with the seed more than the margins it was read against).

Scores the model's validation split with ONNX Runtime fp32, as `galaxy calibrate` does, and prints
the record as JSON.

    python benchmarks/crossfit_spread.py sdss-xception ../shared/data/gz1-sdss/labels.csv
"""

from __future__ import annotations

import argparse
import json

from engine.artifacts import resolve_model
from engine.calibrate import _validation_probabilities
from engine.runner import Runner
from galaxy.evaluation.calibration import calibration_record, log_probabilities
from galaxy.labels import validation_split


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model folder or a shipped model's name")
    parser.add_argument("data", help="the labelled data it was trained on (its validation split is scored)")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--path-column", default="file")
    args = parser.parse_args(argv)
    model_dir, card = resolve_model(args.model)
    val = validation_split(model_dir, card, args.data, args.label_column, args.path_column)
    probabilities, labels = _validation_probabilities(Runner(model_dir, card, "onnxruntime"), val)
    record = calibration_record(log_probabilities(probabilities) * card.temperature, labels)
    print(json.dumps({"model": card.name, "card_temperature": card.temperature,
                      "card_ece_after_crossfit": card.calibration.get("ece_after_crossfit"), **record}, indent=1))


if __name__ == "__main__":
    main()
