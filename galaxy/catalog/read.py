"""Reading input catalogs: a path column (or band columns), ids and kept columns, streamed; the catalogs galaxy
wrote are read by `galaxy.catalog.written`."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from galaxy.catalog import formats
from galaxy.catalog.formats import (ID_COLUMNS, PATH_COLUMNS, RAY_BOOKKEEPING, RAY_MANIFEST, TABLE_FORMATS,
                                    check_kept_columns, table_format)
from galaxy.catalog.fits_rows import fits_columns, table_hdu
from galaxy.catalog.text import existing_file, not_utf8
from galaxy.catalog.text_tables import ecsv_header, open_text, text_dicts
from galaxy.errors import UsageError
from galaxy.files import arrow_source, close_source

log = logging.getLogger(__name__)

# What reading a damaged, cut-short or foreign catalog raises (pyarrow's ArrowInvalid and UnicodeDecodeError are
# ValueErrors; IndexError: a FITS file with no table HDU; TypeError: a CSV row cut short, its missing cells None)
UNREADABLE = (OSError, ValueError, KeyError, IndexError, TypeError, csv.Error)


def _parts(path: Path) -> list[Path] | None:
    """The Parquet parts of a `classify --ray` output folder, in order; None for a file."""
    manifest = path / RAY_BOOKKEEPING / RAY_MANIFEST
    if not path.is_dir():
        return None
    if not manifest.is_file():
        raise UsageError(f"{path} is a folder without {RAY_BOOKKEEPING}/{RAY_MANIFEST}: "
                         "not a finished `galaxy classify --ray` output")
    try:
        parts = [path / name for name in json.loads(manifest.read_text())["parts"]]
    except (ValueError, KeyError, TypeError) as exc:  # (the folder had been named, its manifest not)
        raise UsageError(f"cannot read catalog {path}: its {RAY_BOOKKEEPING}/{RAY_MANIFEST} is not a manifest galaxy "
                         f"wrote ({type(exc).__name__}: {exc})") from None
    missing = [part.name for part in parts if not part.is_file()]
    if missing:  # pyarrow's FileNotFoundError had neither a file name nor a reason: a traceback
        raise UsageError(f"{path}: {len(missing)} of the {len(parts)} parts its manifest names are missing (e.g. "
                         f"{missing[0]}): rerun the `galaxy classify --ray` command that wrote it to redo them")
    return parts


def _text(value) -> str:
    """A kept column's cell as text, exactly as the catalog holds it (kept columns keep their spaces; bytes that
    are not UTF-8 with replacement characters, which every output format can write); '' for a missing cell:
    None (a Parquet null, a FITS TNULL sentinel, a short CSV row). Paths and ids: `cell_path`, `cell_id`."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _name_text(value) -> str:
    """A path or id cell as text: bytes as Python holds file names (`os.fsdecode`: bytes that are not UTF-8 as
    surrogate escapes, which open the file, where a decode with replacement characters named none), a path
    object (`Path`) as its name, anything else by str(); '' for a missing cell (None)."""
    if value is None:
        return ""
    return os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)


def cell_path(value, base=None) -> str:
    """The file a catalog's path cell names, read alike by `galaxy classify --catalog` and a Table given to the
    Python API: the text (`_name_text`) without the spaces around it, relative names from `base` (the catalog's
    folder; None: the working folder), and `\\xNN` escapes read as the name galaxy wrote them for (`existing_file`:
    a file name that is not UTF-8, fed back from a catalog galaxy wrote); '' for an empty or missing cell, which
    names no file (not the folder: its reader says so)."""
    text = _name_text(value).strip()
    return existing_file(text, base) if text else ""


def cell_id(value) -> str | None:
    """A catalog's id cell as `cell_path` reads a path: text without the spaces around it; None where empty or
    missing (the row then takes its file's stem)."""
    return _name_text(value).strip() or None


