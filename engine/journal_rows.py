"""The rows of a classify run's journal (`engine.journal`): chunk files written whole or not at all and
read back checked, a finished output's rows in the same form, and how a done row is matched to an input
of the rerun (the file's real path, the id its listing gave).

A row is `[id, path, p_class..., columns JSON]`, all strings, as `Journal.add` writes it.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
from pathlib import Path

from galaxy.catalog.formats import catalog_columns, output_format, probability_column
from galaxy.catalog.written import read_catalog_rows
from galaxy.catalog.text import cell_text
from galaxy.errors import UsageError
from galaxy.files import ends_its_line, write_atomically


def _probability_text(value) -> str:
    """A catalog's probability cell as `add` writes it; a cell that is not a number as its text (None: a
    cell cut short), which `row_damage` then names, where float() had raised a traceback."""
    try:
        return f"{float(value):.6f}"
    except (TypeError, ValueError):
        return str(value)


def write_chunk(folder: Path, chunks: list, rows) -> None:
    """Write `rows` as the next chunk of the journal in `folder`, whole or not at all, and append it to
    `chunks` (the journal's chunk files, in commit order) once it is there."""
    # numbered after the last one, not by count: a chunk must never be written over
    number = int(chunks[-1].stem.split("-")[1]) + 1 if chunks else 0
    final = folder / f"chunk-{number:06d}.csv"

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)  # (rows may be a generator: an imported catalog's, row by row)
            fh.flush()
            os.fsync(fh.fileno())

    try:
        write_atomically(final, write)
        if not final.stat().st_size:  # an imported catalog of no rows: no chunk
            final.unlink()
    finally:  # renamed into place, then interrupted: its rows are committed all the same
        if final.exists() and final not in chunks:
            chunks.append(final)


def chunk_rows(chunks: list, k: int, check: bool = False):
    """The rows of the chunk files `chunks`, in order, for `k` classes. With `check` each row is checked
    to be as `add` wrote it.

    Raises:
        UsageError: with `check`, a chunk was changed after it was written (cut short, edited): named,
            with the line.
    """
    for chunk in chunks:
        with open(chunk, newline="", encoding="utf-8") as fh:
            if not check:
                yield from csv.reader(fh)
                continue
            if not ends_its_line(chunk):  # a chunk is written whole, each row ending its line
                _damaged(chunk, sum(block.count("\n") for block in iter(lambda: fh.read(2**20), "")) + 1,
                         "its last line is cut short")
            for line, row in enumerate(csv.reader(fh), 1):  # row by row (an imported catalog's chunk holds
                reason = row_damage(row, k)  # every row it had: read whole, it was in memory twice)
                if reason:
                    _damaged(chunk, line, reason)
                yield row


def output_rows(output: Path, fmt: str | None, classes: tuple, read_output):
    """A finished output's rows in the journal's form, each checked as it is read (the list of every
    row, then a chunk read whole, had cost ~1.1 KB a row at the peak of a resume: 330 MB for 300,000
    rows of a FITS catalog). `read_output(read)`: `read()` of the output, its failure a UsageError.

    Raises:
        UsageError: a row was changed after it was written, named with its number.
    """
    own = set(catalog_columns(classes))
    cut_short = (output_format(output, fmt) in ("csv", "ecsv")
                 and not read_output(lambda: ends_its_line(output)))  # (gone since the run began)

    def checked():
        rows = read_output(lambda: read_catalog_rows(output, fmt))
        n, row = 0, None
        while True:
            following = read_output(lambda: next(rows, None))
            if row is not None:  # a value cut inside a kept column would pass as another: the line end tells
                last = following is None
                reason = "its last line is cut short" if cut_short and last else row_damage(row, len(classes))
                if reason:
                    raise UsageError(f"{output}, row {n}, was changed after it was written ({reason}): "
                                     "restore the catalog, or use --overwrite to start over")
                yield row
            if following is None:
                return
            n += 1
            row = [following.get("id"), following.get("path"),  # (a cell cut short or missing: None)
                   *(_probability_text(following.get(probability_column(c))) for c in classes),
                   json.dumps({k: cell_text(v) for k, v in following.items() if k not in own})]  # blanks too

    return checked()


