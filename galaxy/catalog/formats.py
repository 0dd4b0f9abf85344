"""The one table of file formats and column names: every suffix and every default column list.

Readers and writers of images and tables import these; nothing else spells a suffix or a
path/id column list.
"""

from __future__ import annotations

from pathlib import Path

from galaxy.errors import UsageError

# Images: the reference readers take these (a named file is taken whatever its suffix).
RASTER_SUFFIXES = (".jpg", ".jpeg", ".png")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")
IMAGE_SUFFIXES = RASTER_SUFFIXES + FITS_SUFFIXES

# Tables (input catalogs, label and vote tables, output catalogs): suffix -> format.
TABLE_FORMATS = {".csv": "csv", ".ecsv": "ecsv", ".parquet": "parquet", ".pq": "parquet",
                 ".fits": "fits", ".fit": "fits", ".fts": "fits", ".fits.gz": "fits"}
OUTPUT_FORMATS = {".csv": "csv", ".ecsv": "ecsv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits"}

# Rows a catalog reader converts at a time (CSV/ECSV rows, a Parquet record batch, a FITS memory-map slice).
CATALOG_BATCH = 8192

# Default columns of a table, the first present wins: image paths (png_loc: Galaxy Zoo 2) and ids;
# the columns of our own that a kept input column may not take; the columns of an errors file.
# Excel's "CSV UTF-8" starts the file with a byte-order mark, which plain utf-8 leaves in the first
# column's name ('\ufefffile'); utf-8-sig drops it and reads a file without one unchanged.
CSV_ENCODING = "utf-8-sig"
# The kinds of a catalog's extra columns other than "text" (`galaxy.catalog.write.column_kinds`), each
# with the parser of its cells' text; a bool cell is written "True" or "False" (as Python, numpy and
# astropy write one).
BOOL_TEXTS = ("True", "False")
VALUE_KINDS = {"int": int, "float": float, "bool": lambda text: text == "True"}
PATH_COLUMNS = ("png_loc", "file_loc", "file", "path")
ID_COLUMNS = ("id_str", "objid", "id")
RESERVED_COLUMNS = ("id", "path", "label", "masked_fraction")
ERROR_COLUMNS = ("id", "path", "stage", "reason")
# The probability columns are PROBABILITY_PREFIX + class name; the sky position of FITS inputs is
# SKY_COLUMNS, which a kept column of that name (in any case) replaces.
PROBABILITY_PREFIX = "p_"
SKY_COLUMNS = ("ra", "dec")
# The share of the pixels the network reads that a FITS input had masked (NaN or inf) and the reader
# filled (`galaxy.io.masked.masked_share`); with the sky position, the columns every catalog of FITS
# inputs has (FITS_COLUMNS, in this order after the others), NaN or empty where an input gives none.
MASKED_COLUMN = "masked_fraction"
FITS_COLUMNS = (*SKY_COLUMNS, MASKED_COLUMN)


def probability_column(class_name: str) -> str:
    """The catalog column of a class's probability: p_spiral."""
    return f"{PROBABILITY_PREFIX}{class_name}"


def catalog_columns(classes) -> tuple[str, ...]:
    """A catalog's own columns, in order: id, path, p_<class> for each class, label (kept and sky
    columns follow them)."""
    return ("id", "path", *(probability_column(c) for c in classes), "label")


# What each of a catalog's own columns holds, written with it in every format (the ECSV and Parquet
# column description, the FITS TCOMMn, the CSV sidecar's "columns"). Printable ASCII, as FITS needs,
# and at most 47 characters (p_elliptical's too), so that each fits a FITS TTYPEn card's comment.
COLUMN_DESCRIPTIONS = {
    "id": "unique id of the galaxy in this catalog",
    "path": "image file the galaxy was classified from",
    "label": "class with the highest probability (p_<class>)",
    "ra": "ICRS RA of the cutout centre (FITS header)",
    "dec": "ICRS Dec of the cutout centre (FITS header)",
    MASKED_COLUMN: "share of crop pixels masked (NaN/inf), filled",
}


def probability_description(class_name: str) -> str:
    """What a class's probability column holds: calibrated probability of class spiral. The
    classes are those of the labels the model learned (Galaxy Zoo 1 for the shipped models; the
    README says which, and on what the temperature was fitted)."""
    return f"calibrated probability of class {class_name}"


def catalog_descriptions(classes, kept=()) -> dict[str, str]:
    """name -> description of a catalog's own columns and of the FITS inputs' columns, but a sky column a
    kept column of that name (in any case) replaces: that one is the input catalog's, and takes
    its description from there or none."""
    kept_names = {name.casefold() for name in kept}
    own = {name: COLUMN_DESCRIPTIONS[name] for name in ("id", "path", "label", *FITS_COLUMNS) if name not in kept_names}
    return {**own, **{probability_column(c): probability_description(c) for c in classes}}


