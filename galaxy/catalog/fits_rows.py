"""Reading FITS table catalogs: memory-mapped, a batch of rows at a time.

Input catalogs (`fits_columns`: a path column, kept columns) and the catalogs galaxy wrote (`fits_rows`: a
resume, report, montage) go through one loop (`_fits_batches`). astropy's `Table.read` held the whole
table (418 MB for a million rows), and its rows are slow to walk.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from galaxy.catalog import formats
from galaxy.catalog.text import unescape_ascii_text
from galaxy.errors import UsageError


def fits_columns(path):
    """(column names, iterator of {column: values} batches) of an input catalog's first table, memory-mapped;
    a missing cell is None (`_fits_nulls`)."""
    from astropy.io import fits

    with _verified():
        hdul = fits.open(path, memmap=True)
    try:
        with _verified():
            table = table_hdu(hdul)
            names = list(table.columns.names) if table is not None else None
    except BaseException:
        hdul.close()
        raise
    if table is None:
        hdul.close()
        raise UsageError(f"catalog {path} has no table HDU{_cut_short(path)}")

    def batches():
        with hdul:
            yield from _fits_batches(table, list)

    return names, batches()


def _fits_batches(table, convert, nan_is_null: bool = True):
    """{column: convert(values)} batches of an open FITS table (`_field_values`), CATALOG_BATCH rows each
    from its memory map, a missing cell None (`_fits_nulls`); the one loop of input catalogs and of the
    catalogs galaxy wrote."""
    with _verified(), _detached(table):
        try:
            data = table.data
        except TypeError as exc:  # numpy's, of a memory map past the end of the file
            raise ValueError(f"the file ends inside its table ({exc})") from None
        names = table.columns.names
        for start in range(0, 0 if data is None else len(data), formats.CATALOG_BATCH):
            chunk = data[start:start + formats.CATALOG_BATCH]
            batch = _fields(chunk, names, convert)
            for name, null in _fits_nulls(table, chunk, nan_is_null).items():
                batch[name] = [None if missing else value for value, missing in zip(batch[name], null)]
            yield batch


def _cut_short(path) -> str:
    """A hint for a FITS file in which no table was found: a file cut inside a table's header reads so."""
    from galaxy.io.fits import GZIP_MAGIC

    size = Path(path).stat().st_size
    with open(path, "rb") as fh:
        if fh.read(2) == GZIP_MAGIC:  # gzip: its size says nothing of the FITS blocks inside
            return ""
    return f" (it looks cut short: its {size:,} bytes are not whole 2,880-byte FITS blocks)" if size % 2880 else ""


@contextlib.contextmanager
def _verified():
    """Inside, astropy's VerifyError (a header card it cannot read, e.g. a TFORMn it does not know; not a
    ValueError, so it had escaped every caller as a traceback) is a ValueError naming the card's problem."""
    from astropy.io.fits.verify import VerifyError

    try:
        yield
    except VerifyError as exc:
        raise ValueError(f"a header card astropy cannot read: {exc}") from None


@contextlib.contextmanager
def _detached(table):
    """Read a memory-mapped table's data inside; after it, let the data go without a copy: astropy's
    FITS_rec, as it is freed, copies into memory every column its HDU's `Column`s still point to
    (the whole table: ~100 MB for a million-row catalog, all at once at the end of a streamed read)."""
    try:
        yield table
    finally:
        for column in table.columns:
            del column.array


def _fields(chunk, names, convert) -> dict:
    """{name: convert(values)} of a FITS_rec's columns (`_field_values`), without astropy's warning
    that a null logical reads as False: `_fits_nulls` finds those nulls."""
    import warnings

    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)
        return {name: convert(_field_values(chunk, name)) for name in names}


def _field_values(chunk, name):
    """A FITS_rec column as `FITS_rec.field` gives it (scaled, logicals as bool), but text decoded from
    its stored bytes as UTF-8 (`field` decodes them as ASCII: 'é' became two replacement characters, a
    foreign catalog's path no file), trailing spaces dropped, as astropy's `Table.read` gives it."""
    import numpy as np

    values = chunk.field(name)
    if values.dtype.kind not in "SU":
        return values
    raw = np.recarray.field(chunk, name)
    return np.char.rstrip(raw if raw.dtype.kind == "U" else np.char.decode(raw, "utf-8", "replace"))


