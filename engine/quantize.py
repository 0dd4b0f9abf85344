"""Static int8 quantisation (QDQ) of the ONNX model, calibrated on real training images.

Activations uint8 and weights int8 per channel (the VNNI/AMX-friendly U8S8 scheme), with
percentile calibration so a few bright pixels (stars, cores) do not stretch the ranges.
Three methods (recipes), each cached beside the fp32 ONNX under the card's engine key + recipe name:
  ptq            every Conv/Gemm/Add in int8;
  ptq-sensitive  accuracy-aware: each node's int8 error measured on training images, the most
                 sensitive kept in fp32 until labels agree with fp32 (engine/quantize_sensitivity.py);
  qat            a seeded fake-quant fine-tune towards the fp32 model's outputs (galaxy/training/qat.py),
                 then ptq of the tuned weights (they stay in the cache, never in the model folder).
Which of them the int8 backend loads, and the recipe a model folder ships to rebuild one without
data (`--ship`): engine/int8_models.py.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from engine.artifacts import onnx_model, replace_recorded, resolve_model
from engine.int8_models import (RECIPES, SHIPPABLE, SHIPPED_INT8, build_int8, free_space, int8_path,
                                private_files, shape_inferred, ship_int8, shipped_int8)
from galaxy.card import validation_ids
from galaxy.errors import ImageReadError, ModelError, unreadable, UsageError
from galaxy.files import remove_quietly, writable_folder, write_atomically
from galaxy.evaluation.metrics import label_agreement
from galaxy.io.images import load_input
from galaxy.labels import load_labelled
from galaxy.votes import rule_from_config
from galaxy.spec import INPUT_NAME

log = logging.getLogger(__name__)

QAT_UNLABELED = 3000  # unlabeled images added to the qat fine-tune
MIN_IMAGES = 16  # the fewest images a calibration, an agreement measurement or a fine-tune takes
SENSITIVE_MIN_IMAGES = 64  # the fewest evaluation images ptq-sensitive ranks its nodes on
TRAINING_AGREEMENT = 0.998  # ptq-sensitive's target on training images: a margin over check-backends' 0.995


def training_paths(model_dir, card, data, label_column="label", path_column="file", limit: int | None = 256
                   ) -> list[str]:
    """Up to `limit` labelled images of `data` outside the model's validation split, shuffled."""
    labelled = load_labelled(data, card.classes, label_column, path_column,
                             rule_from_config(card.training.get("config", {})))
    val_ids = validation_ids(model_dir, card)
    if val_ids is None:  # (the images were taken without a word)
        log.warning("%s records no validation split (val_ids.txt): the int8 images taken from %s cannot be kept "
                    "out of the images its validation figures were measured on", card.name, data)
    keep = [i for i in range(len(labelled)) if labelled.ids[i] not in (val_ids or set())]
    if len(labelled) and not keep:  # ("need at least 16 calibration images, got 0" had not said why)
        raise UsageError(f"all {len(labelled)} labelled images of {data} are in {card.name}'s validation split, "
                         "which int8 calibration and evaluation leave out: give the data it was trained on")
    rng = np.random.default_rng(0)
    rng.shuffle(keep)
    return [labelled.paths[i] for i in keep[:limit]]  # limit None: all


def calibration_tensors(paths, spec, role: str = "calibration") -> np.ndarray:
    """Preprocessed images, float32 (N, C, H, W), for int8 (ONNX Runtime or TensorRT): calibration,
    evaluation or fine-tuning (`role`, for the message)."""
    if len(paths) < MIN_IMAGES:
        raise UsageError(f"need at least {MIN_IMAGES} {role} images, got {len(paths)}")
    tensors, failed = [], []
    for path in paths:  # every unreadable one counted in one run (the first had ended it)
        try:
            tensors.append(load_input(path, spec)[0])
        except ImageReadError as exc:
            failed.append(ImageReadError(exc.path, f"{role} image unreadable: {exc.reason}", exc.stage))
    if failed:
        raise unreadable(failed)
    return np.stack(tensors)


