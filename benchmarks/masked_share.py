"""Masked pixels against labels: how large a filled (NaN) region of the crop moves a FITS label.

The validation galaxies of a model as g, r, i flux cubes (the FITS round trip of
`benchmarks/fits_roundtrip.py`, same seed), then each cube again with part of the pixels the
network reads set to NaN, which the reader fills from their neighbours (`galaxy.io.masked`):

  * edge: every column from the cutout's left edge to a share F of the way across the crop (the
    edge of a survey's footprint, a chip gap or an edge mask reaching into the crop);
  * columns: random 3-pixel-wide bad columns inside the crop, F of its columns in all.

For each F it prints the labels kept against the same cube unmasked, the accuracy, and the
largest and 95th-percentile change of p_spiral: the figures behind the catalog's `masked_fraction`
warning threshold (`galaxy.io.masked.MASKED_WARNING`).

  python benchmarks/masked_share.py --limit 300
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SHARES = (0.05, 0.1, 0.2, 0.3, 0.4)
BAD_COLUMN = 3  # pixels


def masked_copy(source: Path, target: Path, pattern: str, share: float, crop_fraction: float,
                rng: np.random.Generator) -> None:
    """`source`'s cube with NaN over `share` of the crop's columns, laid out as `pattern` says."""
    from astropy.io import fits

    from galaxy.io.composite import crop_spans

    with fits.open(source) as hdul:
        data, header = hdul[0].data.astype(np.float32), hdul[0].header.copy()
    (_, _), (left, right) = crop_spans(data.shape[-2], data.shape[-1], crop_fraction)
    width = right - left
    wanted = int(round(share * width))
    if pattern == "edge":
        data[..., :left + wanted] = np.nan
    else:
        starts = rng.permutation(np.arange(left, right - BAD_COLUMN + 1, BAD_COLUMN))[:max(1, wanted // BAD_COLUMN)]
        for start in starts:
            data[..., start:start + BAD_COLUMN] = np.nan
    fits.PrimaryHDU(data, header).writeto(target, overwrite=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sdss-xception-compact", help="A shipped model's name or a model folder.")
    parser.add_argument("--limit", type=int, default=300, help="first N validation galaxies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "runs" / "masked-share"))
    args = parser.parse_args(argv)

    import galaxy
    from fits_roundtrip import LABELS, make_cubes, validation_rows
    from galaxy.card import model_path

    out = Path(args.out)
    model_dir = model_path(args.model)
    galaxies = make_cubes(validation_rows(model_dir, LABELS, args.limit), out / "cubes", args.seed, ("g", "r", "i"))
    model = galaxy.load_model(str(model_dir), backend="onnxruntime", decoder="reference")
    crop = model.card.input_spec.crop_fraction
    labels = {g["id"]: g["label"] for g in galaxies}

    def classify(paths):
        table = model.classify([str(p) for p in paths], errors=[])
        return {Path(p).stem: (float(s), float(m)) for p, s, m in
                zip(table["path"], table["p_spiral"], table["masked_fraction"])}

    base = classify(g["fits"] for g in galaxies)
    result = {"model": model.card.name, "galaxies": len(galaxies), "seed": args.seed, "runs": []}
    rng = np.random.default_rng(args.seed)
    for pattern in ("edge", "columns"):
        for share in SHARES:
            folder = out / f"{pattern}-{share:g}"
            folder.mkdir(parents=True, exist_ok=True)
            for g in galaxies:
                masked_copy(Path(g["fits"]), folder / Path(g["fits"]).name, pattern, share, crop, rng)
            got = classify(sorted(folder.glob("*.fits")))
            ids = [i for i in base if i in got]
            change = np.array([abs(got[i][0] - base[i][0]) for i in ids])
            kept = np.mean([(got[i][0] > 0.5) == (base[i][0] > 0.5) for i in ids])
            right = np.mean([(got[i][0] > 0.5) == (labels[i] == "spiral") for i in ids])
            run = {"pattern": pattern, "share_asked": share, "classified": len(ids),
                   "masked_fraction_median": float(np.median([got[i][1] for i in ids])),
                   "labels_kept": round(float(kept), 4), "accuracy": round(float(right), 4),
                   "dp_95": round(float(np.percentile(change, 95)), 4), "dp_max": round(float(change.max()), 4)}
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
    result["accuracy_unmasked"] = round(float(np.mean([(base[i][0] > 0.5) == (labels[i] == "spiral")
                                                       for i in base])), 4)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    return result


if __name__ == "__main__":
    main()
