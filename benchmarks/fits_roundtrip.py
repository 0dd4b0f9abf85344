"""FITS round trip: validation JPEGs -> linear g, r, i flux cubes -> classified both ways.

Each validation JPEG of the model is inverted with a random softening, composite mode, flux
unit (five decades) and sky pedestal (`galaxy.io.roundtrip`), written as a g, r, i cube (or the
bands of `--bands`, e.g. `--bands r` for single-band files), and both the JPEG and the cube
are classified by the same engine. Prints one JSON object (agreement, accuracies, by mode and
softening), writes predictions.csv (both probabilities per galaxy) and a side-by-side montage
of the same galaxies via JPEG and via FITS.

  python benchmarks/fits_roundtrip.py                    # every validation galaxy (1,039)
  python benchmarks/fits_roundtrip.py --limit 200 --bands r
  python benchmarks/fits_roundtrip.py --model runs/new --compare runs/fits-roundtrip/predictions.csv

`--compare` pairs this run with another model's run on the same cubes (same seed, bands and
validation split): exact McNemar tests on the FITS and on the JPEG labels, the paired test a
FITS-robust model must pass to replace a shipped one.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LABELS = ROOT.parent / "shared" / "data" / "gz1-sdss" / "labels.csv"


def validation_rows(model_dir: Path, labels: Path, limit: int | None) -> list[dict]:
    """Labelled rows of the model's validation split, in val_ids order."""
    val = (model_dir / "val_ids.txt").read_text().split()
    rows = {r["objid"]: r for r in csv.DictReader(labels.open()) if r["label"]}
    chosen = [rows[i] for i in val if i in rows]
    return chosen[:limit] if limit else chosen


def make_cubes(rows, folder: Path, seed: int, bands) -> list[dict]:
    """Write one cube per row; returns the draws with id and paths."""
    from galaxy.io.images import read_raster
    from galaxy.io.roundtrip import draw, write_cube

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for row in rows:
        jpeg = LABELS.parent / row["file"]
        how = draw(rng)
        cube = folder / f"{row['objid']}.fits"
        write_cube(cube, read_raster(jpeg), how, bands)
        out.append({"id": row["objid"], "jpeg": str(jpeg), "fits": str(cube), "label": row["label"],
                    "softening": how.softening, "mode": how.mode})
    return out


def classify(model, paths) -> dict[str, float]:
    from galaxy.io.images import stem_id

    table = model.classify([str(p) for p in paths])
    return {stem_id(p): float(s) for p, s in zip(table["path"], table["p_spiral"])}


def summary(galaxies, p_jpeg, p_fits) -> dict:
    ids = [g["id"] for g in galaxies]
    truth = np.array([g["label"] == "spiral" for g in galaxies])
    jpeg = np.array([p_jpeg[i] > 0.5 for i in ids])
    fits = np.array([p_fits[i] > 0.5 for i in ids])
    agree = jpeg == fits
    soft = np.array([g["softening"] for g in galaxies])
    modes = np.array([g["mode"] for g in galaxies])
    edges = [0.02, 0.06, 0.2, 0.5, 1.0]

    def balanced(pred):
        return float(np.mean([np.mean(pred[truth]), np.mean(~pred[~truth])]))

    return {
        "n": len(ids), "agreement": float(agree.mean()),
        "accuracy_jpeg": float((jpeg == truth).mean()), "accuracy_fits": float((fits == truth).mean()),
        "balanced_jpeg": balanced(jpeg), "balanced_fits": balanced(fits),
        "mean_abs_dp": float(np.mean([abs(p_jpeg[i] - p_fits[i]) for i in ids])),
        "agreement_by_mode": {m: float(agree[modes == m].mean()) for m in sorted(set(modes))},
        "agreement_by_softening": {f"{lo}-{hi}": float(agree[(soft >= lo) & (soft < hi)].mean())
                                   for lo, hi in zip(edges, edges[1:]) if ((soft >= lo) & (soft < hi)).any()},
    }