def table_hdu(hdul):
    """The HDU an input catalog's rows are read from: the first table in the file."""
    from astropy.io import fits

    from galaxy.io.fits_hdus import walk_hdus  # (a header that loops the walk back raises ValueError, not hangs)

    return next((h for h in walk_hdus(hdul) if isinstance(h, (fits.BinTableHDU, fits.TableHDU))), None)


def _fits_nulls(table, chunk, nan_is_null: bool = True) -> dict:
    """{column: bool per row} for the columns with a TNULLn: where the stored value is that
    sentinel, i.e. the cell is missing. Compared on the stored (unscaled) value, as FITS defines it.
    A float column's NaN is missing too, unless `nan_is_null` is False (a catalog galaxy wrote reads
    its NaN back as NaN)."""
    import numpy as np
    from astropy.io import fits

    nulls = {}
    for column in table.columns:
        if isinstance(table, fits.BinTableHDU) and column.format.format == "L" and column.format.repeat == 1:
            # a logical (TFORM L or 1L): its null is a zero byte
            nulls[column.name] = np.recarray.field(chunk, column.name) == 0  # (astropy reads it as False)
            continue
        if isinstance(table, fits.BinTableHDU) and column.format.format in "ED" and column.format.repeat == 1:
            if not nan_is_null:
                continue
            # a float's null is NaN (FITS allows no TNULLn there; astropy reads it as masked): missing, as
            # the same cell of a CSV, ECSV or Parquet catalog is (it had been written as the text 'nan')
            nulls[column.name] = np.isnan(np.recarray.field(chunk, column.name))
            continue
        if column.null is None or column.null == "":
            continue
        raw = np.recarray.field(chunk, column.name)  # FITS_rec.field would scale and convert it
        if raw.ndim != 1:
            continue
        if isinstance(table, fits.TableHDU):  # ASCII table: TNULLn is the field's text
            text = raw if raw.dtype.kind == "U" else np.char.decode(raw, "ascii", "replace")
            nulls[column.name] = np.char.strip(text) == str(column.null).strip()
        elif raw.dtype.kind in "iu":  # binary table: TNULLn applies to integer columns only
            nulls[column.name] = raw == int(column.null)
    return nulls


def fits_rows(path, unescape: bool):
    """The rows of a FITS catalog, memory-mapped and converted CATALOG_BATCH rows at a time (astropy's
    `Table.read` held the whole table, 418 MB for a million rows, and its rows are slow to walk).

    Values as `Table.read(mask_invalid=False)` gives them: text (UTF-8) with its trailing spaces dropped,
    a NaN stays NaN, a TNULLn sentinel (and a null logical, a zero byte) is None; TZERO-scaled integers
    (unsigned ones) as their values. One difference, in tables galaxy does not write: a scaled integer
    column's TNULLn is compared with the stored value, as the FITS standard defines it and as input
    catalogs are read (astropy's Table compares it with the scaled value)."""
    from astropy.io import fits

    as_text = unescape_ascii_text if unescape else str
    with _verified(), fits.open(path, memmap=True) as hdul:
        table = table_hdu(hdul)
        if table is None:  # as `Table.read` said it (a resumed run's message names the file and --overwrite)
            raise ValueError(f"No table found{_cut_short(path)}")
        names = table.columns.names
        for columns in _fits_batches(table, lambda values: _fits_cells(values, as_text), nan_is_null=False):
            yield from (dict(zip(names, row)) for row in zip(*(columns[name] for name in names)))


def _fits_cells(values, as_text) -> list:
    """A FITS column's values (`_field_values`) as Python values."""
    if values.dtype.kind == "U" and values.ndim == 1:
        return [as_text(value) for value in values.tolist()]
    return values.tolist()
