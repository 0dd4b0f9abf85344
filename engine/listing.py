"""List inputs lazily: files, directories (recursive) and catalogs, never one big list."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from galaxy.catalog import read_input_catalog
from galaxy.errors import UsageError
from galaxy.images import is_image_path


@dataclass(frozen=True)
class Item:
    """One input: its path, its id when a catalog gave one, and the catalog columns kept for it."""

    path: str
    id: str | None = None
    columns: dict = field(default_factory=dict)


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


def iter_inputs(inputs=(), catalog=None, path_column=None, id_column=None, keep_columns=()):
    """Yield `Item`s for every image named by `inputs` (files or folders) and `catalog`.

    Folders are walked recursively for files with an image suffix (symlinked folders are
    not followed, so loops cannot happen). A named file is taken whatever its suffix.
    `keep_columns` of the catalog travel with each of its items (as text) to the output.

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
        for path, ident, columns in read_input_catalog(catalog, path_column, id_column, keep_columns):
            yield Item(path, ident, columns)
