"""Accuracy-aware post-training int8: measure each node's quantization error, keep the worst in fp32.

The search runs on training images only (the validation split is kept for `check-backends`):
  1. calibrate once (the ranges are cached in a file and reused by every trial build);
  2. for every quantizable node, build a model where ONLY that node is int8 and measure how far its
     log-probabilities move from fp32 (mean absolute change over the evaluation images, so the many
     near-boundary images count more than a few outliers with large errors; a shift
     common to all logits changes no probability, so it does not count);
  3. keep the k most sensitive nodes in fp32, k = 0 (the plain model, measured by the caller), 1, 2,
     4, 8, ..., until label agreement with fp32 on the evaluation images reaches `target` (short of
     it, the k that agreed best); the best trial's model is kept, not built again.
Every trial is deterministic (fixed images, fixed calibration), so the same inputs give the same
excluded nodes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from engine.int8_models import private_files
from galaxy.cores import usable_cores
from galaxy.evaluation.metrics import label_agreement
from galaxy.spec import INPUT_NAME, OUTPUT_NAME

log = logging.getLogger(__name__)

# Ops whose int8 form changes the arithmetic; Relu/MaxPool/Flatten only pass quantized tensors on.
SENSITIVE_OPS = ("Conv", "Gemm", "MatMul", "Add")
MAX_EXCLUDED_FRACTION = 0.25  # past this the model is hardly int8 any more: give up instead


def logits(path, tensors: np.ndarray, batch: int = 32) -> np.ndarray:
    """float32 (N, K) logits of ONNX model `path` on (N, C, H, W) tensors, ONNX Runtime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cores()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: tensors[i:i + batch]})[0]
                           for i in range(0, len(tensors), batch)])


def log_softmax(logits_: np.ndarray) -> np.ndarray:
    """Log-probabilities of (N, K) logits, exact (no clipping: the scores compare tiny probabilities too)."""
    shifted = logits_ - logits_.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def candidate_nodes(model_path) -> list[str]:
    """Names of the nodes of `model_path` whose quantization is worth measuring, in graph order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in SENSITIVE_OPS and n.name]


def measure(pre, build, tensors, reference, nodes) -> dict[str, float]:
    """Mean absolute log-probability change of each node quantized alone (`build(out, nodes_to_quantize=[n])`)."""
    scores, reference = {}, log_softmax(reference)
    trial = private_files(Path(pre), ".trial.onnx")[0]  # beside the pre-processed model
    try:
        for i, node in enumerate(nodes):
            build(trial, nodes_to_quantize=[node])
            scores[node] = float(np.mean(np.abs(log_softmax(logits(trial, tensors)) - reference)))
            log.info("sensitivity %d/%d %s: %.3g", i + 1, len(nodes), node, scores[node])
    finally:
        trial.unlink(missing_ok=True)
    return scores


def search(pre, build, tensors, reference, target: float, out, plain_agreement: float) -> dict:
    """Measure every node, then exclude the most sensitive until agreement >= `target`.

    Args:
        pre: the pre-processed fp32 ONNX model.
        build: `build(out, nodes_to_exclude=..., nodes_to_quantize=...)` writes an int8 model with the
            cached calibration.
        tensors: float32 (N, C, H, W) training images (not the validation split).
        reference: float32 (N, K) fp32 logits of `tensors`.
        target: label agreement with fp32 to reach on `tensors`.
        out: holds the plain int8 model (nothing excluded) on entry, the best trial's model on return.
        plain_agreement: the plain model's agreement, already measured (the k = 0 trial).

    Returns:
        A record: excluded nodes (most sensitive first), the per-node scores, and agreement per trial.
    """
    started = time.time()
    nodes = candidate_nodes(pre)
    scores = measure(pre, build, tensors, reference, nodes)
    ranked = sorted(nodes, key=lambda n: -scores[n])
    trials = [{"excluded": 0, "agreement": round(plain_agreement, 5)}]
    best, k = trials[0], 0
    limit = max(1, int(len(nodes) * MAX_EXCLUDED_FRACTION))
    trial = private_files(Path(pre), ".trial.onnx")[0]  # beside the pre-processed model
    try:
        while best["agreement"] < target and k < limit:
            k = min(limit, max(1, 2 * k))
            build(trial, nodes_to_exclude=ranked[:k])
            trials.append({"excluded": k, "agreement": round(label_agreement(logits(trial, tensors), reference), 5)})
            log.info("excluding the %d most sensitive nodes: agreement %.4f on %d training images",
                     k, trials[-1]["agreement"], len(tensors))
            # short of the target, the trial that agreed best (fewest nodes on a tie): never worse than plain
            if trials[-1]["agreement"] > best["agreement"]:
                best = trials[-1]
                trial.replace(out)
    finally:
        trial.unlink(missing_ok=True)
    k = best["excluded"]
    return {"excluded_nodes": ranked[:k], "reached_target": best["agreement"] >= target,
            "target_agreement": target, "evaluation_images": len(tensors), "trials": trials,
            "scores": {n: float(f"{scores[n]:.4g}") for n in ranked},
            "seconds": round(time.time() - started, 1)}
