"""Inputs the Python API is given in memory, read as `galaxy classify` reads files and catalogs: an astropy
Table or a pandas DataFrame (its path and id columns, each cell read as a catalog's cell is), a pandas Series'
gaps, a path as bytes or os.PathLike; and the refusal of what is no path at all (pixels, an opened FITS file).
numpy only: astropy is imported where a DataFrame becomes a Table, pandas is never imported.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from galaxy.errors import UsageError


def _cell(value) -> str | None:
    """A table cell as text; None for a masked (missing) one, which astropy prints as '--'."""
    return None if value is None or value is np.ma.masked else str(value)


def table_columns(names: list, what: str) -> tuple[str, str | None]:
    """(path column, id column or None) of a Table's or DataFrame's column `names`: the first of PATH_COLUMNS /
    ID_COLUMNS present, in any case, as `galaxy classify --catalog` takes them.

    Raises:
        UsageError: no path column; two columns that name the path or id column in different cases ('PATH'
            and 'Path': neither had been taken, and the message said there was no path column).
    """
    from galaxy.catalog.formats import ID_COLUMNS, PATH_COLUMNS
    from galaxy.catalog.read import case_clash, first_present

    for candidates, kind in ((PATH_COLUMNS, "path"), (ID_COLUMNS, "id")):
        clash = case_clash(candidates, names)
        if clash:
            raise UsageError(f"the {what}'s columns {' and '.join(map(repr, clash))} both name the {kind} column "
                             f"{clash[0].casefold()!r} (read in any case): rename all but the one to use")
    column = first_present(PATH_COLUMNS, names)
    if column is None:
        raise UsageError(f"the {what} needs a path column (one of {list(PATH_COLUMNS)}); has {names}")
    return column, first_present(ID_COLUMNS, names)  # objid too, as the CLI reads a catalog


def frame_table(frame):
    """An astropy Table of a pandas DataFrame's path and id columns (`table_columns`), the only ones read.

    Raises:
        UsageError: MultiIndex columns (a raw KeyError), or the path or id column named twice (astropy's
            Table.from_pandas had raised AttributeError; the CLI refuses a catalog naming a column twice).
    """
    from astropy.table import Table

    if getattr(frame.columns, "nlevels", 1) > 1:
        raise UsageError(f"the DataFrame has MultiIndex columns {list(frame.columns)[:4]}: give it one level of names, "
                         "e.g. frame.columns = ['_'.join(map(str, c)) for c in frame.columns]")
    names = [str(name) for name in frame.columns]
    used = [name for name in table_columns(names, "DataFrame") if name is not None]
    twice = next((name for name in used if names.count(name) > 1), None)
    if twice is not None:
        raise UsageError(f"the DataFrame names column {twice!r} {names.count(twice)} times: rename all but the one "
                         "to use")
    picked = frame.iloc[:, [names.index(name) for name in used]]
    picked.columns = used  # (as text: a column named by a number reads as its digits)
    return Table.from_pandas(picked)


def missing_cell(value) -> bool:
    """Whether a path or id cell is a gap: None, masked, a float NaN, or pandas' NA or NaT (an object or string
    column's gap, which had been the file '<NA>'). pandas is optional: where it is not imported, no value is its."""
    if value is None or value is np.ma.masked:
        return True
    if isinstance(value, (float, np.floating)):
        return value != value
    pandas = sys.modules.get("pandas")
    return pandas is not None and (value is pandas.NA or value is pandas.NaT)


def stored_cells(column) -> list:
    """A table column's cells as stored, None where masked: astropy gives a bytes column's cells decoded as UTF-8
    with replacement characters (a file name that is not UTF-8 then named no file), so they are read from its
    data."""
    values = getattr(column, "data", column)  # (an astropy Column's values; a MaskedArray where masked)
    return [None if masked or missing_cell(value) else value
            for value, masked in zip(np.ma.getdata(values).tolist(), np.ma.getmaskarray(values).tolist())]


