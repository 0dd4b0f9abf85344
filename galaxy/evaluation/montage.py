"""`galaxy montage`: a picture of what the catalog says.

Three rows of cutouts from a catalog galaxy wrote: the most confident spirals (galaxies labelled
spiral), the most confident ellipticals (labelled elliptical), and the most uncertain of the
rest (probability closest to 0.5), each labelled with its id and P(spiral). A galaxy appears in
one row at most; a row with nobody to show says so. The catalog is streamed and only the top of
each row is kept (bounded heaps), so a catalog of millions costs no memory. Cutouts are shown as
the model saw them: the centre crop of the catalog's InputSpec (FITS with its stretch). Relative
paths are taken from the folder the catalog was classified in (`cwd` in its metadata).
"""

from __future__ import annotations

import heapq
import io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from galaxy.catalog.formats import sidecar_path
from galaxy.catalog.metadata import kept_columns
from galaxy.catalog.read import UNREADABLE
from galaxy.catalog.written import read_catalog_metadata, shown_catalog_rows
from galaxy.catalog.text import existing_file
from galaxy.catalog.write import errors_path
from galaxy.config import MAX_PER_ROW
from galaxy.errors import ImageReadError, UsageError
from galaxy.files import same_file, write_whole
from galaxy.spec import InputSpec, check_spec_shape

log = logging.getLogger(__name__)

SPIRAL = ("elliptical", "spiral")  # the shipped models' classes: (the other, the one P(...) is of)
UNCERTAIN = "uncertain"  # the third row: the galaxies whose P is closest to 0.5


def row_title(key: str) -> str:
    """A montage row's title: the most confident of a class ("spirals", "ellipticals" for the shipped
    models' classes; a class of one's own model as named), or the most uncertain."""
    return "most uncertain" if key == UNCERTAIN else f"most confident {key}{'s' if key in SPIRAL else ''}"


def empty_row(key: str) -> str:
    """What an empty montage row says."""
    return "none left: every galaxy is in a row above" if key == UNCERTAIN else f"no galaxy labelled {key}"


ID_CHARS = 20  # an SDSS DR8 objID (19 digits) and a repeat's `#2` whole, at the label's 7 pt in a 1.6 in tile
SUFFIX = ".png"  # what the montage is written as; an output named without a suffix gets it


def short_id(ident: str, width: int = ID_CHARS) -> str:
    """`ident`, cut to `width` characters when longer by a '…' in its middle: ids of one survey share their
    start and differ at the end (cut there, two DR8 objIDs had shown one label), where a repeat's `#N` is."""
    if len(ident) <= width:
        return ident
    head = (width - 1) // 2
    return ident[:head] + "…" + ident[len(ident) - (width - 1 - head):]


def _push(heap: list, size: int, item: tuple) -> None:
    if len(heap) < size:
        heapq.heappush(heap, item)
    elif item[:2] > heap[0][:2]:
        heapq.heapreplace(heap, item)


def _best_first(heap: list) -> list[dict]:
    return [entry for _, _, entry in sorted(heap, key=lambda t: t[:2], reverse=True)]


def two_classes(catalog, row: dict | None) -> tuple[str, str]:
    """(other, shown) classes of a two-class catalog, from one of its rows: P(shown) is what the pictures
    rank by. (elliptical, spiral) where p_spiral is a column; else the two p_<class> columns of a model of
    other classes (one's own), in their order, the catalog's kept columns aside.

    Raises:
        UsageError: neither (a catalog of one class, or of three or more).
    """
    if row is None or "p_spiral" in row:
        return SPIRAL
    keep = set(kept_columns(catalog_metadata(catalog, say=False)))  # (said by the command's own read)
    named = [key[2:] for key in row if key.startswith("p_") and key not in keep and key[2:]]
    if len(named) == 2:
        return named[0], named[1]
    raise UsageError(f"{catalog} has no p_spiral column, nor the two p_<class> columns of another two-class model "
                     f"({', '.join('p_' + c for c in named) or 'none'}): montage and report show two-class catalogs")