def _catalog_columns(path: Path, fmt: str):
    """(column names, iterator of {column: values} batches), streamed: CSV and ECSV row by row,
    Parquet by record batch, FITS memory-mapped. A missing cell is None."""
    if fmt in ("csv", "ecsv"):
        fh = open_text(path)
        try:
            names, reader = text_dicts(fh, fmt)
        except BaseException:
            fh.close()
            raise

        def text_batches():
            with fh:
                batch = []
                try:
                    for row in reader:
                        batch.append(row)
                        if len(batch) == formats.CATALOG_BATCH:
                            yield {c: [r.get(c) for r in batch] for c in names}
                            batch = []
                except UnicodeDecodeError:
                    raise UsageError(f"cannot read catalog {path}: {not_utf8(path)}") from None
                except (csv.Error, ValueError) as exc:  # an unclosed quote, a short ECSV row
                    # csv counts the lines of the rows it finished: the row it fails on starts on the next
                    number = getattr(reader, "line_num", None)
                    line = "" if number is None else f", line {number + isinstance(exc, csv.Error)}"
                    raise UsageError(f"cannot read catalog {path}{line}: {exc}") from None
                if batch:
                    yield {c: [r.get(c) for r in batch] for c in names}

        return names, text_batches()
    if fmt == "parquet":
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = arrow_source(path)
        try:
            parquet = pq.ParquetFile(source)
        except BaseException:  # not a Parquet file: the open file (a name that is not UTF-8) is closed here,
            close_source(source)  # since no batches will ever close it
            raise
        schema = parquet.schema_arrow
        # astropy writes a masked column X as X plus a boolean X.mask (its fill values stay in X)
        masks = {name[:-5]: name for name in schema.names
                 if name.endswith(".mask") and name[:-5] in schema.names and schema.field(name).type == pa.bool_()}

        narrow = {field.name: {pa.float32(): np.float32, pa.float16(): np.float16}[field.type] for field in schema
                  if field.type in (pa.float32(), pa.float16())}

        def parquet_batches():
            try:
                for batch in parquet.iter_batches(batch_size=formats.CATALOG_BATCH):
                    columns = batch.to_pydict()
                    for name, kind in narrow.items():  # to_pydict widens float32 to a Python float, whose text
                        # has float64's digits (17.23 -> 17.229999542236328); FITS keeps float32's shortest form
                        columns[name] = [None if v is None else kind(v) for v in columns[name]]
                    for name, mask in masks.items():
                        columns[name] = [None if masked else v for v, masked in zip(columns[name], columns.pop(mask))]
                    yield columns
            finally:
                close_source(source)

        return [n for n in schema.names if n not in masks.values()], parquet_batches()
    return fits_columns(path)


def parquet_schema(path):
    """The Arrow schema of a Parquet file, whatever its name (`galaxy.files.arrow_source`)."""
    import pyarrow.parquet as pq

    source = arrow_source(path)
    try:
        return pq.read_schema(source)
    finally:
        close_source(source)


def first_present(candidates, columns) -> str | None:
    """The column of `columns` that the first of `candidates` names: spelt so, else in another case
    (FITS names are case-insensitive: a FITS catalog's FILE_LOC or OBJID), where only one column is
    that name in some case; None when none is."""
    for wanted in candidates:
        if wanted in columns:
            return wanted
    for wanted in candidates:
        found = [name for name in columns if name.casefold() == wanted]
        if len(found) == 1:
            return found[0]
    return None


def case_clash(candidates, columns) -> list[str]:
    """The columns `first_present` passes over because two or more of them spell one of `candidates` in other
    cases ('PATH' and 'Path' both spell 'path'), ahead of the column it takes or where it takes none; [] where
    there are none (a column spelt exactly as a candidate is taken before any other spelling is looked at)."""
    if any(wanted in columns for wanted in candidates):
        return []
    for wanted in candidates:
        found = [name for name in columns if name.casefold() == wanted]
        if found:
            return found if len(found) > 1 else []
    return []


def resolved_columns(path, columns, path_column, id_column, band_columns) -> tuple[str | None, str | None]:
    """(path column, id column) read: those named, else the first of PATH_COLUMNS / ID_COLUMNS present (no
    path column with band files, no id column where none is present). Raises UsageError for one absent."""
    if band_columns:
        absent = [c for c in band_columns.values() if c not in columns]
        if absent:
            raise UsageError(f"catalog {path} has no band path column {absent[0]!r}; columns are {columns}")
        path_column = None
    else:
        path_column = path_column or first_present(PATH_COLUMNS, columns)
        if path_column not in columns:
            clash = case_clash(PATH_COLUMNS, columns)  # (the message had not said why 'PATH' and 'Path' were not read)
            raise UsageError(f"catalog {path} has no path column {path_column or PATH_COLUMNS}; columns are {columns}"
                             + (f" ({' and '.join(map(repr, clash))} spell {clash[0].casefold()!r} alike in another "
                                "case: name the one to read with --path-column)" if clash else ""))
    if id_column is None:
        id_column = first_present(ID_COLUMNS, columns)
    elif id_column not in columns:
        raise UsageError(f"catalog {path} has no id column {id_column!r}; columns are {columns}")
    return path_column, id_column


