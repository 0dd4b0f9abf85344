"""A `--ray` run's output folder: which entries are a run's and the folder made ready under its lock
(`prepare_out_dir`), and its Parquet parts made one catalog, as one machine writes it: ids unique over
all parts in listing order, and every part with the same columns of the same kinds (`finalize_parts`)."""

from __future__ import annotations

import re
from pathlib import Path

from galaxy.catalog.formats import OUTPUT_FORMATS, RAY_BOOKKEEPING
from galaxy.catalog.fits_table import SKY_UNITS
from galaxy.catalog.metadata import galaxy_keys, parquet_metadata
from galaxy.catalog.write import arrow_type, column_kinds, UniqueIds
from galaxy.errors import UsageError
from galaxy.files import hold_lock, write_atomically


def _unified_schema(schemas):
    """The union of the parts' columns in first-seen order; a column that is text in any part is text."""
    import pyarrow as pa

    fields: dict[str, object] = {}
    for schema in schemas:
        for field in schema:
            if field.name not in fields or pa.types.is_string(field.type):
                fields[field.name] = field.type
    return pa.schema([pa.field(name, kind) for name, kind in fields.items()])


def _numbers_as_numbers(unified, parts, schemas):
    """`unified` with each text column that holds only numbers in every part (`column_kinds`, the
    rule a single machine applies to all rows at once) made int64 or float64: parts keep kept columns
    as text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    own = {"id", "path", "label"}
    text = [f.name for f in unified if pa.types.is_string(f.type) and f.name not in own]
    if not text:
        return unified

    def rows():
        for part, schema in zip(parts, schemas):
            names = [name for name in text if name in schema.names]
            for row in pq.read_table(part, columns=names).to_pylist():
                yield {name: "" if value is None else str(value) for name, value in row.items()}

    numeric = {name: arrow_type(kind) for name, kind in column_kinds(rows()) if kind != "text"}
    return pa.schema([pa.field(f.name, numeric.get(f.name, f.type)) for f in unified])


def _as_kind(column, kind):
    """A part's column in the catalog's kind: text parsed as numbers where the column is int64 or float64."""
    import pyarrow as pa

    if not pa.types.is_string(kind) and pa.types.is_string(column.type):
        number = int if pa.types.is_integer(kind) else float
        return pa.array([None if v is None or v == "" else number(v) for v in column.to_pylist()], kind)
    return column.cast(kind)


def _missing(n: int, kind):
    """A column a part lacks: NaN where numbers, "" where text, as `CatalogWriter` writes a missing
    value (astropy reads a null string as the text 'None')."""
    import pyarrow as pa

    return pa.array([""] * n, kind) if pa.types.is_string(kind) else pa.nulls(n, kind)


def _take_ids(seen: UniqueIds, rows: list[str], failed: list[tuple[str, str | None]]) -> tuple[list[str], list]:
    """The ids of one part's rows and failures, taken in the order of its shard's inputs: a failure
    at place p in the shard comes after the p inputs before it. Failures of an earlier version's part
    (no place) are left as None, for the caller to take after every part's rows."""
    at = {int(place): k for k, (_, place) in enumerate(failed) if place is not None}
    taken: list = [None] * len(failed)
    left = iter(rows)
    row_ids = []
    for place in range(len(rows) + len(at)):
        if place in at:
            taken[at[place]] = seen.take(failed[at[place]][0])
        else:
            row_ids.append(seen.take(next(left)))
    return row_ids, taken


