"""List inputs lazily: files, directories (recursive) and catalogs, never one big list."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from galaxy.catalog import read_input_catalog
from galaxy.errors import UsageError
from galaxy.images import IMAGE_SUFFIXES, is_image_path


@dataclass(frozen=True)
class Item:
    """One input: its path, its id when a catalog gave one, and the catalog columns kept for it."""

    path: str
    id: str | None = None
    columns: dict = field(default_factory=dict)


def _walk(root: str):
    """Image files under root, depth first, each folder's entries sorted by name.

    Sorted, so a run lists the same folder in the same order on every file system and every
    time: which of two files with the same stem becomes `stem#2` does not depend on the disk.
    Only one folder's names (and whether each is a folder) are held at a time, ~100 bytes each.
    """
    try:
        with os.scandir(root) as entries:
            listed = sorted((entry.name, _is_dir(entry)) for entry in entries)
    except OSError:
        return
    for name, is_dir in listed:
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


def count_inputs(inputs=(), catalog=None, path_column=None) -> int:
    """How many items `iter_inputs` yields for these inputs: a second listing that builds no items,
    for a progress total."""
    n = sum(sum(1 for _ in _walk(value)) if os.path.isdir(value) else 1 for value in inputs)
    if catalog:
        n += sum(1 for _ in read_input_catalog(catalog, path_column))
    return n


def require_inputs(inputs=(), catalog=None, path_column=None, id_column=None, keep_columns=()) -> None:
    """Refuse inputs that name no image at all, before a model is loaded or an output opened.

    Lists only up to the first image (a catalog: its first row, which also checks its columns).

    Raises:
        UsageError: no inputs, an input that does not exist, or no image among them.
    """
    if not inputs and not catalog:
        raise UsageError("no inputs: give image files, folders, or --catalog FILE")
    missing = [value for value in inputs if not os.path.lexists(value)]
    if missing:
        raise UsageError(f"input {missing[0]} does not exist" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if next(iter_inputs(inputs, catalog, path_column, id_column, keep_columns), None) is None:
        named = ", ".join([*map(str, inputs), *([f"catalog {catalog}"] if catalog else [])])
        raise UsageError(f"no images found in {named}: folders are searched recursively for files ending in "
                         f"{' '.join(IMAGE_SUFFIXES)}, and a catalog needs at least one row")
