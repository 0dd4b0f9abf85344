"""Temperature scaling (Guo et al. 2017): one scalar T so that softmax(logits / T) is calibrated.

T is fitted on the validation split by minimising the negative log-likelihood; it never
changes a label, only how sure the model says it is. It is stored in the model card and
applied inside the network (`galaxy.training.model.load_network`), so every backend built from the
weights (PyTorch, ONNX, int8, TensorRT) outputs calibrated probabilities. numpy only.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from galaxy.evaluation.metrics import expected_calibration_error

log = logging.getLogger(__name__)

LOG_T_RANGE = (-3.0, 3.0)  # T in [e^-3, e^3] = [0.0498, 20.09]: anything outside is a broken model, not calibration


def at_range_edge(temperature: float) -> bool:
    """A fitted T at a bound of LOG_T_RANGE (within the search's tolerance): the NLL fell all the way to
    it, which no working model's does."""
    return any(abs(math.log(temperature) - bound) < 1e-3 for bound in LOG_T_RANGE)


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant (which softmax ignores), from probabilities (N, K).

    A probability below float32's smallest normal number (a softmax that underflowed, often to 0) is read as
    that number: its logit gap to the top class is then ~87 where it may have been larger, said in a warning.
    (The floor had been 1e-12, which capped every gap at 27.6: a confident mistake then cost less, and one
    synthetic fit found T = 7.4 where the true logits give 8.5.)
    """
    floor = float(np.finfo(np.float32).tiny)
    probabilities = probabilities.astype(np.float64)
    below = int((probabilities < floor).any(axis=1).sum())
    if below:
        log.warning("%d of %d galaxies have a class probability below %.2g (float32 underflow): their logits are "
                    "read at that floor, so a temperature fitted on them may be too low", below,
                    len(probabilities), floor)
    return np.log(np.clip(probabilities, floor, None))


def scaled_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of softmax(logits / T) at the true labels."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tol: float = 1e-4) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T): golden-section search on log T.

    The NLL is unimodal in log T for fixed logits, so the search is exact to `tol`.

    Args:
        logits: (N, K) float logits (or log-probabilities).
        labels: (N,) int true classes.
    """
    labels = np.asarray(labels, dtype=np.int64)
    lo, hi = LOG_T_RANGE
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = scaled_nll(logits, labels, np.exp(a)), scaled_nll(logits, labels, np.exp(b))
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = scaled_nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = scaled_nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, float32 (the ONNX graph ends in logits; torch-free, for its backends)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def softmax_t(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


# Random two-fold splits the cross-fitted ECE is averaged over: one split's figure moved with its seed
# more than the margins it was read against (the full model's 2.3% of seed 0: 1.6-2.3% over 20 halvings, mean 1.9%).
CROSSFIT_SPLITS = 20


def calibration_record(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Fit T on all of (logits, labels) and measure what it does, honestly.

    The ECE after scaling on the same data T was fitted on is optimistic, so the record also
    holds a two-fold cross-fitted ECE: T fitted on one half, ECE measured on the other, averaged
    over CROSSFIT_SPLITS random halvings (seeded from `seed`), with the range it spans.

    Returns:
        {"temperature", "fitted_on_n", "nll_before", "nll_after", "ece_before", "ece_after",
         "ece_after_crossfit", "ece_after_crossfit_range", "crossfit_splits"}; ECEs in [0, 1] with 15 bins.
    """
    labels = np.asarray(labels, dtype=np.int64)
    temperature = fit_temperature(logits, labels)
    rng = np.random.default_rng(seed)
    crossfitted = []
    for _ in range(CROSSFIT_SPLITS):
        order = rng.permutation(len(labels))
        halves = (order[: len(order) // 2], order[len(order) // 2:])
        crossfit = np.empty((len(labels), logits.shape[1]), np.float32)
        for fit_on, apply_to in (halves, halves[::-1]):
            crossfit[apply_to] = softmax_t(logits[apply_to], fit_temperature(logits[fit_on], labels[fit_on]))
        crossfitted.append(expected_calibration_error(labels, crossfit)[0])
    return {
        "method": "temperature scaling (NLL, golden-section on log T)",
        "temperature": round(temperature, 5),
        "fitted_on_n": int(len(labels)),
        "nll_before": scaled_nll(logits, labels, 1.0),
        "nll_after": scaled_nll(logits, labels, temperature),
        "ece_before": expected_calibration_error(labels, softmax_t(logits, 1.0))[0],
        "ece_after": expected_calibration_error(labels, softmax_t(logits, temperature))[0],
        "ece_after_crossfit": float(np.mean(crossfitted)),
        "ece_after_crossfit_range": [float(min(crossfitted)), float(max(crossfitted))],
        "crossfit_splits": CROSSFIT_SPLITS,
    }
