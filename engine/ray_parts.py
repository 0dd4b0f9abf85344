"""A `--ray` run's Parquet parts made one catalog, as one machine writes it: ids unique over all parts
in listing order, and every part with the same columns of the same kinds (`finalize_parts`)."""

from __future__ import annotations

from pathlib import Path

from galaxy.catalog.fits_table import SKY_UNITS
from galaxy.catalog.metadata import galaxy_keys, parquet_metadata
from galaxy.catalog.write import arrow_type, column_kinds, UniqueIds
from galaxy.files import write_atomically


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


def finalize_parts(parts: list[Path]) -> None:
    """Make the parts (in listing order) one catalog, as one machine writes it.

    Ids are made unique over all parts in listing order (stem, stem#2, ...). Every part gets
    the same columns: a shard without FITS inputs has no ra/dec, a shard may hold a kept
    column as float64 where another holds text; missing columns become NaN or "" and text wins.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p) for p in parts]
    unified = _numbers_as_numbers(_unified_schema(schemas), parts, schemas)
    seen = UniqueIds()
    for part, schema in zip(parts, schemas):
        table = pq.read_table(part)
        given = table.column("id").to_pylist()
        ids = [seen.take(ident) for ident in given]
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
            metadata = parquet_metadata(unified, galaxy_keys(schema.metadata), SKY_UNITS, lengths)
            table = table.replace_schema_metadata(metadata)
            changed = True
        if changed:  # the temporary name starts with a dot: never read as a part
            write_atomically(part, lambda tmp, table=table: pq.write_table(table, tmp))