def quantize(model_dir, card, calibration_paths, out=None, method: str = "ptq", evaluation_paths=(),
             target: float = TRAINING_AGREEMENT, finetune_paths=()) -> Path:
    """Build the int8 model from `calibration_paths` (real training images); return its path.

    `evaluation_paths`: other training images (never the validation split) on which the label
    agreement with the original fp32 model is measured and recorded; ptq-sensitive also measures
    each node's sensitivity on them. `finetune_paths` (qat): training and unlabeled images the
    fake-quant fine-tune runs on.
    """
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(out) if out else int8_path(card, method)
    if method == "ptq-sensitive" and len(evaluation_paths) < SENSITIVE_MIN_IMAGES:
        raise UsageError(f"ptq-sensitive needs at least {SENSITIVE_MIN_IMAGES} evaluation images, got "
                         f"{len(evaluation_paths)}")
    if method == "qat" and len(finetune_paths) < 256:
        raise UsageError(f"qat needs at least 256 fine-tuning images, got {len(finetune_paths)}")
    tensors = calibration_tensors(calibration_paths, card.input_spec)

    # batches of one size (ORT's percentile calibrator stacks every batch's outputs: 50 images in batches of 16
    # and 17 had been a ValueError), the largest up to 16 that divides the images (256: 16 of 16, as shipped)
    size = max(b for b in range(1, 17) if len(tensors) % b == 0)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(np.split(tensors, len(tensors) // size))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    fp32 = onnx_model(Path(model_dir), card, canonical=True)  # the tensor names a shipped recipe's ranges key
    out.parent.mkdir(parents=True, exist_ok=True)
    pre, tmp, ranges, tuned = private_files(out, ".pre.onnx", ".tmp.onnx", ".ranges.json", ".qat.onnx")

    def build(path, nodes_to_exclude=(), nodes_to_quantize=()):
        # the first call calibrates and caches the ranges; every later trial build reuses them
        build_int8(pre, path, Reader(), ranges, nodes_to_exclude, nodes_to_quantize)

    started = time.time()
    record = {"method": method, "recipe": RECIPES[method], "calibration_images": len(calibration_paths),
              "weights_sha256": card.weights_sha256}
    try:
        if method == "qat":
            from galaxy.training.qat import QAT_STEPS, quantization_aware_onnx

            record["qat"] = quantization_aware_onnx(model_dir, card, calibration_tensors(finetune_paths, card.input_spec, "fine-tuning"),
                                                    tuned, steps=QAT_STEPS)
        quant_pre_process(str(tuned if method == "qat" else fp32), str(pre), skip_symbolic_shape=True)
        build(tmp)
        if evaluation_paths:
            record.update(_measured(fp32, pre, tmp, build, card, evaluation_paths, target, method))
        record["ranges"] = json.loads(ranges.read_text())  # what `--ship` writes into the model folder
        replace_recorded(tmp, out)
    except OSError as exc:  # a read-only or full cache: named, not the hidden work file (as the rebuild's)
        raise ModelError(f"cannot build the int8 model into {out.parent} ({exc.strerror or exc}; "
                         f"{free_space(out.parent)} free there): set GALAXY_CACHE to a folder that can be "
                         "written") from None
    finally:
        remove_quietly(pre, tmp, ranges, tuned, shape_inferred(pre))
    record["seconds"] = round(time.time() - started, 1)
    write_atomically(out.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))
    log.info("built int8 model %s (%s) from %d calibration images", out, method, len(calibration_paths))
    return out


def _measured(fp32, pre, built, build, card, evaluation_paths, target, method) -> dict:
    """Agreement of `built` with the original fp32 model on training images; for ptq-sensitive short
    of `target`, the search that replaces `built` by its best trial (sensitive nodes kept fp32).
    Returns the record."""
    from engine import quantize_sensitivity

    tensors = calibration_tensors(evaluation_paths, card.input_spec, "evaluation")
    reference = quantize_sensitivity.logits(fp32, tensors)
    agreement = label_agreement(quantize_sensitivity.logits(built, tensors), reference)
    log.info("%s int8: agreement %.4f with fp32 on %d training images (target %.4f)", method, agreement,
             len(tensors), target)
    record = {"training_agreement": round(agreement, 5), "evaluation_images": len(tensors), "target_agreement": target}
    if method != "ptq-sensitive" and agreement < target:  # said at INFO only, a 0.984 went unnoticed (review)
        log.warning("%s int8 agrees with fp32 on %.4f of %d training images, short of %.4f: check-backends will "
                    "likely refuse it (--method ptq-sensitive keeps the sensitive nodes in fp32)", method, agreement,
                    len(tensors), target)
    if method != "ptq-sensitive" or agreement >= target:  # nothing to keep in fp32: no per-node measurement
        return record | ({"excluded_nodes": []} if method == "ptq-sensitive" else {})
    found = quantize_sensitivity.search(pre, build, tensors, reference, target, built, agreement)
    if not found["reached_target"]:
        log.warning("int8 reached at best %.4f agreement on training images (%d nodes kept fp32)",
                    max(t["agreement"] for t in found["trials"]), len(found["excluded_nodes"]))
    best = next(t for t in found["trials"] if t["excluded"] == len(found["excluded_nodes"]))
    return record | found | {"training_agreement": best["agreement"]}


def quantize_model(config) -> str:
    """`galaxy quantize`: build the int8 model from real training images (a QuantizeConfig).

    The labelled training split (never the validation split) is shuffled once (seeded) and cut into
    calibration images, evaluation images (agreement measured and recorded) and, for qat, the rest
    for fine-tuning, together with the unlabeled images.
    """
    if config.ship and config.method not in SHIPPABLE:
        raise UsageError(f"--ship takes ptq-sensitive or ptq: {config.method}'s tuned weights cannot ship as ranges")
    if config.method == "ptq-sensitive" and config.evaluation_images < SENSITIVE_MIN_IMAGES:
        raise UsageError(f"--evaluation-images {config.evaluation_images}: ptq-sensitive measures each node's "
                         f"sensitivity on them; give at least {SENSITIVE_MIN_IMAGES}")
    if 0 < config.evaluation_images < MIN_IMAGES:
        raise UsageError(f"--evaluation-images {config.evaluation_images}: give 0 (no agreement measured) or at "
                         f"least {MIN_IMAGES}")
    model_dir, card = resolve_model(config.model_dir)
    if config.ship:  # before the build (minutes), not after it
        writable_folder(model_dir, f"--ship: cannot write {Path(model_dir) / SHIPPED_INT8}")
    shipped = shipped_int8(model_dir, card)
    if shipped is not None and not config.ship:
        log.warning("%s ships its int8 model (%s): the int8 backend loads that one, rebuilt over this build; "
                    "--ship makes this build the folder's", Path(model_dir) / SHIPPED_INT8, shipped["method"])
    paths = training_paths(model_dir, card, config.calibration, config.label_column, config.path_column,
                           limit=None)
    calibration, rest = paths[:config.images], paths[config.images:]
    evaluation, rest = rest[:config.evaluation_images], rest[config.evaluation_images:]
    finetune = rest + unlabeled_paths(config.unlabeled, QAT_UNLABELED) if config.method == "qat" else []
    built = quantize(model_dir, card, calibration, method=config.method, evaluation_paths=evaluation,
                     finetune_paths=finetune)
    if config.ship:
        log.info("wrote %s", ship_int8(model_dir, card, config.method))
    return str(built)


def unlabeled_paths(folders, limit: int) -> list[str]:
    """Up to `limit` image files of `folders`, a seeded random choice (sorted first, so it is reproducible)."""
    from galaxy.io.images import is_image_path

    found = sorted(str(p) for folder in folders for p in Path(folder).rglob("*") if is_image_path(p))
    rng = np.random.default_rng(0)
    return [found[i] for i in sorted(rng.permutation(len(found))[:limit])]
