"""A `--ray` run's output folder: which entries are a run's and the folder made ready under its lock
(`prepare_out_dir`); each part's files and errors, and a rerun's retried inputs put back in their part
(`failed_places`, `merge_retried`, `settle_retry`); and the Parquet parts made one catalog, as one
machine writes it: ids unique over all parts in listing order, and every part with the same columns
of the same kinds (`finalize_parts`)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from galaxy.catalog.formats import FITS_COLUMNS, OUTPUT_FORMATS, RAY_BOOKKEEPING, VALUE_KINDS
from galaxy.catalog.fits_table import sky_units
from galaxy.catalog.metadata import galaxy_keys, kept_columns, parquet_metadata
from galaxy.catalog.text import cell_text
from galaxy.catalog.write import arrow_type, column_kinds, UniqueIds
from galaxy.errors import UsageError
from galaxy.files import hold_lock, write_atomically
from galaxy.io.images import stem_id


def _unified_schema(schemas):
    """The union of the parts' columns in first-seen order; a column that is text in any part is text.
    Each keeps the field metadata (its description) of the first part that gives it some: a part an
    earlier version wrote has none."""
    import pyarrow as pa

    fields: dict[str, object] = {}
    metadata: dict[str, dict] = {}
    for schema in schemas:
        for field in schema:
            if field.name not in fields or pa.types.is_string(field.type):
                fields[field.name] = field.type
            if field.metadata and field.name not in metadata:
                metadata[field.name] = field.metadata
    return pa.schema([pa.field(name, kind, metadata=metadata.get(name)) for name, kind in fields.items()])


def _numbers_as_numbers(unified, parts, schemas):
    """`unified` with each text column that holds only numbers (or only True and False) in every part
    (`column_kinds`, the rule a single machine applies to all rows at once) made int64, float64 or bool:
    parts keep kept columns as text."""
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
    # the FITS headers' ra/dec (not kept columns of those names) and masked_fraction are numbers even where no
    # input gave one, as one machine writes them (`describe_rows`): a run whose FITS files had no position made
    # them text columns of "" under --ray
    kept = kept_columns(galaxy_keys(schemas[0].metadata)) if schemas else ()
    for name in FITS_COLUMNS:
        if name in text and name not in kept:
            numeric.setdefault(name, pa.float64())
    return pa.schema([pa.field(f.name, numeric.get(f.name, f.type), metadata=f.metadata) for f in unified])


def _as_kind(column, kind):
    """A part's column in the catalog's kind: text parsed as numbers where the column is int64 or float64,
    as True or False where it is bool."""
    import pyarrow as pa

    if not pa.types.is_string(kind) and pa.types.is_string(column.type):
        parse = VALUE_KINDS["bool" if pa.types.is_boolean(kind) else "int" if pa.types.is_integer(kind) else "float"]
        return pa.array([None if v is None or v == "" else parse(v) for v in column.to_pylist()], kind)
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


def finalize_parts(parts: list[Path], failures: list | None = None, units: dict | None = None,
                   kept_texts=None) -> list[list[str]]:
    """Make the parts (in listing order) one catalog, as one machine writes it; return the ids of
    each part's failures.

    Ids are made unique over all parts in listing order (stem, stem#2, ...), failed inputs
    included, as one machine takes them: `failures` gives, per part, the (id, place in its shard)
    of its inputs that failed. Those of a part an earlier version wrote (place None) take theirs
    after every part's rows, so no row an earlier merge named is renamed. Every part gets
    the same columns: a shard without FITS inputs has no ra/dec, a shard may hold a kept
    column as float64 where another holds text; missing columns become NaN or "" and text wins.
    A column a finalised part holds as numbers or bool that is text now (a retried input brought a
    value that is none) takes the catalog's own spelling of each value: `kept_texts(k)` gives the
    kept columns of part k's rows as their shard holds them (None where it cannot tell).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p) for p in parts]
    unified = _numbers_as_numbers(_unified_schema(schemas), parts, schemas)
    seen = UniqueIds()
    failures = failures or [[] for _ in parts]
    failed_ids = []
    for k, (part, schema, failed) in enumerate(zip(parts, schemas, failures)):
        table = pq.read_table(part)
        given = table.column("id").to_pylist()
        ids, taken = _take_ids(seen, given, failed)
        failed_ids.append(taken)
        changed = ids != given
        if changed:
            table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
        # field metadata compared too: a part an earlier version wrote gets the descriptions the others give
        if changed or not table.schema.remove_metadata().equals(unified, check_metadata=True):
            columns = _conformed(table, unified, lambda k=k: kept_texts(k) if kept_texts is not None else None)
            # astropy reads the column list of table_meta_yaml (with the fields' descriptions) and each
            # text column's longest value (table::len::NAME, which a renamed id may pass) too: both are
            # written for the new table
            table = pa.Table.from_arrays(columns, schema=unified)
            table = _with_metadata(table, schema, units)
            changed = True
        if changed:  # the temporary name starts with a dot: never read as a part
            write_atomically(part, lambda tmp, table=table: pq.write_table(table, tmp))
    return [[seen.take(failed[k][0]) if ident is None else ident for k, ident in enumerate(taken)]
            for failed, taken in zip(failures, failed_ids)]


def _conformed(table, unified, kept_texts) -> list:
    """`table`'s columns in the kinds of `unified`, a missing one NaN or "". A column the part holds as numbers
    or bool (a finalised part) that is text in `unified` gets the catalog's spelling of each value,
    `kept_texts()` (the rows' kept columns as their shard holds them, read once and only then), else each
    value as Python writes it: pyarrow's cast re-spelled "0.10" as "0.1", 1.0 as "1", False as "false"."""
    import functools

    import pyarrow as pa

    kept_texts = functools.cache(kept_texts)
    columns = []
    for f in unified:
        if f.name not in table.column_names:
            columns.append(_missing(len(table), f.type))
        elif pa.types.is_string(f.type) and not pa.types.is_string(table[f.name].type):
            rows = kept_texts()
            if rows is not None and len(rows) == len(table) and all(f.name in row for row in rows):
                values = [cell_text(row[f.name]) for row in rows]
            else:
                values = [cell_text(v) for v in table[f.name].to_pylist()]
            columns.append(pa.array(values, pa.string()))
        else:
            columns.append(_as_kind(table[f.name], f.type))
    return columns


def merge_retried(part, retried, items: list, failed: list[int], recovered: list[int], units: dict | None = None):
    """A shard's part with the rows of its retried inputs in their places: the new part.

    Args:
        part: the part's table (pyarrow), one row per input of the shard that had not failed, in order.
        retried: the rows of the retried inputs that succeeded now, in order.
        items: the shard's inputs (`engine.listing.Item`, their kept columns as the catalog gives them).
        failed: the places in the shard of the inputs retried (those that had failed).
        recovered: the places of the rows of `retried`.
        units: kept columns' units, as the parts record them.

    Returns:
        The merged table, with the catalog's columns of both, every column after `label` text as in a
        part just written (`_as_written`: a finalised part holds them as numbers, which cast back
        to text would re-spell "0.10" and turn 1.0 into "1"), and the metadata of `retried`, the run
        that wrote it. Ids are left as each table has them: `finalize_parts` takes ids and kinds again
        over all parts in listing order, so a recovered input gets the id a run without its failure gives.
    """
    import pyarrow as pa

    failed_set = set(failed)
    kept = [p for p in range(len(items)) if p not in failed_set]
    if len(kept) != part.num_rows or len(recovered) != retried.num_rows:
        raise ValueError(f"a retried shard of {len(items)} inputs: {part.num_rows} rows for {len(kept)} places, "
                         f"{retried.num_rows} for {len(recovered)}")
    part = _as_written(part, [items[p].columns for p in kept])
    unified = _unified_schema([part.schema, retried.schema])

    def conform(table):
        return pa.Table.from_arrays([_as_kind(table[f.name], f.type) if f.name in table.column_names
                                     else _missing(len(table), f.type) for f in unified], schema=unified)

    places = kept + list(recovered)
    table = pa.concat_tables([conform(part), conform(retried)]).take(sorted(range(len(places)), key=places.__getitem__))
    return _with_metadata(table, retried.schema, units)


def _as_written(part, texts: list[dict]):
    """A part's columns after `label` as text, as the shard classifier writes them before any merge:
    kept columns as the catalog gives them (`texts`), the FITS headers' ra/dec as Python writes a
    float (`Decoded.of`), a missing value as ""."""
    import pyarrow as pa

    names = part.column_names
    columns = []
    for name in names[names.index("label") + 1:]:
        if texts and name in texts[0]:
            values = [row.get(name, "") for row in texts]
        else:
            values = [cell_text(v) for v in part[name].to_pylist()]
        columns.append((name, pa.array(values, pa.string())))
    for name, column in columns:
        index = part.schema.get_field_index(name)
        part = part.set_column(index, part.schema.field(name).with_type(pa.string()), column)
    return part


def _with_metadata(table, source, units: dict | None):
    """`table` with the Parquet metadata of a part: the run's keys from the schema `source`, units, and
    astropy's column list and each text column's longest value (table::len::NAME), all for `table`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    lengths = {f.name: pc.max(pc.utf8_length(table[f.name])).as_py() or 1
               for f in table.schema if pa.types.is_string(f.type)}
    keys = galaxy_keys(source.metadata)
    metadata = parquet_metadata(table.schema, keys, {**sky_units(kept_columns(keys)), **(units or {})}, lengths)
    return table.replace_schema_metadata(metadata)


def count_error_rows(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.reader(fh))


def failed_places(out_dir: Path, index: int) -> list[int]:
    """The places in shard `index` of its failed inputs, in listing order: what a rerun retries.
    Empty for a part without failures, and for a part an earlier version wrote, whose error rows
    record no place (its failures stay failures: rerun with --overwrite to retry them)."""
    rows = read_part_errors(out_dir, index)
    if any(len(row) != 5 for row in rows):
        return []
    return sorted(int(row[4]) for row in rows)


def settle_retry(out_dir: Path, index: int, inputs: int) -> None:
    """Finish or undo a retry of shard `index` (`inputs` long) that a kill cut short between its
    renames: the new errors wait beside the old (`pending_errors`) until the part is replaced. A
    part as long as the inputs less the new failures is the new one, so its errors are the new ones;
    otherwise the old part and errors stand and the next rerun retries again."""
    import pyarrow.parquet as pq

    pending = pending_errors(out_dir, index)
    if not pending.exists():
        return
    if pq.ParquetFile(part_path(out_dir, index)).metadata.num_rows == inputs - count_error_rows(pending):
        pending.replace(part_errors(out_dir, index))
    else:
        pending.unlink()


def read_part_errors(out_dir: Path, index: int) -> list[list[str]]:
    """A part's error rows as (id, path, stage, reason[, place in the shard]); the rows of an earlier
    version's part (path, stage, reason) get the id a directory run gives, the file's stem."""
    with open(part_errors(out_dir, index), newline="", encoding="utf-8") as part:
        return [[stem_id(row[0]), *row] if len(row) == 3 else row for row in csv.reader(part)]


def part_path(out_dir: Path, index: int) -> Path:
    return out_dir / f"part-{index:06d}.parquet"


def part_errors(out_dir: Path, index: int) -> Path:
    return out_dir / RAY_BOOKKEEPING / f"part-{index:06d}.errors.csv"


def pending_errors(out_dir: Path, index: int) -> Path:
    return out_dir / RAY_BOOKKEEPING / f"part-{index:06d}.errors.next.csv"


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