def catalog_classes(catalog) -> tuple[str, str]:
    """`two_classes` of a catalog, read from its first row (SPIRAL for a catalog of no rows)."""
    return two_classes(catalog, next(shown_catalog_rows(catalog), None))


def row_probability(catalog, n: int, row: dict, classes: tuple[str, str] = SPIRAL) -> float:
    """P(shown class) of the `n`-th row (from 0) of `catalog` (`classes`: `two_classes`).

    Raises:
        UsageError: the catalog has no such column, or the row's value is not a probability.
    """
    column = f"p_{classes[1]}"
    if column not in row:
        raise UsageError(f"{catalog} has no {column} column: not a catalog of a {'/'.join(reversed(classes))} model")
    try:
        p = float(row[column])
    except (TypeError, ValueError):
        p = math.nan
    if not 0 <= p <= 1:  # NaN too
        raise UsageError(f"{catalog}: row {n + 1} (id {row.get('id')!r}) has {column} {row[column]!r}, "
                         "not a probability between 0 and 1")
    return p


def row_label(row: dict, p: float, classes: tuple[str, str] = SPIRAL) -> str:
    """The row's label; a catalog without a label column (or a blank one) gets classify's: the shown
    class above 0.5."""
    return str(row.get("label") or (classes[1] if p > 0.5 else classes[0]))


def select(catalog, per_row: int = 8) -> dict[str, list[dict]]:
    """The galaxies of each montage row, best first: {"spiral": [...], "elliptical": [...], "uncertain": [...]}
    (for a model of other classes, its two classes in place of spiral and elliptical: `two_classes`).

    Spirals and ellipticals are chosen among the galaxies with that label; the uncertain row from
    those not already chosen, so no galaxy is shown twice. Paths are given as the files to open
    (a FITS catalog's escapes undone).
    """
    if not 1 <= per_row <= MAX_PER_ROW:
        raise UsageError(f"per_row is {per_row}: a montage row shows 1 to {MAX_PER_ROW} galaxies")
    other, shown = classes = catalog_classes(catalog)
    heaps: dict[str, list] = {shown: [], other: [], UNCERTAIN: []}
    for n, row in enumerate(shown_catalog_rows(catalog)):
        p = row_probability(catalog, n, row, classes)
        missing = [column for column in ("id", "path") if column not in row]
        if missing:  # (an astronomer's own table: it had been a KeyError)
            raise UsageError(f"{catalog} has no {' or '.join(missing)} column: a catalog to show needs id, path and "
                             f"p_{classes[1]}, as `galaxy classify` writes them")
        label = row_label(row, p, classes)
        entry = {"id": str(row["id"]), "path": str(row["path"]), "p": p}
        if label in classes:  # -n: ties go to the earlier row
            _push(heaps[label], per_row, (p if label == shown else 1 - p, -n, entry))
        # enough candidates that per_row remain after the confident rows take theirs
        _push(heaps[UNCERTAIN], 3 * per_row, (-abs(p - 0.5), -n, entry))
    chosen = {key: _best_first(heaps[key]) for key in (shown, other)}
    picked = {id(e) for entries in chosen.values() for e in entries}
    chosen[UNCERTAIN] = [e for e in _best_first(heaps[UNCERTAIN]) if id(e) not in picked][:per_row]
    return chosen


def catalog_metadata(catalog, say: bool = True) -> dict:
    """The metadata of the catalog shown; {} where it has none (e.g. evaluate's predictions.csv: the defaults
    apply) or it cannot be read, which is said with `say` (a damaged metadata file had passed unseen)."""
    try:
        return read_catalog_metadata(catalog)
    except (UsageError, *UNREADABLE) as exc:
        if say:
            log.warning("%s: its metadata cannot be read (%s): shown without it (how it was made, its model's crop "
                        "and reading)", catalog, exc)
        return {}


