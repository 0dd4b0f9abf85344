"""`galaxy montage`: a picture of what the catalog says.

Three rows of cutouts from a catalog galaxy wrote: the most confident spirals, the most
confident ellipticals, and the most uncertain galaxies (probability closest to 0.5), each
labelled with its id and P(spiral). The catalog is streamed and only the top `per_row` of each
row are kept (bounded heaps), so a catalog of millions costs no memory. Cutouts are shown as
the model saw them: the centre crop of the catalog's InputSpec (FITS with its stretch).
"""

from __future__ import annotations

import heapq
import json
import logging
from pathlib import Path

import numpy as np

from galaxy.catalog import read_catalog_metadata, read_catalog_rows
from galaxy.errors import ImageReadError, UsageError
from galaxy.spec import InputSpec

log = logging.getLogger(__name__)

ROWS = (("most confident spirals", "spiral"), ("most confident ellipticals", "elliptical"),
        ("most uncertain", "uncertain"))


def select(catalog, per_row: int = 8) -> dict[str, list[dict]]:
    """The rows of each montage row, best first: {"spiral": [...], "elliptical": [...], "uncertain": [...]}."""
    heaps: dict[str, list] = {key: [] for _, key in ROWS}
    for n, row in enumerate(read_catalog_rows(catalog)):
        if "p_spiral" not in row:
            raise UsageError(f"{catalog} has no p_spiral column: not a spiral/elliptical catalog of galaxy's")
        p = float(row["p_spiral"])
        entry = {"id": str(row["id"]), "path": str(row["path"]), "p_spiral": p}
        for key, score in (("spiral", p), ("elliptical", 1 - p), ("uncertain", -abs(p - 0.5))):
            item = (score, -n, entry)  # -n: ties go to the earlier row
            if len(heaps[key]) < per_row:
                heapq.heappush(heaps[key], item)
            elif item[:2] > heaps[key][0][:2]:
                heapq.heapreplace(heaps[key], item)
    return {key: [e for _, _, e in sorted(heap, key=lambda t: t[:2], reverse=True)] for key, heap in heaps.items()}


def _spec(catalog) -> InputSpec:
    meta = read_catalog_metadata(catalog)
    try:
        return InputSpec.from_dict(json.loads(meta["spec"]))
    except (KeyError, ValueError, TypeError):
        return InputSpec()


def montage(catalog, out, per_row: int = 8, dpi: int = 100) -> Path:
    """Write the montage PNG of `catalog` to `out`; return its path."""
    from galaxy.images import crop_resize, read_cutout
    from galaxy.plots import _pyplot

    chosen = select(catalog, per_row)
    if not any(chosen.values()):
        raise UsageError(f"{catalog} has no rows to show")
    spec = _spec(catalog)
    plt = _pyplot()
    fig, axes = plt.subplots(len(ROWS), per_row, figsize=(1.6 * per_row, 1.9 * len(ROWS)), dpi=dpi, squeeze=False)
    for r, (title, key) in enumerate(ROWS):
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(chosen[key]):
                ax.axis("off")
                continue
            entry = chosen[key][c]
            try:
                pixels, _ = read_cutout(entry["path"], spec)
                ax.imshow(np.clip(crop_resize(pixels, spec.crop_fraction, 128), 0, 1))
            except (ImageReadError, OSError) as exc:
                log.warning("montage: cannot show %s: %s", entry["path"], exc)
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.set_xlabel(f"{entry['id'][:18]}\nP(spiral) {entry['p_spiral']:.3f}", fontsize=7)
        axes[r, 0].set_ylabel(title.replace("most ", "most\n", 1), fontsize=9, fontweight="bold")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
