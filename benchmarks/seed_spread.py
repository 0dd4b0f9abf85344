"""How far one recipe's validation figures move by chance: a table of several `galaxy evaluate` runs.

Each RUN is the output folder of `galaxy evaluate` (its predictions.csv) for one model on the same
labelled galaxies: e.g. one recipe retrained with `--train-seed 1, 2, ...`, scored on the native
validation cutouts and on a re-framed copy (`benchmarks/reframe.py`). Prints, per run, accuracy,
balanced accuracy and recall by group, and the exact McNemar test against the first run; then the
mean and standard deviation over the runs, and every pair's discordant counts, so that a
candidate recipe's gain can be set against the spread of reruns of one recipe. Torch-free.

    python benchmarks/seed_spread.py ../shared/data/gz1-sdss/labels.csv runs/eval/compact-now runs/eval/seed1 runs/eval/seed2
"""

from __future__ import annotations

import argparse
import csv
import itertools
from pathlib import Path

import numpy as np

from galaxy.evaluation.metrics import mcnemar_p

PREDICTIONS = "predictions.csv"


def read_run(folder: Path, groups: dict[str, str]) -> dict:
    """A run's predictions keyed by id: (correct, group, true label) per galaxy."""
    path = folder / PREDICTIONS
    if not path.is_file():
        raise SystemExit(f"{folder}: no {PREDICTIONS} (give the -o folder of a `galaxy evaluate` run)")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [r["id"] for r in rows if r["id"] not in groups]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} ids are not in the labels file (e.g. {missing[0]})")
    return {r["id"]: (r["label"] == r["true_label"], groups[r["id"]], r["true_label"]) for r in rows}


def discordant(run_a: dict, run_b: dict, ids) -> tuple[int, int]:
    """(galaxies only run A gets right, galaxies only run B gets right): McNemar's discordant pairs."""
    return (sum(run_a[i][0] and not run_b[i][0] for i in ids),
            sum(run_b[i][0] and not run_a[i][0] for i in ids))


def figures(run: dict, names) -> dict:
    correct = np.array([c for c, _, _ in run.values()])
    classes = np.array([t for _, _, t in run.values()])
    group = np.array([g for _, g, _ in run.values()])
    out = {"accuracy": correct.mean(),
           "balanced": np.mean([correct[classes == c].mean() for c in np.unique(classes)])}
    out.update({name: correct[group == name].mean() for name in names})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, help="The labels CSV the runs were scored on (for the groups).")
    parser.add_argument("runs", type=Path, nargs="+", help="`galaxy evaluate -o` folders; the first is the reference.")
    parser.add_argument("--id-column", default="objid")
    parser.add_argument("--by-column", default="gz1_name")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two runs")
    with args.labels.open(newline="") as handle:
        groups = {r[args.id_column]: r[args.by_column] for r in csv.DictReader(handle)}
    runs = [read_run(folder, groups) for folder in args.runs]
    ids = sorted(runs[0])
    if any(sorted(run) != ids for run in runs[1:]):
        raise SystemExit("the runs scored different galaxies: score every model on the same labels file and split")
    names = sorted({groups[i] for i in ids})
    table = [figures(run, names) for run in runs]
    keys = ["accuracy", "balanced", *names]
    print(f"{len(ids)} galaxies; recall by {args.by_column}; discordant pairs against {args.runs[0]}")
    print("| run | " + " | ".join(keys) + " | only this / only reference right (McNemar p) |")
    print("|---" * (len(keys) + 2) + "|")
    for folder, run, row in zip(args.runs, runs, table):
        only_this, only_ref = discordant(run, runs[0], ids)
        test = "-" if run is runs[0] else f"{only_this} / {only_ref} ({mcnemar_p(only_this, only_ref):.3g})"
        print(f"| {folder} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + f" | {test} |")
    values = np.array([[row[k] for k in keys] for row in table])
    print("| mean +- sd | " + " | ".join(f"{m:.3f} +- {s:.3f}" for m, s in zip(values.mean(0), values.std(0, ddof=1)))
          + " | |")
    print("\npairs: only A right / only B right (McNemar p)")
    for (a, run_a), (b, run_b) in itertools.combinations(zip(args.runs, runs), 2):
        only_a, only_b = discordant(run_a, run_b, ids)
        print(f"  {a} vs {b}: {only_a} / {only_b} ({mcnemar_p(only_a, only_b):.3g})")


if __name__ == "__main__":
    main()