def row_damage(row, k: int) -> str | None:
    """Why a committed row of `k` classes cannot be what `add` wrote, or None."""
    if len(row) not in (2 + k, 3 + k):  # id, path, a probability per class, the columns (older: none)
        return f"{len(row)} fields, not {3 + k}"
    if row[0] is None or row[1] is None:  # a catalog's cell cut short, or a null
        return "it has no id" if row[0] is None else "it has no path"
    try:
        probabilities = [float(p) for p in row[2:2 + k]]
        # ("{}", a row without kept columns, is one: json.loads of every row was a tenth of a resume's open)
        if len(row) == 3 + k and row[2 + k] != "{}" and not isinstance(json.loads(row[2 + k]), dict):
            return "its columns are not a JSON object"
    except ValueError as exc:
        return str(exc)
    if not all(0 <= p <= 1 for p in probabilities) or abs(sum(probabilities) - 1) > k * 1e-6:
        return f"its probabilities ({', '.join(row[2:2 + k])}) do not sum to 1"
    return None


def _damaged(chunk: Path, line: int, reason: str):
    raise UsageError(f"{chunk}, line {line}, was changed after this run wrote it ({reason}): delete that file to "
                     f"classify its rows again, or use --overwrite to start over")


def listed_id(ident: str) -> str:
    """The id an input was listed with, from the id its row got: without the one `#N` (N >= 2)
    `UniqueIds` adds to a repeat (an id that ends so as listed loses it too, on both sides of `is_done`'s
    comparison, so it still matches)."""
    return re.sub(r"#[1-9]\d*$", "", ident)


def path_key(path: str, base: str, written, folders: dict | None = None) -> str:
    """How the journal compares input paths: the file itself, whatever the spelling (relative to
    `base`, the working directory the path was given in, or absolute; through symbolic links), in
    the form the output gives back (`written`: `galaxy.catalog.text.text_as_written`). A
    rerun naming the folder by its absolute path or by a link to it wrote every row a second time;
    and with the ASCII form for every format, a file named `ü.jpeg` and one named `\\xfc.jpeg` were
    one file to a rerun (one lost, the other written twice): FITS alone keeps that ambiguity."""
    return written(real_path(os.path.join(base, path), folders))


def input_key(path: str, base: str, written, folders: dict | None = None, bands: int = 0) -> str:
    """How the journal compares a done row's input (its path as the row gives it) with a rerun's (`band_key`
    of its band files, else `path_key`). In a run of `bands` files per galaxy (`--band-columns`), a path that
    is not one file is those files joined by ';' (`engine.listing.Item`), each keyed on its own: the joined
    text as one path had let a '..' in one name cancel the name before it (a galaxy whose g file changed was
    taken as done), and a catalog named another way wrote every row twice."""
    if bands < 2 or ";" not in path or os.path.lexists(os.path.join(base, path)):
        return path_key(path, base, written, folders)
    return band_key(band_files(path, bands, base), base, written, folders)


def band_key(files, base: str, written, folders: dict | None = None) -> str:
    """The key of one galaxy's band files: their `path_key`s joined by NUL, which no file name holds (so
    it is never one file's key)."""
    return "\0".join(path_key(file, base, written, folders) for file in files)


def band_files(path: str, bands: int, base: str) -> list[str]:
    """The `bands` files a row's path joins with ';'. A name holding ';' itself is told by which way of
    cutting names files that exist (from `base`); none does: cut at the first semicolons."""
    parts = path.split(";")
    if len(parts) > bands:
        for cuts in itertools.combinations(range(1, len(parts)), bands - 1):
            files = [";".join(parts[i:j]) for i, j in zip((0, *cuts), (*cuts, len(parts)))]
            if all(os.path.lexists(os.path.join(base, file)) for file in files):
                return files
    return [*parts[:bands - 1], ";".join(parts[bands - 1:])]


def real_path(path: str, folders: dict | None) -> str:
    """`os.path.realpath(path)`, with the real path of each folder looked up once in `folders` (one
    journal's, held for one run): a file that is no link is its folder's real path and its name, and
    resolving every component of every done row, twice, had been minutes before a resume of millions
    started (~15 us a file here)."""
    head, tail = os.path.split(path)
    if folders is None or tail in ("", ".", "..") or os.path.islink(path):
        return os.path.realpath(path)
    if head not in folders:
        folders[head] = os.path.realpath(head or ".")
    return os.path.join(folders[head], tail)
