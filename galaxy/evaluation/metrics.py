"""Classification metrics in plain numpy (no scikit-learn dependency)."""

from __future__ import annotations

import math

import numpy as np


def label_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose top class is the same in two (N, K) score arrays (probabilities or logits)."""
    return float((np.asarray(a).argmax(axis=1) == np.asarray(b).argmax(axis=1)).mean())


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
    """Accuracy, balanced accuracy, ROC AUC (class 1 as positive; NaN where only one class is labelled)
    and the confusion matrix.

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
    report = {
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        # accuracy_at_coverage's 50%: one "most confident half" per report (n // 2 here had been one
        # galaxy fewer than its half-up n / 2 for an odd n)
        "accuracy_most_confident_half": accuracy_at_coverage(labels, probabilities, (0.5,))["0.5"],
        "confusion": {"rows_true_cols_predicted": list(classes), "matrix": confusion.tolist()},
    }
    if k == 2:
        report["roc_auc"] = roc_auc(labels == 1, probabilities[:, 1])
    return report


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> tuple[float, list[dict]]:
    """ECE of the top-class confidence over equal-width bins from 1/K to 1 (the lowest top-class
    confidence K classes allow; Guo et al. 2017 bin 0-1, which leaves the bins below 1/K empty and gives
    lower figures), and the bins for a reliability diagram.

    Returns:
        (ece, bins): ece in [0, 1]; each bin has lower/upper edges, count, mean confidence, accuracy.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(1 / probabilities.shape[1], 1, bins + 1)
    # bins [lo, hi), the last closed; a top-class confidence a rounding below 1/K (an ensemble's mean of two
    # mirror-image float32 members: [0.49999997, 0.49999997]) is in the first, where it had been in none
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for k in range(bins):
        members = which == k
        n = int(members.sum())
        row = {"lower": float(edges[k]), "upper": float(edges[k + 1]), "count": n}
        if n:
            row["confidence"] = float(confidence[members].mean())
            row["accuracy"] = float(correct[members].mean())
            ece += n / len(labels) * abs(row["accuracy"] - row["confidence"])
        table.append(row)
    return float(ece), table


def accuracy_at_coverage(labels, probabilities, coverages=(0.1, 0.25, 0.5, 0.75, 1.0)) -> dict[str, float]:
    """Accuracy on the most confident fraction of the sample, for each coverage.

    Galaxies tied in confidence at the cut count by their mean: which of them fall inside is no choice the
    model made (the order of the rows had decided it, so two tied galaxies, one right, scored 1 or 0 at 50%).
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    if not len(labels):
        return {f"{c:g}": float("nan") for c in coverages}
    confidence = probabilities.max(axis=1)
    order = np.argsort(-confidence, kind="mergesort")
    confidence = confidence[order]
    correct = probabilities.argmax(axis=1)[order] == labels[order]
    result = {}
    for c in coverages:
        # half up (Python's round() goes to the even side: the top half of 1,037 galaxies had been 518, of 1,039 520)
        n = max(1, math.floor(c * len(labels) + 0.5))
        tied = confidence == confidence[n - 1]
        above = int((confidence > confidence[n - 1]).sum())
        result[f"{c:g}"] = float((correct[:above].sum() + (n - above) * correct[tied].mean()) / n)
    return result


def accuracy_by_group(labels: np.ndarray, probabilities: np.ndarray, groups) -> dict:
    """Accuracy within each group (e.g. Galaxy Zoo 1's finer classes: each group's recall of its label).

    Args:
        labels: int array (N,) of true class indices.
        probabilities: float array (N, K).
        groups: N group names (None: not in any group).

    Returns:
        {group: {"n": count, "accuracy": fraction right}}, groups in sorted order.
    """
    right = np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)
    out = {}
    for group in sorted({g for g in groups if g is not None}):
        members = np.array([g == group for g in groups])
        out[group] = {"n": int(members.sum()), "accuracy": float(right[members].mean())}
    return out


# The probability cuts of a purity/completeness table: low cuts for a complete sample of a class, high
# ones for a clean one (Galaxy Zoo users select e.g. p_spiral >= 0.8).
PROBABILITY_CUTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def purity_completeness(labels: np.ndarray, probabilities: np.ndarray, classes, groups=None,
                        cuts=PROBABILITY_CUTS) -> dict:
    """What a sample selected by a cut on one class's probability holds, for each class and cut.

    A sample of class c at cut t is every galaxy with p_c >= t (not the top-class label: an astronomer
    selects from the catalog's probability columns). Its purity is the share of it labelled c (None
    for an empty sample), its completeness the share of the galaxies labelled c it holds (None when
    none is).

    Args:
        labels: int array (N,) of true class indices.
        probabilities: float array (N, K) of class probabilities.
        classes: K class names.
        groups: N group names or None (e.g. Galaxy Zoo 1's finer classes); with them each row also gives
            the share of each group's galaxies the sample holds (`selected_by_group`).
        cuts: the probability cuts, ascending.

    Returns:
        {class: [{"cut", "selected", "purity", "completeness"[, "selected_by_group"]}, ...]}.
    """
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities)
    members = {}
    if groups is not None:
        names = sorted({g for g in groups if g is not None})
        members = {g: np.array([x == g for x in groups]) for g in names}
    table = {}
    for c, name in enumerate(classes):
        truly = labels == c
        rows = []
        for cut in cuts:
            chosen = probabilities[:, c] >= cut
            n = int(chosen.sum())
            row = {"cut": cut, "selected": n,
                   "purity": float(truly[chosen].mean()) if n else None,
                   "completeness": float(chosen[truly].mean()) if truly.any() else None}
            if members:
                row["selected_by_group"] = {g: float(chosen[m].mean()) for g, m in members.items()}
            rows.append(row)
        table[name] = rows
    return table


def require_finite(probabilities: np.ndarray, who: str) -> None:
    """Refuse probabilities (N, K) any row of which is not finite: NaN argmaxes to class 0 and sits in no ECE
    bin, so every figure made of them would look plausible (a calibration of ECE 0, a check passed).

    Raises:
        ModelError: naming `who` (the model, or the backend) and how many rows.
    """
    from galaxy.errors import ModelError

    broken = int(np.sum(~np.isfinite(probabilities).all(axis=1)))
    if broken:
        raise ModelError(f"{who}: the model's outputs are not finite for {broken} of the {len(probabilities)} "
                         "images: its weights are broken")


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: P(a split of the discordant pairs at least this uneven | equal accuracy)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
