"""List inputs lazily: files, directories (recursive) and catalogs, never one big list."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from galaxy.catalog import read_input_catalog
from galaxy.errors import UsageError
from galaxy.images import is_image_path


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
    """Image files under root, depth first, in directory order.

    Entries are streamed from `os.scandir`, never collected, so a folder of millions of files
    costs no memory; the order is the file system's (ids, not positions, identify rows).
    """
    try:
        entries = os.scandir(root)
    except OSError:
        return
    with entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                yield from _walk(entry.path)
            elif is_image_path(entry.name):
                yield entry.path


def parse_band_columns(value: str | None) -> dict[str, str] | None:
    """`--band-columns g=g_path,r=r_path,i=i_path` -> {"g": "g_path", ...}; None for None.

    Raises:
        UsageError: not band=column pairs, or fewer than two bands.
    """
    if not value:
        return None
    pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs) or len(pairs) < 2:
        raise UsageError(f"--band-columns wants band=column pairs for 2 or 3 bands, e.g. g=g_path,r=r_path,i=i_path; "
                         f"got {value!r}")
    return {band.strip(): column.strip() for band, column in pairs}


def iter_inputs(inputs=(), catalog=None, path_column=None, id_column=None, keep_columns=(), band_columns=None):
    """Yield `Item`s for every image named by `inputs` (files or folders) and `catalog`.

    Folders are walked recursively for files with an image suffix (symlinked folders are
    not followed, so loops cannot happen). A named file is taken whatever its suffix.
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
