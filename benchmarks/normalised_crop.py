"""Score a model with each galaxy read through a crop set by its own size, instead of the card's crop.

The crop of each cutout is its Petrosian radius (`galaxy.io.framing`, the measure `galaxy framing`
uses) divided by APPARENT, so every galaxy fills the same share of the network's view whatever the
survey's framing; cutouts without a measurable radius keep the card's crop. An experiment, not a
runner feature (README, "Framing"): it answers how much a per-galaxy crop would win on re-framed
galaxies and cost on native ones.

    python benchmarks/normalised_crop.py sdss-xception-compact ../shared/data/gz1-sdss/labels.csv
    python benchmarks/normalised_crop.py sdss-xception-compact runs/reframed-gz2like/labels.csv
"""

from __future__ import annotations

import argparse
import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from galaxy.card import load_card, model_path, validation_ids
from galaxy.io.framing import petrosian_fraction
from galaxy.io.images import crop_resize, normalise, read_raster
from galaxy.training.model import load_network

CROP_LIMITS = (0.25, 1.0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="Model name or folder.")
    parser.add_argument("labels", type=Path, help="CSV with file, label and gz1_name columns (paths relative to it).")
    parser.add_argument("--apparent", type=float, default=0.29,
                        help="Petrosian radius as a fraction of the crop (0.29: the training median at crop 0.5).")
    parser.add_argument("--at-least-card", action="store_true",
                        help="Never crop tighter than the card: only galaxies that would appear larger than "
                             "APPARENT are read through a wider crop.")
    parser.add_argument("--path-column", default="file")
    parser.add_argument("--id-column", default="objid")
    parser.add_argument("--by-column", default="gz1_name")
    args = parser.parse_args(argv)
    folder = model_path(args.model)
    card = load_card(folder)
    spec = card.input_spec
    network = load_network(folder, card)[0]
    keep = validation_ids(folder, card)
    with args.labels.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] and (keep is None or r[args.id_column] in keep)]

    def one(row):
        pixels = read_raster(args.labels.parent / row[args.path_column])
        radius = petrosian_fraction(pixels)
        crop = float(np.clip(radius / args.apparent, *CROP_LIMITS)) if np.isfinite(radius) else spec.crop_fraction
        if args.at_least_card:
            crop = max(crop, spec.crop_fraction)
        return normalise(crop_resize(pixels, crop, spec.size), spec), crop

    with ThreadPoolExecutor() as pool:
        read = list(pool.map(one, rows))
    x = torch.from_numpy(np.stack([r[0] for r in read]))
    with torch.no_grad():
        p = torch.cat([torch.softmax(network(x[i:i + 128]).float(), 1) for i in range(0, len(x), 128)])
    spiral = p[:, card.classes.index("spiral")].numpy() > 0.5
    truth = np.array([r["label"] == "spiral" for r in rows])
    groups = np.array([r.get(args.by_column, "") for r in rows])
    balanced = (spiral[truth].mean() + (~spiral[~truth]).mean()) / 2
    recall = ", ".join(f"{g} {(spiral[groups == g] == truth[groups == g]).mean():.3f}" for g in sorted(set(groups)))
    print(f"{card.name} on {args.labels}: {len(rows)} galaxies, median crop {np.median([r[1] for r in read]):.3f}; "
          f"accuracy {(spiral == truth).mean():.4f}, balanced {balanced:.4f}; {recall}")


if __name__ == "__main__":
    main()