def finalize_parts(parts: list[Path], failures: list | None = None, units: dict | None = None) -> list[list[str]]:
    """Make the parts (in listing order) one catalog, as one machine writes it; return the ids of
    each part's failures.

    Ids are made unique over all parts in listing order (stem, stem#2, ...), failed inputs
    included, as one machine takes them: `failures` gives, per part, the (id, place in its shard)
    of its inputs that failed. Those of a part an earlier version wrote (place None) take theirs
    after every part's rows, so no row an earlier merge named is renamed. Every part gets
    the same columns: a shard without FITS inputs has no ra/dec, a shard may hold a kept
    column as float64 where another holds text; missing columns become NaN or "" and text wins.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p) for p in parts]
    unified = _numbers_as_numbers(_unified_schema(schemas), parts, schemas)
    seen = UniqueIds()
    failures = failures or [[] for _ in parts]
    failed_ids = []
    for part, schema, failed in zip(parts, schemas, failures):
        table = pq.read_table(part)
        given = table.column("id").to_pylist()
        ids, taken = _take_ids(seen, given, failed)
        failed_ids.append(taken)
        changed = ids != given
        if changed:
            table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
        if changed or table.schema.remove_metadata() != unified:
            columns = [_as_kind(table[f.name], f.type) if f.name in table.column_names else _missing(len(table), f.type)
                       for f in unified]
            # astropy reads the column list of table_meta_yaml and each text column's longest value
            # (table::len::NAME, which a renamed id may pass) too: both are written for the new table
            table = pa.Table.from_arrays(columns, schema=unified)
            lengths = {f.name: pc.max(pc.utf8_length(table[f.name])).as_py() or 1
                       for f in unified if pa.types.is_string(f.type)}
            metadata = parquet_metadata(unified, galaxy_keys(schema.metadata), {**SKY_UNITS, **(units or {})}, lengths)
            table = table.replace_schema_metadata(metadata)
            changed = True
        if changed:  # the temporary name starts with a dot: never read as a part
            write_atomically(part, lambda tmp, table=table: pq.write_table(table, tmp))
    return [[seen.take(failed[k][0]) if ident is None else ident for k, ident in enumerate(taken)]
            for failed, taken in zip(failures, failed_ids)]


_PART = re.compile(r"part-\d{6}\.parquet")
_PART_TMP = re.compile(r"\.part-\d{6}\.(?:\d+\.tmp|\d+\.errors\.tmp|parquet\.\d+\.tmp)")


def _written_by_ray(entry: Path) -> bool:
    """Whether a folder entry is one a `--ray` run writes: a part (part-NNNNNN.parquet, six digits: a
    dataset's part-0.parquet is someone else's), a part being written, the bookkeeping."""
    if entry.name == RAY_BOOKKEEPING:
        return entry.is_dir()
    return (bool(_PART.fullmatch(entry.name)) or bool(_PART_TMP.fullmatch(entry.name))) and entry.is_file()


def prepare_out_dir(out_dir: Path, overwrite: bool):
    """Make (or empty, with `overwrite`) a `--ray` output folder, refusing one that is not such a folder;
    return the lock (`_galaxy/lock`) this run holds on it until the returned file is closed.

    Only what a `--ray` run writes is ever deleted: a folder holding anything else (your files, the
    inputs themselves) is refused, with or without --overwrite. Nothing is deleted before the lock is
    held, so a second run on the same folder is refused without touching the first one's parts.

    Raises:
        UsageError: the output is a file, is named like a catalog file, holds other files, or another
            run holds its lock.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"with --ray the output is a folder of Parquet parts, and {out_dir} is a file")
    if not out_dir.exists() and out_dir.suffix.lower() in OUTPUT_FORMATS:
        raise UsageError(f"with --ray the output is a folder of Parquet parts, not a {out_dir.suffix} file: {out_dir}")
    if out_dir.is_dir():
        foreign = sorted(entry.name for entry in out_dir.iterdir() if not _written_by_ray(entry))
        if foreign:
            raise UsageError(f"{out_dir} holds files a --ray run did not write (e.g. {foreign[0]}, {len(foreign)} in "
                             "all): give a new or empty folder")
    bookkeeping = out_dir / RAY_BOOKKEEPING
    bookkeeping.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(bookkeeping / "lock", f"another galaxy classify --ray is writing {out_dir}")
    for entry in out_dir.iterdir():  # a part half written when a run was killed: no run holds it now
        if _PART_TMP.fullmatch(entry.name):
            entry.unlink()
    if overwrite:
        import shutil

        for entry in out_dir.iterdir():
            if entry != bookkeeping:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        for entry in bookkeeping.iterdir():
            if entry.name != "lock":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return lock