# A FITS column name (TTYPEn) is printable ASCII and fits one header card, quotes doubled.
FITS_NAME_LENGTH = 68

# A `classify --ray` output folder holds only its Parquet parts at the top, so that
# pyarrow.parquet.read_table(OUT) and pandas.read_parquet(OUT) read exactly the catalog; the
# bookkeeping (manifest, errors, shards, fingerprint) lives in this sub-folder, which Parquet
# dataset readers skip because its name starts with "_".
RAY_BOOKKEEPING = "_galaxy"
RAY_MANIFEST = "manifest.json"


def sidecar_path(output) -> Path:
    """Where a CSV catalog keeps its metadata (CSV has no header for it): catalog.csv -> catalog.csv.meta.json."""
    output = Path(output)
    return output.with_name(output.name + ".meta.json")


def beside_catalog(catalog, beside) -> Path:
    """A file a catalog keeps beside it (`beside`: `sidecar_path`, the errors file's path): beside `catalog`,
    or, where it is absent there and `catalog` is a link, beside the file the link names."""
    path = beside(catalog)
    if not path.exists() and Path(catalog).is_symlink():
        path = beside(Path(catalog).resolve())
    return path


def table_format(path) -> str | None:
    """The format of a table file by its name ("csv", "ecsv", "parquet", "fits"), None when not a table."""
    name = str(path).lower()
    return next((TABLE_FORMATS[s] for s in sorted(TABLE_FORMATS, key=len, reverse=True) if name.endswith(s)), None)


def output_format(path, explicit: str | None = None) -> str:
    """The writer for an output path: by `explicit` name or by extension; never a silent default."""
    if explicit:
        if explicit not in set(OUTPUT_FORMATS.values()):
            raise UsageError(f"unknown output format {explicit!r}; choose from {sorted(set(OUTPUT_FORMATS.values()))}")
        return explicit
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UsageError(f"cannot tell the output format of {path}: end it in one of {sorted(OUTPUT_FORMATS)}, or "
                         f"name the format with --format ({', '.join(sorted(set(OUTPUT_FORMATS.values())))})")
    return OUTPUT_FORMATS[suffix]


def check_kept_columns(names, output_format: str | None = None, classes=None) -> None:
    """Refuse kept column names the output cannot hold beside its own columns, before any work.

    Names are compared ignoring case, as FITS (TTYPE), STILTS, TOPCAT and SQL do: a kept `Label`
    or `P_spiral` next to `label` or `p_spiral` would be two columns to those tools. Kept `ra` and
    `dec` (any case) are allowed: they are the sky position, and replace the one FITS headers give.
    Other `p_` names (Galaxy Zoo's P_EL, P_CS) are kept: only the model's own are the output's.

    Args:
        names: the kept column names, as given.
        output_format: "csv", "ecsv", "parquet" or "fits"; FITS also needs printable ASCII names
            of at most 68 characters (None: not checked).
        classes: the model's classes, whose p_<class> columns the output holds (None: not known
            yet, not checked; checked again once the card is read).

    Raises:
        UsageError: naming the column and why.
    """
    probabilities = {probability_column(c).casefold() for c in classes or ()}
    seen: dict[str, str] = {}
    for name in names:
        folded = name.casefold()
        if folded in RESERVED_COLUMNS:
            raise UsageError(f"cannot keep column {name!r}: the output has its own {folded!r} column, and names "
                             f"are compared ignoring case (reserved: {list(RESERVED_COLUMNS)} and "
                             f"{PROBABILITY_PREFIX}<class>)")
        if folded in probabilities:
            raise UsageError(f"cannot keep column {name!r}: the output has its own {folded!r} column (the model's "
                             "probability of that class), and names are compared ignoring case")
        if folded in seen and seen[folded] != name:
            raise UsageError(f"cannot keep both {seen[folded]!r} and {name!r}: column names that differ only in case "
                             "are one column to FITS and many table tools")
        seen[folded] = name
        if output_format == "fits" and not _fits_name(name):
            raise UsageError(f"cannot keep column {name!r} in a FITS catalog: FITS column names are printable ASCII "
                             f"of at most {FITS_NAME_LENGTH} characters; write .csv, .ecsv or .parquet, or rename "
                             "the column in the input catalog")
    sky = [name for name in names if name.casefold() in SKY_COLUMNS]
    if len({name.casefold() for name in sky}) == 1:  # one alone would sit beside the header's other coordinate
        other = next(c for c in SKY_COLUMNS if c != sky[0].casefold())
        raise UsageError(f"cannot keep {sky[0]!r} without {other!r}: a kept ra and dec replace the position from "
                         f"the FITS headers together, and {sky[0]!r} alone would pair the catalog's coordinate with "
                         f"the header's {other}; keep both, or neither")


def _fits_name(name: str) -> bool:
    return all(" " <= c <= "~" for c in name) and len(name.replace("'", "''")) <= FITS_NAME_LENGTH