def input_catalog_columns(path, fmt: str | None = None) -> list[str]:
    """The column names of an input catalog (`resolved_columns` says which of them a run reads); `fmt`: its
    format where its name does not tell it (an output written with `--format`)."""
    path = Path(path)
    columns, batches = _open_input_catalog(path, fmt)
    try:
        next(batches, None)  # started, so that closing it closes the file
        batches.close()
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read catalog {path}: {exc}") from None
    return columns


def _open_input_catalog(path: Path, fmt: str | None = None):
    """(column names, batches) of an input catalog, or a UsageError naming it."""
    fmt = fmt or table_format(path)
    if fmt is None:
        raise UsageError(f"catalog {path} is not {', '.join(TABLE_FORMATS)}")
    try:
        return _catalog_columns(path, fmt)
    except UnicodeDecodeError:
        raise UsageError(f"cannot read catalog {path}: {not_utf8(path)}") from None
    except (OSError, ValueError, csv.Error) as exc:
        raise UsageError(f"cannot read catalog {path}: {exc}") from None


def read_input_catalog(path, path_column: str | None = None, id_column: str | None = None, keep=(),
                       band_columns: dict[str, str] | None = None):
    """Rows (path, id or None, {kept column: text}) from a CSV / Parquet / FITS / ECSV table, streamed.

    Relative paths are taken from the catalog's folder. The path column defaults to the
    first of `PATH_COLUMNS` present; the id column to the first of `ID_COLUMNS`; `keep`
    names columns passed through to the output (e.g. ra, dec, redshift). With
    `band_columns` ({band: column}, one FITS file per band and galaxy) the path of a row is
    a {band: path} dict instead.
    """
    path = Path(path)
    columns, batches = _open_input_catalog(path)
    path_column, id_column = resolved_columns(path, columns, path_column, id_column, band_columns)
    missing = [c for c in keep if c not in columns]
    if missing:
        raise UsageError(f"catalog {path} has no column {missing[0]!r} to keep; columns are {columns}")
    used = [path_column, id_column, *keep, *(band_columns or {}).values()]
    twice = next((c for c in used if c is not None and columns.count(c) > 1), None)
    if twice is not None:  # the reader had taken one of them (the last, in a CSV) without a word
        raise UsageError(f"catalog {path} names column {twice!r} {columns.count(twice)} times: rename all but "
                         "the one to use")
    check_kept_columns(keep)  # the one rule (classify checks it before, with the format and the classes)
    arrays = array_columns(path, keep)
    if arrays:
        raise UsageError(f"catalog {path}: column {arrays[0]!r} holds several values per row (an array column), and "
                         "only columns of one value per row can be kept (its values would be written as lossy text)")
    done = 0
    while True:
        try:
            batch = next(batches, None)
        except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:  # a Parquet file's damaged page (an
            # OSError without a file name), a FITS table cut short (TypeError): mid-run, a traceback had ended it
            raise UsageError(f"cannot read catalog {path} after its first {done:,} rows ({type(exc).__name__}: "
                             f"{exc}); the rows classified so far are kept for a rerun once it is mended") from None
        if batch is None:
            return
        n = len(next(iter(batch.values())))
        ids = batch[id_column] if id_column else [None] * n
        kept = [batch[c] for c in keep]
        for i, ident in enumerate(ids):
            where = ({band: cell_path(batch[c][i], path.parent) for band, c in band_columns.items()} if band_columns
                     else cell_path(batch[path_column][i], path.parent))
            yield where, cell_id(ident), {c: _text(column[i]) for c, column in zip(keep, kept)}
        done += n


def array_columns(path: Path, names) -> list[str]:
    """Those of the columns `names` of an input catalog that hold an array per row (FITS repeat counts
    and variable-length arrays, Parquet lists and structs, ECSV subtypes such as float64[5] or json),
    read from its header or schema alone."""
    if not names:
        return []
    fmt = table_format(path)
    if fmt == "fits":
        from astropy.io import fits

        with fits.open(path) as hdul:
            table = table_hdu(hdul)
            dtype = table.columns.dtype if table is not None else None  # from the header: no row is read
            arrays = {name for name in (dtype.names if dtype is not None else ())
                      if dtype[name].shape != () or dtype[name].kind == "O"}  # repeat > 1; variable-length
    elif fmt == "parquet":
        import pyarrow as pa

        schema = parquet_schema(path)
        arrays = {field.name for field in schema if pa.types.is_nested(field.type)}
    elif fmt == "ecsv":
        arrays = {column.get("name") for column in ecsv_header(path)["datatype"]
                  if "[" in str(column.get("subtype", "")) or str(column.get("subtype", "")).startswith("json")}
    else:
        arrays = set()
    return [name for name in names if name in arrays]
