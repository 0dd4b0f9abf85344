"""Galaxy Zoo vote-fraction catalogs as a label source.

Galaxy Zoo publishes, per galaxy, the fraction of volunteers who answered each question. The
first question ("smooth or featured/disk?") gives clean binary labels by thresholds: a smooth
fraction >= t makes an elliptical, a featured-or-disk fraction >= t a spiral; galaxies on which
the volunteers did not agree are dropped (Willett et al. 2013 and Walmsley et al. 2022 use
t = 0.8 for "clean" samples). Three column conventions are known:

  kaggle  the Galaxy Zoo Kaggle challenge (`GalaxyID`, `Class1.1` smooth, `Class1.2` features);
          images `<GalaxyID>.jpg` in the images folder;
  gz2     GZ2 (Willett et al. 2013, Hart et al. 2016: `dr7objid`,
          `t01_smooth_or_features_a01_smooth_<kind>`, `..._a02_features_or_disk_<kind>`,
          `total_classifications`); images named by id, or by `asset_id` through
          `gz2_filename_mapping.csv` (objid, asset_id) beside the table or the images;
  decals  GZ DECaLS (Walmsley et al. 2022: `iauname`, `smooth-or-featured_smooth_<kind>`,
          `smooth-or-featured_featured-or-disk_<kind>`, `smooth-or-featured_total-votes`,
          image path `png_loc`).

`kind` is "fraction" (raw vote fractions; Kaggle's are already weighted) or "debiased"
(GZ2/DECaLS redshift-debiased fractions). Tables are CSV, Parquet, FITS or ECSV (astropy).
numpy/astropy only.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galaxy.catalog.formats import CSV_ENCODING, PATH_COLUMNS, table_format
from galaxy.catalog.text import not_utf8
from galaxy.errors import UsageError
from galaxy.files import arrow_source, close_source, ends_its_line
from galaxy.io.images import is_image_path, stem_id

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class VoteConvention:
    """Column names of one Galaxy Zoo release ({kind} is "fraction" or "debiased")."""

    name: str
    id_column: str
    smooth: str
    featured: str
    votes: str | None

    def columns(self, kind: str) -> tuple[str, str]:
        return self.smooth.format(kind=kind), self.featured.format(kind=kind)


CONVENTIONS = {
    "kaggle": VoteConvention("kaggle", "GalaxyID", "Class1.1", "Class1.2", None),
    "gz2": VoteConvention("gz2", "dr7objid", "t01_smooth_or_features_a01_smooth_{kind}",
                          "t01_smooth_or_features_a02_features_or_disk_{kind}", "total_classifications"),
    "decals": VoteConvention("decals", "iauname", "smooth-or-featured_smooth_{kind}",
                             "smooth-or-featured_featured-or-disk_{kind}", "smooth-or-featured_total-votes"),
}


@dataclass(frozen=True)
class VoteRule:
    """How votes become labels.

    Attributes:
        threshold: the fraction (in (0.5, 1]) a side needs to win; both below -> dropped.
        min_votes: galaxies with fewer votes on the question are dropped (where counted).
        kind: "fraction" or "debiased".
        convention: "auto" (from the columns) or a key of CONVENTIONS.
        images: folder the images are in (default: the table's folder).
    """

    threshold: float = 0.8
    min_votes: int = 0
    kind: str = "fraction"
    convention: str = "auto"
    images: str | None = None

    def __post_init__(self):
        if not 0.5 < self.threshold <= 1:
            raise UsageError(f"vote threshold {self.threshold} must be in (0.5, 1] so one class wins")
        if self.kind not in ("fraction", "debiased"):
            raise UsageError(f"vote kind {self.kind!r} is not 'fraction' or 'debiased'")


def read_table(path):
    """An astropy Table from CSV, Parquet, FITS or ECSV."""
    from astropy.io.fits.verify import VerifyError
    from astropy.io.registry import IORegistryError
    from astropy.table import Table

    path = Path(path)
    fmt = table_format(path)
    try:
        if fmt == "parquet":  # pyarrow directly: astropy's Parquet reader needs pandas
            import pyarrow.parquet as pq

            source = arrow_source(path)  # (a name that is not UTF-8: an open file)
            try:
                return Table(pq.read_table(source).to_pydict())
            finally:
                close_source(source)
        if fmt not in ("csv", "ecsv"):
            return Table.read(path, hdu=1)
        if fmt == "csv":
            _check_rows(path)
        table = Table.read(path, format=f"ascii.{fmt}")
        first = table.colnames[0] if table.colnames else ""
        if first.startswith("\ufeff"):  # Excel's "CSV UTF-8" byte-order mark, read as part of the first name
            table.rename_column(first, first[1:])
        return table
    except IORegistryError:  # (no OSError: a FITS file that is not one, an empty one, a cutout's image HDU)
        raise UsageError(f"cannot read the table {path}: not a {fmt.upper()} table astropy can read") from None
    except (OSError, ValueError, KeyError, IndexError, VerifyError) as exc:
        raise UsageError(f"cannot read the table {path}: {exc}") from None


def _check_rows(path: Path) -> None:
    """Refuse a CSV table whose rows are not whole, naming the line: astropy's reader took an unclosed
    quote's rest of the file as one cell, and rows cut short as fewer galaxies, without a word."""
    with open(path, newline="", encoding=CSV_ENCODING) as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header, last = next(reader, None), None
            for row in reader:
                if any(field.strip() for field in row):  # (a blank line is none: astropy skips it)
                    last = row
            if last is not None and len(last) < len(header) and not ends_its_line(path):
                # a file cut inside its last row (a short row with its line end is astropy's to pad, as before)
                raise UsageError(f"cannot read the table {path}: it ends inside a row ({len(last)} of the header's "
                                 f"{len(header)} fields): cut short?")
        except csv.Error as exc:
            raise UsageError(f"cannot read the table {path}: {exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"cannot read the table {path}: {not_utf8(path)}") from None


def detect(columns, kind: str = "fraction") -> VoteConvention | None:
    """The convention whose id and vote columns are all present, or None."""
    for convention in CONVENTIONS.values():
        if {convention.id_column, *convention.columns(kind)} <= set(columns):
            return convention
    return None


def vote_labels(smooth: np.ndarray, featured: np.ndarray, votes: np.ndarray | None, rule: VoteRule) -> np.ndarray:
    """Per galaxy: 0 elliptical, 1 spiral, -1 dropped (no clear majority, too few votes, missing)."""
    smooth = np.asarray(smooth, np.float64)
    featured = np.asarray(featured, np.float64)
    labels = np.full(len(smooth), -1, np.int64)
    labels[np.nan_to_num(smooth, nan=0) >= rule.threshold] = 0
    labels[np.nan_to_num(featured, nan=0) >= rule.threshold] = 1
    if votes is not None and rule.min_votes:
        labels[np.nan_to_num(np.asarray(votes, np.float64), nan=0) < rule.min_votes] = -1
    return labels


MISSING_WORDS = frozenset({"", "na", "nan", "null", "none", "--", "n/a"})  # what tables write for no value


def _numbers(table, column: str, path) -> np.ndarray:
    """A vote column as float64, a missing value NaN (a galaxy it leaves without a label). One that holds a
    word where a number goes is refused, naming the row: numpy's float() of it had been a traceback."""
    values = table[column]
    try:
        return np.asarray(values.filled(np.nan) if hasattr(values, "filled") else values, np.float64)
    except (TypeError, ValueError):
        pass
    numbers = np.empty(len(values))
    for row, value in enumerate(values, 1):
        text = "" if value is np.ma.masked else str(value).strip()
        if text.lower() in MISSING_WORDS:
            numbers[row - 1] = np.nan
            continue
        try:
            numbers[row - 1] = float(text)
        except ValueError:
            raise UsageError(f"{path}, row {row}: column {column} holds {text!r}, not a number") from None
    return numbers


def _image_index(folder: Path) -> dict[str, str]:
    return {stem_id(p): str(p) for p in folder.rglob("*") if p.is_file() and is_image_path(p)}


def _asset_ids(table_path: Path, images: Path) -> dict[str, str]:
    """GZ2's objid -> asset_id file-name mapping, when a gz2_filename_mapping.csv is at hand."""
    for folder in (table_path.parent, images, images.parent):
        mapping = folder / "gz2_filename_mapping.csv"
        if mapping.is_file():
            try:
                with open(mapping, newline="", encoding=CSV_ENCODING) as fh:
                    return {row["objid"]: row["asset_id"] for row in csv.DictReader(fh, strict=True)}
            except (csv.Error, UnicodeDecodeError, KeyError) as exc:
                raise UsageError(f"cannot read the file-name mapping {mapping}: {exc!r}") from None
    return {}


def vote_rows(path, rule: VoteRule = VoteRule(), classes=("elliptical", "spiral")):
    """(paths, ids, class indices) of the galaxies a Galaxy Zoo vote table labels: ids are the
    catalog's ids. `galaxy.labels.load_votes` makes them a LabelledSet.

    Raises:
        UsageError: unknown columns, classes other than elliptical/spiral, or no galaxy left.
    """
    if set(classes) != {"elliptical", "spiral"}:
        raise UsageError(f"vote catalogs give elliptical and spiral labels, not {list(classes)}")
    path = Path(path)
    table = read_table(path)
    convention = CONVENTIONS.get(rule.convention) if rule.convention != "auto" else detect(table.colnames, rule.kind)
    if convention is None:
        known = {name: [c.id_column, *c.columns(rule.kind)] for name, c in CONVENTIONS.items()}
        raise UsageError(f"{path} has none of the Galaxy Zoo vote columns {known}; columns are {table.colnames[:12]}")
    smooth_col, featured_col = convention.columns(rule.kind)
    missing = [c for c in (convention.id_column, smooth_col, featured_col) if c not in table.colnames]
    if missing:
        raise UsageError(f"{path} lacks the {convention.name} columns {missing}")
    # options this table cannot honour are refused (they had been ignored, and recorded as applied)
    if rule.min_votes and convention.votes not in table.colnames:
        raise UsageError(f"--min-votes {rule.min_votes}: {path} ({convention.name}) has no vote count column"
                         f"{f' ({convention.votes})' if convention.votes else ''} to drop thinly voted galaxies by")
    if rule.kind != "fraction" and all("{kind}" not in c for c in (convention.smooth, convention.featured)):
        raise UsageError(f"--vote-kind {rule.kind}: {path} ({convention.name}) has one kind of vote fraction "
                         "(the Kaggle table's are already weighted): leave the option out")
    votes = _numbers(table, convention.votes, path) if rule.min_votes else None  # (read only when used)
    labels = vote_labels(_numbers(table, smooth_col, path), _numbers(table, featured_col, path), votes, rule)
    images = Path(rule.images) if rule.images else path.parent
    path_column = next((c for c in PATH_COLUMNS if c in table.colnames), None)
    index = None if path_column else _image_index(images)
    assets = _asset_ids(path, images) if convention.name == "gz2" and not path_column else {}
    paths, ids, kept, no_image = [], [], [], 0
    for row, label in zip(table, labels):
        if label < 0:
            continue
        galaxy_id = str(row[convention.id_column]).strip()
        if path_column:
            image = Path(str(row[path_column]))
            image = image if image.is_absolute() else images / image
            image = str(image) if image.is_file() else None
        else:
            image = index.get(assets.get(galaxy_id, galaxy_id))
        if image is None:
            no_image += 1
            continue
        paths.append(image)
        ids.append(galaxy_id)
        kept.append(classes.index(("elliptical", "spiral")[label]))
    log.info("%s (%s, %s >= %g): %d elliptical, %d spiral, %d without a clear majority, %d without an image",
             path.name, convention.name, rule.kind, rule.threshold, kept.count(classes.index("elliptical")),
             kept.count(classes.index("spiral")), int((labels < 0).sum()), no_image)
    if not kept:
        votes_rule = f" and --min-votes {rule.min_votes}" if rule.min_votes else ""
        raise UsageError(f"{path}: no galaxy passes the vote threshold {rule.threshold}{votes_rule} with an image "
                         f"in {images}")
    return paths, ids, kept


def rule_from_config(config: dict) -> VoteRule:
    """The VoteRule a command's recorded config used (defaults for keys it lacks or holds as None)."""
    default = VoteRule()

    def value(key, fallback):
        return fallback if config.get(key) is None else config[key]

    return VoteRule(threshold=float(value("vote_threshold", default.threshold)),
                    min_votes=int(value("min_votes", default.min_votes)), kind=value("vote_kind", default.kind),
                    images=config.get("images_dir") or None)


def is_vote_table(path, label_column: str = "label", kind: str = "fraction") -> bool:
    """Whether `path` is a table with Galaxy Zoo vote columns and no label column."""
    path = Path(path)
    if not path.is_file() or table_format(path) is None:
        return False
    if table_format(path) == "csv":
        try:
            with open(path, newline="", encoding=CSV_ENCODING) as fh:
                columns = next(csv.reader(fh, strict=True), [])
        except csv.Error as exc:
            raise UsageError(f"cannot read {path} as CSV: {exc}") from None
        except UnicodeDecodeError:
            raise UsageError(f"cannot read {path}: {not_utf8(path)}") from None
    else:
        columns = read_table(path).colnames
    return label_column not in columns and detect(columns, kind) is not None
