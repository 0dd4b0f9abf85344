"""What the benchmark times: the cutouts (real gz1-sdss files from the shared data, else the bundled
samples, the unreadable ones left out) and a model's weights copied to run at another input size."""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the shared data folder, as the tests find it ($GALAXY_SHARED_DATA, else ../shared/data)
SHARED = Path(os.environ.get("GALAXY_SHARED_DATA") or ROOT.parent / "shared" / "data") / "gz1-sdss" / "images"


def image_files(n: int) -> list[str]:
    """n real gz1-sdss files (repeated to n); the bundled samples when the shared data is absent (said:
    40 files repeated stay in the page cache, and the figures are not of a survey's files)."""
    source = SHARED if SHARED.is_dir() else ROOT / "examples" / "sdss"
    if not source.is_dir():  # installed from a wheel: no checkout around it, the package's own samples
        source = Path(__file__).resolve().parents[1] / "galaxy" / "samples"
    if source != SHARED:
        print(f"bench: {SHARED} is absent ($GALAXY_SHARED_DATA names another folder): timing the bundled samples "
              f"of {source}, repeated", file=sys.stderr)
    files = _readable(sorted(str(p) for p in source.glob("*.jpeg"))[:n])
    if not files:
        raise SystemExit(f"bench: no readable JPEG cutouts to time in {source}")
    return [files[i % len(files)] for i in range(n)]


def _readable(files: list[str]) -> list[str]:
    """The files PIL can decode; the others said and left out (one damaged JPEG ended the plain-PyTorch
    baseline in a traceback naming no file, after the other rows had run). ~0.3 ms a cutout."""
    from PIL import Image

    kept, bad = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
            kept.append(path)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            bad.append(f"{path}: {exc}")
    if bad:
        print(f"bench: {len(bad)} of the {len(files)} cutouts cannot be read and are left out, e.g. {bad[0]}",
              file=sys.stderr)
    return kept


def resized_model(model_dir, card, size: int):
    """The same weights with input size `size`, in a temporary model directory.

    Convolutional networks with global pooling run at any size: this measures the speed
    of the architecture at e.g. 299 px (Xception's own) with trained weights.
    """
    import shutil

    import atexit

    tmp = Path(tempfile.mkdtemp(prefix=f"galaxy-{size}px-"))
    atexit.register(shutil.rmtree, tmp, True)  # a copy of the weights each run had been left in /tmp
    for name in ("model.safetensors", "val_ids.txt"):
        if (Path(model_dir) / name).is_file():
            shutil.copy(Path(model_dir) / name, tmp / name)
    card = copy.deepcopy(card)
    card.input_spec = card.input_spec.replace(size=size)
    card.name, card.export = f"{card.name}-at-{size}px", {}
    card.save(tmp)
    return tmp, card
