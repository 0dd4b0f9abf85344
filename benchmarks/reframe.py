"""Re-frame a labelled cutout set as another survey might: the central part of each cutout, resized
back to the full side, so every galaxy appears ZOOM times larger (a survey with a finer pixel scale, or
one that scales its cutouts tighter around each galaxy). Labels are kept, so `galaxy evaluate` can show
what a change of framing costs and how much `--crop-fraction` (or `galaxy framing`'s choice) wins back.

    python benchmarks/reframe.py ../shared/data/gz1-sdss/labels.csv --zoom 1.25 \\
        --ids galaxy/models/sdss-xception-compact/val_ids.txt -o runs/reframed-1.25
    galaxy framing runs/reframed-1.25/images
    galaxy evaluate sdss-xception-compact runs/reframed-1.25/labels.csv -o runs/eval/reframed
    galaxy evaluate sdss-xception-compact runs/reframed-1.25/labels.csv --crop-fraction 0.62 -o runs/eval/reframed-crop

A survey that scales each cutout by the galaxy's own radius frames each class in its own way: the
Galaxy Zoo 2 cutouts show ellipticals about 1.24x and disks about 1.37x as large as Galaxy Zoo 1 does
(`galaxy framing`, README "Framing"). `--class-zoom` gives a class its own zoom:

    python benchmarks/reframe.py ../shared/data/gz1-sdss/labels.csv --zoom 1.4 --class-zoom elliptical=1.25 \
        --ids galaxy/models/sdss-xception-compact/val_ids.txt -o runs/reframed-gz2like
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image


def reframe(source: Path, target: Path, zoom: float) -> None:
    """Write `source`'s central 1/zoom of each side, resized (Lanczos) back to the full size, as JPEG q95."""
    with Image.open(source) as img:
        width, height = img.size
        keep_w, keep_h = width / zoom, height / zoom
        box = ((width - keep_w) / 2, (height - keep_h) / 2, (width + keep_w) / 2, (height + keep_h) / 2)
        img.convert("RGB").resize((width, height), Image.LANCZOS, box=box).save(target, quality=95)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, help="CSV with a file column (paths relative to the CSV).")
    parser.add_argument("--zoom", type=float, default=1.25, help="How many times larger galaxies appear (> 1).")
    parser.add_argument("--class-zoom", action="append", default=[], metavar="NAME=ZOOM",
                        help="Rows whose --class-column is NAME get ZOOM instead of --zoom (repeatable).")
    parser.add_argument("--class-column", default="gz1_name")
    parser.add_argument("--ids", type=Path, help="Only these ids (one per line, e.g. a model's val_ids.txt).")
    parser.add_argument("--id-column", default="objid")
    parser.add_argument("--path-column", default="file")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    zooms = {}
    for item in args.class_zoom:
        name, _, value = item.partition("=")
        try:
            zooms[name] = float(value)
        except ValueError:
            parser.error(f"--class-zoom {item!r}: expected NAME=ZOOM, e.g. elliptical=1.25")
    for zoom in [args.zoom, *zooms.values()]:
        if zoom <= 1:
            parser.error(f"zoom {zoom} must be above 1 (the sky outside a cutout is not there to zoom out)")
    keep = set(args.ids.read_text().split()) if args.ids else None
    with args.labels.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [r for r in reader if keep is None or r[args.id_column] in keep]
        fields = reader.fieldnames
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        source = args.labels.parent / row[args.path_column]
        row[args.path_column] = f"images/{source.stem}.jpeg"
        reframe(source, args.out / row[args.path_column], zooms.get(row.get(args.class_column), args.zoom))
    with (args.out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    by_class = "".join(f", {name} {zoom:g}" for name, zoom in zooms.items())
    print(f"{len(rows)} cutouts re-framed at zoom {args.zoom:g}{by_class} -> {args.out}")


if __name__ == "__main__":
    main()