def id_cells(column, name: str) -> list:
    """An id column's cells as text. A floating-point column (what pandas makes of an integer column with a
    missing value) gives its whole numbers as integers; one at or past the first its dtype cannot tell from
    its neighbour (2**53, float32's 2**24) may have lost digits (SDSS objids are ~6e17), so it is refused
    rather than written as '5.877246481808755e+17'.

    Raises:
        UsageError: a whole-number float id at or past that limit.
    """
    from galaxy.catalog.read import cell_id

    values = np.ma.asarray(column)
    if values.dtype.kind != "f":  # read as `galaxy classify --catalog` reads an id (spaces around it dropped)
        return [cell_id(i) for i in stored_cells(column)]
    exact = 2 ** (np.finfo(values.dtype).nmant + 1)  # from here a whole number may be another rounded (float32: 2**24)
    cells = []
    for value in column:
        if missing_cell(value) or not np.isfinite(value):  # a gap takes the file's stem
            cells.append(None if missing_cell(value) else _cell(value))
        elif float(value).is_integer():
            if abs(value) >= exact:  # 2**53 itself may be 2**53 + 1 rounded: another galaxy's id
                raise UsageError(f"id column {name!r} holds floating-point numbers such as {float(value)!r}, past "
                                 f"{exact:,}, which may have lost digits (pandas makes an integer column with a "
                                 f"missing value float): read it as text, e.g. pd.read_csv(..., "
                                 f"dtype={{{name!r}: str}})")
            cells.append(str(int(value)))
        else:
            cells.append(_cell(value))
    return cells


def holds_pixels(value) -> bool:
    """Whether `value` is an array of numbers (a numpy array, a torch tensor, a PIL image): pixels, never a
    path. An array of text (numpy str or bytes, a pandas Series of str: dtype kind U, S or O) may hold paths."""
    if not (hasattr(value, "__array__") or hasattr(value, "__array_interface__")):
        return False
    if hasattr(value, "colnames") or hasattr(value, "columns"):  # a Table, a Row, a DataFrame: a path column
        return False
    return getattr(getattr(value, "dtype", None), "kind", None) not in ("U", "S", "O")  # (numpy's, pandas' dtypes)


def not_paths(value, what: str = "inputs") -> UsageError | None:
    """The refusal of `classify` inputs that are no paths and no table: pixels (each row of an image had been
    taken for a file name: N failures, each naming a printed array, "File name too long"), an opened FITS file
    or HDU (a raw TypeError, or its HDUs read as paths); None for anything else."""
    kind = type(value).__name__
    if type(value).__module__.startswith("astropy.io.fits"):  # HDUList, ImageHDU, BinTableHDU, FITS_rec
        return UsageError(f"{what} of type {kind} (an opened FITS file's contents): classify reads files; pass the "
                          "file's path (load_model(hdu=...) picks the HDU), or the pixels as (H, W, 3) RGB to "
                          "classify_arrays")
    if holds_pixels(value):
        shape = getattr(value, "shape", None)
        return UsageError(f"{what} of type {kind}{f' {tuple(shape)}' if shape else ''} holds numbers, not paths: "
                          "for images already in memory use classify_arrays(images)")
    return None


def path_text(value) -> str:
    """A path as str: a bytes name (`os.listdir(b".")`, how non-UTF-8 names are listed) or an os.PathLike
    (Path, os.DirEntry) as Python holds file names, undecodable bytes as surrogate escapes (`str()` of bytes
    had named "b'x.jpeg'", a bare bytes been read as a sequence of byte values)."""
    refusal = not_paths(value, "an input")
    if refusal is not None:
        raise refusal
    try:
        return os.fsdecode(os.fspath(value))
    except TypeError:
        raise UsageError(f"input {value!r} of type {type(value).__name__}: expected a path (str, bytes or "
                         "os.PathLike)") from None
