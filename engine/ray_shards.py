"""A `--ray` run's shards: the inputs listed once, lazily, into Parquet files of `shard_size` rows
(path and id as bytes, the kept columns as JSON, a galaxy's band files), which every rerun of the
run reads back as they are (`write_shards`), and a shard's inputs as the listing gave them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.listing import parse_band_columns
from galaxy.catalog.formats import RAY_BOOKKEEPING
from galaxy.errors import UsageError
from galaxy.files import write_atomically

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    index: int
    path: str


def write_shards(config, out_dir: Path, shard_size: int) -> list[Shard]:
    """Stream the inputs into shard files of `shard_size` rows (path, id, columns JSON, band files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.listing import iter_inputs

    folder = out_dir / RAY_BOOKKEEPING / "shards"

    def listing():
        return iter_inputs(config.inputs, config.catalog, config.path_column, config.id_column, config.keep_columns,
                           parse_band_columns(config.band_columns))

    record = (folder / "_complete").read_text().split() if (folder / "_complete").exists() else []
    if record and record[0].isdigit():  # a rerun: the same shards, so finished parts stay valid
        if len(record) == 3:  # (shards, inputs, digest); a folder from before records the shard count only
            count, digest = _listing_record(listing())
            if [str(count), digest] != record[1:]:
                raise UsageError(f"the inputs changed since {out_dir} was started ({record[1]} listed then, {count} "
                                 "now): rerun with --overwrite, or write another folder")
        # the shards the record counts, not those a glob finds: a listing killed before its record leaves more
        # (of other inputs), which a version that globbed classified into rows of no input of this run
        _remove_shards_from(out_dir, int(record[0]))
        return [Shard(index, str(shard_path(out_dir, index))) for index in range(int(record[0]))]
    # a fresh listing: whatever shards, parts and errors a listing killed before its record left are of no
    # shard of this one (the inputs may have been corrected since: 33 stale shards had stayed beside 2 new)
    _remove_shards_from(out_dir, 0)
    folder.mkdir(parents=True, exist_ok=True)
    shards, rows = [], []

    def flush():
        path = shard_path(out_dir, len(shards))
        # paths and ids as bytes: a file name need not be UTF-8 (one such name ended the whole run)
        table = pa.table({"path": pa.array([os.fsencode(r[0]) for r in rows], pa.binary()),
                          "id": pa.array([None if r[1] is None else os.fsencode(r[1]) for r in rows], pa.binary()),
                          "columns": [r[2] for r in rows],
                          "bands": pa.array([[os.fsencode(p) for _, p in r[3]] for r in rows], pa.list_(pa.binary())),
                          "band_names": [[band for band, _ in r[3]] for r in rows]})
        pq.write_table(table, path)
        shards.append(Shard(len(shards), str(path)))
        rows.clear()

    def add(item):  # a galaxy of one file per band keeps its (band, path) pairs
        rows.append((item.path, item.id, json.dumps(item.columns), item.bands))
        if len(rows) == shard_size:
            flush()

    count, digest = _listing_record(listing(), add)
    if rows:
        flush()
    # whole or not at all: a record cut short by a kill lists again
    write_atomically(folder / "_complete", lambda tmp: tmp.write_text(f"{len(shards)} {count} {digest}\n"))
    return shards


def shard_path(out_dir: Path, index: int) -> Path:
    return out_dir / RAY_BOOKKEEPING / "shards" / f"shard-{index:06d}.parquet"


def _remove_shards_from(out_dir: Path, first: int) -> None:
    """Remove the shard files numbered `first` and up, and the parts and errors of those shards: what a
    listing killed before its record left, of inputs that need not be this run's. A part is read as rows
    of the catalog (`pyarrow.parquet.read_table(OUT)` reads every part), so none may outlive its shard."""
    numbered = re.compile(r"(?:shard|part)-(\d{6})\.")  # shard-N.parquet, part-N.parquet, part-N.errors[.next].csv
    stale = [entry for folder in (out_dir, out_dir / RAY_BOOKKEEPING, out_dir / RAY_BOOKKEEPING / "shards")
             if folder.is_dir() for entry in folder.iterdir()
             if (match := numbered.match(entry.name)) and int(match.group(1)) >= first and entry.is_file()]
    for entry in stale:
        entry.unlink()
    if stale:
        log.info("removed %d files of shards a listing that did not finish left in %s", len(stale), out_dir)


def shard_length(shard: Shard) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(shard.path).metadata.num_rows


def _text(value):
    """A shard's path or id as the listing gave it (bytes since file names need not be UTF-8; text
    in the shards of an earlier version)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _listing_record(items, each=None) -> tuple[int, str]:
    """(count, sha256) of a listing of inputs, what a rerun's inputs must match; `each(item)` is
    called on every item on the way (the first run writes the shards in the same pass)."""
    digest, count = hashlib.sha256(), 0
    for item in items:
        digest.update(f"{item.path}\0{item.id}\0{json.dumps(item.columns)}\n".encode("utf-8", "surrogateescape"))
        count += 1
        if each is not None:
            each(item)
    return count, digest.hexdigest()


def shard_items(shard_path: str) -> list:
    """A shard's inputs, in listing order."""
    import pyarrow.parquet as pq

    from engine.listing import Item

    table = pq.read_table(shard_path).to_pydict()
    n = len(table["path"])
    bands = [tuple(zip(names, map(_text, paths))) for names, paths in
             zip(table.get("band_names", [[]] * n), table.get("bands", [[]] * n))]  # shards before them had none
    return [Item(_text(p), _text(i), json.loads(c), b)
            for p, i, c, b in zip(table["path"], table["id"], table["columns"], bands)]
