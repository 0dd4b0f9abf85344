"""List inputs lazily: files, directories (recursive) and catalogs, never one big list."""

from __future__ import annotations

import os
import dataclasses
from dataclasses import dataclass, field

from galaxy.catalog.read import input_catalog_columns, read_input_catalog, resolved_columns
from galaxy.errors import UsageError
from galaxy.catalog.formats import check_kept_columns, IMAGE_SUFFIXES
from galaxy.io.images import is_hidden, is_image_path


@dataclass(frozen=True)
class Item:
    """One input: its path, its id when a catalog gave one, and the catalog columns kept for it.

    A galaxy stored as one FITS file per band has `bands` ((band, path), ...) and the band
    paths joined by ";" as its `path` (what the catalog's path column shows).
    """

    path: str
    id: str | None = None
    columns: dict = field(default_factory=dict)
    bands: tuple[tuple[str, str], ...] = ()


def _walk(root: str):
    """Image files under root, depth first, each folder's entries sorted by name (hidden ones, whose
    names start with a dot, left out), and each folder
    that cannot be listed (its reader then says why: an unreadable sub-folder's images were left out
    without a word).

    Sorted, so a run lists the same folder in the same order on every file system and every
    time: which of two files with the same stem becomes `stem#2` does not depend on the disk.
    Only one folder's names (and whether each is a folder) are held at a time, ~100 bytes each.
    """
    try:
        with os.scandir(root) as entries:
            listed = sorted((entry.name, _is_dir(entry)) for entry in entries)
    except OSError:  # listed as an input of its own, so the errors file says why its images are missing
        yield root
        return
    for name, is_dir in listed:
        if is_hidden(name):
            continue
        path = os.path.join(root, name)
        if is_dir:
            yield from _walk(path)
        elif is_image_path(name):
            yield path


def _is_dir(entry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def parse_band_columns(value: str | None) -> dict[str, str] | None:
    """`--band-columns g=g_path,r=r_path,i=i_path` -> {"g": "g_path", ...}; None for None.

    Raises:
        UsageError: not band=column pairs, fewer than two bands, a band that is not a filter name
            (its name decides which colour it shows), or a band or column named twice.
    """
    from galaxy.io.bands import WAVELENGTH_NM, band_name

    if not value:
        return None
    pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs) or len(pairs) < 2:
        raise UsageError(f"--band-columns wants band=column pairs for 2 or 3 bands, e.g. g=g_path,r=r_path,i=i_path; "
                         f"got {value!r}")
    bands, columns = [band.strip() for band, _ in pairs], [column.strip() for _, column in pairs]
    unknown = [band for band in bands if band_name(band) is None]
    if unknown:
        raise UsageError(f"--band-columns: {unknown[0]!r} is not a band name (one of {', '.join(WAVELENGTH_NM)}, or "
                         "e.g. 'SDSS r'): the names decide which band shows as red, green and blue")
    for what, names in (("band", [band_name(b) for b in bands]), ("column", columns)):
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise UsageError(f"--band-columns names the {what} {twice!r} twice: {value!r}")
    return dict(zip(bands, columns))


def iter_inputs(inputs=(), catalog=None, path_column=None, id_column=None, keep_columns=(), band_columns=None):
    """Yield `Item`s for every image named by `inputs` (files or folders) and `catalog`.

    Folders are walked recursively for files with an image suffix (symlinked folders are
    not followed, so loops cannot happen; hidden files and folders are left out). A named file is taken whatever its suffix.
    `keep_columns` of the catalog travel with each of its items (as text) to the output.
    `band_columns` ({band: column}) reads one galaxy per row from one FITS file per band.

    Raises:
        UsageError: an input does not exist.
    """
    for value in inputs:
        if not os.path.lexists(value):
            raise UsageError(f"input {value} does not exist")
        if os.path.isdir(value):
            for path in _walk(value):
                yield Item(path)
        else:
            yield Item(str(value))
    if catalog:
        for where, ident, columns in read_input_catalog(catalog, path_column, id_column, keep_columns, band_columns):
            if isinstance(where, dict):
                yield Item(";".join(where.values()), ident, columns, tuple(where.items()))
            else:
                yield Item(where, ident, columns)


def count_inputs(inputs=(), catalog=None, path_column=None, band_columns=None) -> int:
    """How many items `iter_inputs` yields for these inputs: a second listing that builds no items,
    for a progress total."""
    n = sum(sum(1 for _ in _walk(value)) if os.path.isdir(value) else 1 for value in inputs)
    if catalog:
        n += sum(1 for _ in read_input_catalog(catalog, path_column, band_columns=band_columns))
    return n


def with_catalog_columns(config, band_columns=None) -> tuple:
    """(`config` (a ClassifyConfig) naming the --catalog columns it reads, the defaults resolved (`file`
    where no --path-column is given and the catalog has one): what the run records and a rerun compares,
    so naming the column the default finds is no change; the columns read when none is named
    ({"path_column", "id_column"}; {} without a catalog): what a fingerprint that left them out, or
    recorded None (a --ray folder), read by). The catalog's header is read once for both."""
    if not config.catalog:
        return config, {}
    columns = input_catalog_columns(config.catalog)
    path_column, id_column = resolved_columns(config.catalog, columns, config.path_column, config.id_column,
                                              band_columns)
    try:
        defaults = resolved_columns(config.catalog, columns, None, None, band_columns)
    except UsageError:  # none of PATH_COLUMNS: the run names its path column, and no default exists
        defaults = None, resolved_columns(config.catalog, columns, path_column, None, band_columns)[1]
    return (dataclasses.replace(config, path_column=path_column, id_column=id_column),
            dict(zip(("path_column", "id_column"), defaults)))


def require_inputs(inputs=(), catalog=None, path_column=None, id_column=None, keep_columns=(),
                   band_columns=None, output_format: str | None = None) -> None:
    """Refuse inputs that name no image at all, and kept columns the output cannot hold
    (`check_kept_columns`), before a model is loaded or an output opened.

    Lists only up to the first image (a catalog: its first row, which also checks its columns).
    `output_format`: the catalog's format where known ("fits" needs ASCII column names).

    Raises:
        UsageError: no inputs, an input that does not exist, no image among them, kept columns
            without a catalog, or a kept column that clashes with an output column or cannot be
            named in the format.
    """
    if not inputs and not catalog:
        raise UsageError("no inputs: give image files, folders, or --catalog FILE")
    if keep_columns and not catalog:  # they would be empty in every row
        raise UsageError(f"--keep-columns {','.join(keep_columns)}: kept columns are copied from the rows of "
                         "--catalog FILE, and no --catalog is given")
    check_kept_columns(keep_columns, output_format)
    missing = [value for value in inputs if not os.path.lexists(value)]
    if missing:
        raise UsageError(f"input {missing[0]} does not exist" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if next(iter_inputs(inputs, catalog, path_column, id_column, keep_columns, band_columns), None) is None:
        named = ", ".join([*map(str, inputs), *([f"catalog {catalog}"] if catalog else [])])
        raise UsageError(f"no images found in {named}: folders are searched recursively for files ending in "
                         f"{' '.join(IMAGE_SUFFIXES)}, and a catalog needs at least one row")
