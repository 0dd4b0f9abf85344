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

# Default columns of a table, the first present wins: image paths (png_loc: Galaxy Zoo 2) and ids;
# the columns of our own that a kept input column may not take; the columns of an errors file.
PATH_COLUMNS = ("png_loc", "file_loc", "file", "path")
ID_COLUMNS = ("id_str", "objid", "id")
RESERVED_COLUMNS = ("id", "path", "label")
ERROR_COLUMNS = ("id", "path", "stage", "reason")

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
        raise UsageError(f"cannot tell the output format of {path}: use one of {sorted(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]
