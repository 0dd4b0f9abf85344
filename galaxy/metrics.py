"""Classification metrics in plain numpy (no scikit-learn dependency)."""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve for binary labels (1 = positive), ties counted half.

    Computed as the Mann-Whitney U statistic from average ranks.
    """
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    i = 0
    while i < len(sorted_scores):
        j = i
        while j + 1 < len(sorted_scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_report(labels: np.ndarray, probabilities: np.ndarray, classes) -> dict:
    """Accuracy, balanced accuracy, ROC AUC (class 1 as positive) and the confusion matrix.

    Args:
        labels: int array (N,) of true class indices.
        probabilities: float array (N, K) of class probabilities.
        classes: K class names.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    recalls = [confusion[c, c] / confusion[c].sum() for c in range(k) if confusion[c].sum()]
    confidence = probabilities.max(axis=1)
    half = np.argsort(-confidence, kind="mergesort")[: max(1, len(labels) // 2)]
    report = {
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "accuracy_most_confident_half": float((predicted[half] == labels[half]).mean()),
        "confusion": {"rows_true_cols_predicted": list(classes), "matrix": confusion.tolist()},
    }
    if k == 2:
        report["roc_auc"] = roc_auc(labels == 1, probabilities[:, 1])
    return report