def paired(galaxies, p_jpeg, p_fits, other_csv: Path) -> dict:
    """Exact McNemar tests of this run against another run's predictions.csv, FITS and JPEG.

    Raises:
        SystemExit: the other run holds other galaxies (another split or --limit).
    """
    from galaxy.evaluation.metrics import mcnemar_p

    other = {r["id"]: r for r in csv.DictReader(other_csv.open())}
    ids = [g["id"] for g in galaxies]
    if set(other) != set(ids):
        raise SystemExit(f"{other_csv}: {len(other)} galaxies, this run {len(ids)}: not the same validation galaxies")
    truth = np.array([g["label"] == "spiral" for g in galaxies])
    out = {"other": str(other_csv)}
    for path, mine in (("fits", p_fits), ("jpeg", p_jpeg)):
        right = np.array([mine[i] > 0.5 for i in ids]) == truth
        other_right = np.array([float(other[i][f"p_spiral_{path}"]) > 0.5 for i in ids]) == truth
        only_this, only_other = int((right & ~other_right).sum()), int((other_right & ~right).sum())
        out[path] = {"accuracy_this": float(right.mean()), "accuracy_other": float(other_right.mean()),
                     "only_this_right": only_this, "only_other_right": only_other,
                     "mcnemar_p": mcnemar_p(only_this, only_other)}
    return out


def side_by_side(galaxies, spec, out: Path, count: int = 8) -> None:
    """Top row: the JPEGs as the network crops them; bottom row: the same galaxies via FITS."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from galaxy.io.images import crop_resize, read_cutout

    chosen = galaxies[:count]
    fig, axes = plt.subplots(2, len(chosen), figsize=(1.6 * len(chosen), 3.6))
    for k, g in enumerate(chosen):
        for r, key in enumerate(("jpeg", "fits")):
            pixels, _ = read_cutout(g[key], spec)
            axes[r, k].imshow(np.clip(crop_resize(pixels, spec.crop_fraction, 128), 0, 1))
            axes[r, k].set_axis_off()
        axes[0, k].set_title(g["id"][-6:], fontsize=7)
    axes[0, 0].text(-0.1, 0.5, "JPEG", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.1, 0.5, "FITS", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sdss-xception", help="A shipped model's name or a model folder.")
    parser.add_argument("--labels", default=str(LABELS))
    parser.add_argument("--limit", type=int, default=None, help="first N validation galaxies (default: all)")
    parser.add_argument("--bands", default="g,r,i", help="bands written to each file (g,r,i; r for one band)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decoder", default="reference")
    parser.add_argument("--out", default=str(ROOT / "runs" / "fits-roundtrip"))
    parser.add_argument("--compare", type=Path, help="another run's predictions.csv (same seed and bands): "
                                                     "paired McNemar tests")
    args = parser.parse_args(argv)

    import galaxy
    from galaxy.card import model_path

    out = Path(args.out)
    bands = tuple(b.strip() for b in args.bands.split(","))
    args.model = str(model_path(args.model))
    galaxies = make_cubes(validation_rows(Path(args.model), Path(args.labels), args.limit), out / "cubes", args.seed,
                          bands)
    model = galaxy.load_model(args.model, backend="onnxruntime", decoder=args.decoder)
    p_jpeg, p_fits = classify(model, [g["jpeg"] for g in galaxies]), classify(model, [g["fits"] for g in galaxies])
    result = summary(galaxies, p_jpeg, p_fits)
    with open(out / "predictions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "label", "p_spiral_jpeg", "p_spiral_fits", "softening", "mode"])
        writer.writerows([g["id"], g["label"], f"{p_jpeg[g['id']]:.6f}", f"{p_fits[g['id']]:.6f}",
                          f"{g['softening']:.4f}", g["mode"]] for g in galaxies)
    result.update(bands=list(bands), seed=args.seed, model=model.card.name, decoder=args.decoder)
    if args.compare:
        result["paired"] = paired(galaxies, p_jpeg, p_fits, args.compare)
    side_by_side(galaxies, model.card.input_spec, out / "montage.png")
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