def _reader(meta: dict, spec: InputSpec, cwd: str | None):
    """How the catalog's run read a row's `path`, as a function path -> display pixels: through its
    `--hdu`, and as one file per band where it had `--band-columns` (the path then joins the band files
    with ";"). Both had been ignored: an HDU of noise drawn for the galaxy, every band row unreadable."""
    from galaxy.io.fits import hdu_value, read_band_files
    from galaxy.io.images import read_cutout

    try:
        run = json.loads(meta.get("run") or "{}")
        hdu = hdu_value(run.get("hdu"))
    except (ValueError, TypeError, AttributeError, UsageError):
        run, hdu = {}, None
    bands = [pair.split("=", 1)[0] for pair in str(run.get("band_columns") or "").split(",") if "=" in pair]

    def read(path: str) -> np.ndarray:
        if bands:
            files = path.split(";")
            if len(files) != len(bands):
                raise ImageReadError(path, f"names {len(files)} files for the {len(bands)} bands {','.join(bands)}")
            return read_band_files({band: str(resolve_path(f, cwd)) for band, f in zip(bands, files)}, spec, hdu)[0]
        return read_cutout(resolve_path(path, cwd), spec, hdu)[0]

    return read


def printable(text: str) -> str:
    """`text` with control characters (a tab, a newline in a file name) shown as escapes, not as glyphs
    the font lacks (matplotlib's warning)."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _spec(meta: dict) -> InputSpec:
    try:
        spec = json.loads(meta["spec"])
        check_spec_shape(spec)
        return InputSpec.from_dict(spec)
    except (KeyError, ValueError, TypeError):
        return InputSpec()


def resolve_path(path: str, cwd: str | None) -> Path:
    """A catalog's path as a file to open: relative ones from the folder it was classified in; of the
    names its escapes may stand for (a file name that is not UTF-8), the first that exists, else the name
    as written (whose failure is then reported): `existing_file`."""
    return Path(existing_file(path, cwd or None))


def _paths_base(catalog, cwd: str | None) -> str | None:
    """The folder a catalog's relative paths are read from: the one it was classified in, or where that folder
    is gone (a project folder moved or renamed: every galaxy had been drawn "unreadable"), the catalog's own,
    which is said."""
    if not cwd or os.path.isdir(existing_file(cwd)):
        return cwd
    here = Path(catalog).absolute().parent
    log.warning("%s was classified in %s, which no longer exists: its relative paths are read from %s, the "
                "catalog's folder", catalog, cwd, here)
    return str(here)


def refuse_catalog_files(catalog, out, command: str) -> None:
    """Refuse an output `out` that would overwrite `catalog`, its metadata sidecar or its errors
    file, or that lies inside a `--ray` output folder (whose top holds only its Parquet parts).

    Raises:
        UsageError: naming `out` and the file it would overwrite.
    """
    catalog, out = Path(catalog), Path(out)
    if catalog.is_dir() and out.resolve().is_relative_to(catalog.resolve()):
        raise UsageError(f"{out} is inside {catalog}, the catalog {command} reads: write it elsewhere")
    for path, what in ((catalog, f"the catalog {command} reads"), (sidecar_path(catalog), f"the metadata of {catalog}"),
                       (errors_path(catalog), f"the errors file of {catalog}")):
        if same_file(out, path):
            raise UsageError(f"{out} is {what}: choose another output")


def montage_output(out) -> Path:
    """The file a montage named `out` is written to: `out` itself, with .png added when it has no suffix.

    Raises:
        UsageError: `out` has another suffix (the montage is a PNG).
    """
    return named_output(out, (SUFFIX,), "a montage is written as PNG")


def named_output(out, suffixes: tuple[str, ...], kind: str) -> Path:
    """`out` as a picture or page of one kind is written: itself, with `suffixes[0]` added when it has no
    suffix (`montage_output`, `report_output`).

    Raises:
        UsageError: `out` has a suffix not among `suffixes`, or names no file (`-o ''`, `-o dir/`: a
            ValueError of pathlib had been a traceback); `kind` says what the file is written as.
    """
    if not str(out).strip() or str(out).endswith(("/", os.sep)) or Path(out).name in ("", ".", ".."):
        raise UsageError(f"-o {str(out)!r} names no file: give the file to write, e.g. -o out{suffixes[0]}")
    out = Path(out)
    if not out.suffix:
        return out.with_name(out.name + suffixes[0])
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{out}: {kind}; name it with {suffixes[0]} (or no suffix)")
    return out


def montage_png(catalog, per_row: int = 8, dpi: int = 100, metadata: dict | None = None) -> bytes:
    """The montage of `catalog` as PNG bytes.

    Galaxies whose image cannot be read are drawn as 'unreadable' and counted in one warning. `metadata`:
    the catalog's (`catalog_metadata`), where the caller has read it.

    Raises:
        UsageError: the catalog has no rows, or no probabilities (`row_probability`).
    """
    from galaxy.io.images import crop_resize
    from galaxy.evaluation.plots import _pyplot

    chosen = select(catalog, per_row)
    if not any(chosen.values()):
        raise UsageError(f"{catalog} has no rows to show")
    shown_class = next(iter(chosen))
    meta = catalog_metadata(catalog) if metadata is None else metadata  # (a report has read it)
    spec, cwd = _spec(meta), _paths_base(catalog, meta.get("cwd"))
    read = _reader(meta, spec, cwd)
    unreadable: list[str] = []
    plt = _pyplot()
    fig, axes = plt.subplots(len(chosen), per_row, figsize=(1.6 * per_row, 1.9 * len(chosen)), dpi=dpi, squeeze=False)
    try:
        for r, key in enumerate(chosen):
            title = row_title(key)
            for c in range(per_row):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(chosen[key]):
                    for spine in ax.spines.values():  # not axis("off"): the first keeps the row's title
                        spine.set_visible(False)
                    ax.patch.set_visible(False)  # an empty row's note runs across these cells
                    continue
                entry = chosen[key][c]
                try:
                    ax.imshow(np.clip(crop_resize(read(entry["path"]), spec.crop_fraction, 128), 0, 1))
                except (ImageReadError, OSError) as exc:
                    unreadable.append(f"{entry['path']}: {exc}")
                    ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                # as written: a `$` had been read as TeX (a traceback, or another id shown)
                ax.set_xlabel(f"{printable(short_id(entry['id']))}\nP({shown_class}) {entry['p']:.3f}", fontsize=7,
                              parse_math=False)
            if not chosen[key]:
                note = axes[r, 0].text(0.05, 0.5, empty_row(key), ha="left", va="center", fontsize=9,
                                       transform=axes[r, 0].transAxes)
                note.set_in_layout(False)  # it runs across the row's empty cells
            axes[r, 0].set_ylabel(title.replace("most ", "most\n", 1), fontsize=9, fontweight="bold")
        if unreadable:
            shown = sum(len(entries) for entries in chosen.values())
            log.warning("montage: %d of %d galaxies could not be read and are drawn as 'unreadable' (first: %s)",
                        len(unreadable), shown, unreadable[0])
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def montage(catalog, out, per_row: int = 8, dpi: int = 100) -> Path:
    """Write the montage PNG of `catalog` to `out` (.png added when it has no suffix); return the path written.

    Raises:
        UsageError: `out` is not a PNG name or is one of the catalog's own files; the catalog has
            nothing to show.
    """
    catalog = Path(catalog).absolute()  # `galaxy montage .` inside a --ray folder: a path with a name
    refuse_catalog_files(catalog, out, "montage")  # first: `-o catalog.csv` is this mistake, not a wrong suffix
    out = montage_output(out)
    refuse_catalog_files(catalog, out, "montage")  # again: `-o run` became run.png, the catalog's own name
    return write_whole(out, montage_png(catalog, per_row, dpi))
