"""Catalogs in (tables with a path column) and out (CSV, Parquet, FITS), torch-free.

Output columns: `id`, `path`, one `p_<class>` per class (float32), `label`. Every output
carries metadata: model name, weights sha256, InputSpec, galaxy version, the command and
its config, and the UTC date. CSV has no place for it, so it goes in a sidecar
`<OUT>.meta.json`; ECSV keeps it (and column types and units) in its YAML header; Parquet in
the schema metadata; FITS in the table header.
CSV rows are written as they arrive, Parquet in row groups of `PARQUET_ROW_GROUP` rows, FITS
through a spool file (`galaxy.fits_table`): memory stays flat however many rows there are.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from galaxy.errors import UsageError
from galaxy.fits_table import SKY_UNITS
from galaxy.metadata import empty_table, galaxy_keys, parquet_metadata, run_metadata, sidecar_value

OUTPUT_FORMATS = {".csv": "csv", ".ecsv": "ecsv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits"}
PATH_COLUMNS = ("file_loc", "file", "path")
RESERVED_COLUMNS = ("id", "path", "label")
ID_COLUMNS = ("id_str", "objid", "id")
ERROR_COLUMNS = ("path", "stage", "reason")
PARQUET_ROW_GROUP = 16384
# A `classify --ray` output folder holds only its Parquet parts at the top, so that
# pyarrow.parquet.read_table(OUT) and pandas.read_parquet(OUT) read exactly the catalog; the
# bookkeeping (manifest, errors, shards, fingerprint) lives in this sub-folder, which Parquet
# dataset readers skip because its name starts with "_".
RAY_BOOKKEEPING = "_galaxy"
RAY_MANIFEST = "manifest.json"


def safe_text(value: str) -> str:
    """A str that encodes as UTF-8: file names that are not UTF-8 (held by Python as surrogate
    escapes) get their undecodable bytes written as \\xNN. Every catalog and errors file uses
    this form for ids and paths, and resuming compares paths in this form."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def unique_id(ident: str, seen: set[str]) -> str:
    """The one unique-id rule of a catalog: `ident`, or `ident#2`, `ident#3`, ... the first not in
    `seen`, which it joins. The same stem in two folders keeps both rows; the path column says
    which file is which. Applied in listing order, so every run and every machine agree."""
    candidate, n = ident, 1
    while candidate in seen:
        n += 1
        candidate = f"{ident}#{n}"
    seen.add(candidate)
    return candidate


def output_format(path, explicit: str | None = None) -> str:
    """The writer for an output path: by `explicit` name or by extension; never a silent default."""
    if explicit:
        if explicit not in set(OUTPUT_FORMATS.values()):
            raise UsageError(f"unknown output format {explicit!r}; choose from {sorted(set(OUTPUT_FORMATS.values()))}")
        return explicit
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UsageError(f"cannot tell the output format of {path}: use one of {sorted(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def column_kinds(rows) -> list[tuple[str, str]]:
    """(name, "float" or "text") of the extra columns in `rows` (dicts of text), in first-seen order.

    A column is float when every value it has parses as a number (ra, dec, redshift): the
    `extra` argument of `CatalogWriter`.
    """
    kinds: dict[str, str] = {}
    for row in rows:
        for key, value in row.items():
            if kinds.get(key) != "text":
                try:
                    float(value)
                    kinds[key] = "float"
                except ValueError:
                    kinds[key] = "text"
    return list(kinds.items())


def errors_path(output) -> Path:
    """The errors file of an output: catalog.fits -> catalog.fits.errors.csv. The whole name is
    kept, so `res.csv` and `res.fits` written side by side each keep their own errors. In a
    folder of Parquet parts (`classify --ray`), OUT/_galaxy/errors.csv."""
    output = Path(output)
    if output.is_dir():
        return output / RAY_BOOKKEEPING / "errors.csv"
    return output.with_name(output.name + ".errors.csv")


def _parts(path: Path) -> list[Path] | None:
    """The Parquet parts of a `classify --ray` output folder, in order; None for a file."""
    manifest = path / RAY_BOOKKEEPING / RAY_MANIFEST
    if not path.is_dir():
        return None
    if not manifest.is_file():
        raise UsageError(f"{path} is a folder without {RAY_BOOKKEEPING}/{RAY_MANIFEST}: "
                         "not a finished `galaxy classify --ray` output")
    return [path / name for name in json.loads(manifest.read_text())["parts"]]


CATALOG_BATCH = 8192


def _text(value) -> str:
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip()


def _catalog_columns(path: Path, fmt: str):
    """(column names, iterator of {column: values} batches), streamed where the format allows:
    CSV row by row, Parquet by record batch, FITS memory-mapped; ECSV is read whole."""
    if fmt == "csv":
        fh = open(path, newline="")
        reader = csv.DictReader(fh)

        def csv_batches():
            with fh:
                batch = []
                for row in reader:
                    batch.append(row)
                    if len(batch) == CATALOG_BATCH:
                        yield {c: [r[c] for r in batch] for c in reader.fieldnames}
                        batch = []
                if batch:
                    yield {c: [r[c] for r in batch] for c in reader.fieldnames}

        return list(reader.fieldnames or []), csv_batches()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        return parquet.schema_arrow.names, (b.to_pydict() for b in parquet.iter_batches(batch_size=CATALOG_BATCH))
    if fmt == "fits":
        from astropy.io import fits

        hdul = fits.open(path, memmap=True)
        table = next((h for h in hdul if isinstance(h, (fits.BinTableHDU, fits.TableHDU))), None)
        if table is None:
            hdul.close()
            raise UsageError(f"catalog {path} has no table HDU")

        def fits_batches():
            with hdul:
                for start in range(0, len(table.data), CATALOG_BATCH):
                    chunk = table.data[start:start + CATALOG_BATCH]
                    yield {c: list(chunk[c]) for c in table.columns.names}

        return list(table.columns.names), fits_batches()
    from astropy.table import Table

    table = Table.read(path, format="ascii.ecsv")
    return list(table.colnames), iter([{c: list(table[c]) for c in table.colnames}])


def read_input_catalog(path, path_column: str | None = None, id_column: str | None = None, keep=(),
                       band_columns: dict[str, str] | None = None):
    """Rows (path, id or None, {kept column: text}) from a CSV / Parquet / FITS / ECSV table, streamed.

    Relative paths are taken from the catalog's folder. The path column defaults to the
    first of `PATH_COLUMNS` present; the id column to the first of `ID_COLUMNS`; `keep`
    names columns passed through to the output (e.g. ra, dec, redshift). With
    `band_columns` ({band: column}, one FITS file per band and galaxy) the path of a row is
    a {band: path} dict instead.
    """
    path = Path(path)
    name = path.name.lower()
    fmt = next((f for ending, f in ((".csv", "csv"), (".ecsv", "ecsv"), (".parquet", "parquet"), (".fits", "fits"),
                                    (".fit", "fits"), (".fits.gz", "fits")) if name.endswith(ending)), None)
    if fmt is None:
        raise UsageError(f"catalog {path} is not .csv, .ecsv, .parquet or .fits")
    try:
        columns, batches = _catalog_columns(path, fmt)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read catalog {path}: {exc}") from None
    if band_columns:
        absent = [c for c in band_columns.values() if c not in columns]
        if absent:
            raise UsageError(f"catalog {path} has no band path column {absent[0]!r}; columns are {columns}")
    else:
        path_column = path_column or next((c for c in PATH_COLUMNS if c in columns), None)
        if path_column not in columns:
            raise UsageError(f"catalog {path} has no path column {path_column or PATH_COLUMNS}; columns are {columns}")
    if id_column is None:
        id_column = next((c for c in ID_COLUMNS if c in columns), None)
    elif id_column not in columns:
        raise UsageError(f"catalog {path} has no id column {id_column!r}; columns are {columns}")
    missing = [c for c in keep if c not in columns]
    if missing:
        raise UsageError(f"catalog {path} has no column {missing[0]!r} to keep; columns are {columns}")
    clash = [c for c in keep if c in RESERVED_COLUMNS]
    if clash:
        raise UsageError(f"cannot keep column {clash[0]!r}: the output has its own (reserved: {list(RESERVED_COLUMNS)})")
    def resolve(value) -> str:
        file = Path(_text(value))
        return str(file if file.is_absolute() else path.parent / file)

    for batch in batches:
        n = len(next(iter(batch.values())))
        ids = batch[id_column] if id_column else [None] * n
        kept = [batch[c] for c in keep]
        for i, ident in enumerate(ids):
            where = ({band: resolve(batch[c][i]) for band, c in band_columns.items()} if band_columns
                     else resolve(batch[path_column][i]))
            yield where, None if ident is None else _text(ident), {c: _text(column[i]) for c, column in zip(keep, kept)}


def column_units(path, columns) -> dict[str, str]:
    """Units of `columns` in an input catalog, where the format keeps them (FITS TUNITn, ECSV).

    Read from the header alone. CSV and Parquet tables carry none: {} for them.
    """
    path, wanted = Path(path), set(columns)
    name = path.name.lower()
    if not wanted:
        return {}
    if name.endswith((".fits", ".fit", ".fits.gz")):
        from astropy.io import fits

        header = fits.getheader(path, 1)
        names = {header.get(f"TTYPE{i}"): header.get(f"TUNIT{i}") for i in range(1, int(header.get("TFIELDS", 0)) + 1)}
        return {k: str(v) for k, v in names.items() if k in wanted and v}
    if name.endswith(".ecsv"):
        table = _ecsv_header(path)
        return {k: str(table[k].unit) for k in table.colnames if k in wanted and table[k].unit is not None}
    return {}


def _ecsv_header(path):
    """An ECSV file's header as an empty astropy Table (types, units, meta): no data rows are read."""
    from astropy.table import Table

    header = []
    with open(path) as fh:
        for line in fh:
            header.append(line)
            if not line.startswith("#"):
                break
    return Table.read("".join(header), format="ascii.ecsv")


def read_catalog_metadata(path, fmt: str | None = None) -> dict[str, str]:
    """The metadata galaxy stored with a catalog it wrote (keys lower case); {} when none."""
    path = Path(path)
    if _parts(path) is not None:
        return dict(json.loads((path / RAY_BOOKKEEPING / RAY_MANIFEST).read_text()).get("metadata", {}))
    fmt = output_format(path, fmt)
    if fmt == "csv":
        sidecar = path.with_name(path.name + ".meta.json")
        if not sidecar.exists():
            return {}
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in json.loads(sidecar.read_text()).items()}
    if fmt == "ecsv":
        return {k: str(v) for k, v in _ecsv_header(path).meta.items()}
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return galaxy_keys(pq.read_schema(path).metadata)
    from astropy.io import fits

    header = fits.getheader(path, 1)
    return run_metadata(header)



def read_catalog_rows(path, fmt: str | None = None):
    """Rows of a catalog galaxy wrote, as dicts with `id`, `path`, the `p_*` columns and any extra ones.

    A `classify --ray` output folder is read part by part, in order.
    """
    parts = _parts(Path(path))
    if parts is not None:
        for part in parts:
            yield from read_catalog_rows(part, "parquet")
        return
    fmt = output_format(path, fmt)
    if fmt in ("csv", "ecsv"):
        with open(path, newline="") as fh:
            yield from csv.DictReader(line for line in fh if not line.startswith("#"))
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for group in pq.ParquetFile(path).iter_batches(batch_size=8192):
            yield from group.to_pylist()
        return
    from astropy.table import Table

    table = Table.read(path, format="fits")
    text = {name for name in table.colnames if table[name].dtype.kind in "SU"}
    for row in table:
        yield {name: (str(row[name]) if name in text else float(row[name])) for name in table.colnames}


class CatalogWriter:
    """Streams result rows to a CSV, ECSV, Parquet or FITS catalog.

    Args:
        path: output file.
        classes: class names; one probability column each.
        metadata: str -> str pairs stored with the catalog.
        fmt: "csv", "ecsv", "parquet" or "fits" (default from the extension).
        extra: (name, "float" or "text") of columns after `label` (kept input columns, ra, dec);
            `write` takes their values as text, "" or absent for missing (NaN / null).
        units: name -> unit of float extra columns (FITS TUNITn, ECSV unit); ra/dec are deg.
    """

    def __init__(self, path, classes, metadata: dict, fmt: str | None = None, extra=(), units=None):
        self.path = Path(path)
        self.units = {**SKY_UNITS, **(units or {})}
        self.format = output_format(path, fmt)
        self.classes = tuple(classes)
        self.extra = tuple(extra)
        self.columns = ("id", "path", *(f"p_{c}" for c in self.classes), "label", *(name for name, _ in self.extra))
        self.metadata = {k: str(v) for k, v in metadata.items()}
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pending: list[tuple] = []
        self._fh = self._writer = None
        if self.format == "csv":
            self._fh = open(self.path, "w", newline="")
            self._writer = csv.writer(self._fh)
            self._writer.writerow(self.columns)
            sidecar = self.path.with_name(self.path.name + ".meta.json")
            sidecar.write_text(json.dumps({k: sidecar_value(v) for k, v in self.metadata.items()}, indent=1) + "\n")
        elif self.format == "ecsv":
            self._fh = open(self.path, "w", newline="")
            self._fh.write(self._ecsv_header())
            self._writer = csv.writer(self._fh, lineterminator="\n")
        elif self.format == "fits":
            from galaxy.fits_table import FitsTableWriter

            self._writer = FitsTableWriter(self.path, self.classes, self.metadata, self.extra, self.units)
        elif self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            fields = [pa.field("id", pa.string()), pa.field("path", pa.string())]
            fields += [pa.field(f"p_{c}", pa.float32()) for c in self.classes] + [pa.field("label", pa.string())]
            fields += [pa.field(name, pa.float64() if kind == "float" else pa.string()) for name, kind in self.extra]
            self._schema = pa.schema(fields)
            self._schema = self._schema.with_metadata(parquet_metadata(self._schema, self.metadata, self.units))
            self._writer = pq.ParquetWriter(self.path, self._schema)

    def write(self, ids, paths, probabilities: np.ndarray, columns=None):
        """Append rows. probabilities: float (N, K) in class order; columns: per row a dict of extra values."""
        labels = [self.classes[k] for k in probabilities.argmax(axis=1)]
        extra = [[(columns[i] if columns else {}).get(name, "") for name, _ in self.extra] for i in range(len(ids))]
        if self.format in ("csv", "ecsv"):
            for i, ident in enumerate(ids):
                self._writer.writerow([ident, paths[i], *(f"{p:.6f}" for p in probabilities[i]), labels[i], *extra[i]])
            self._fh.flush()
        elif self.format == "fits":
            self._writer.write(ids, paths, probabilities, labels, extra)
        else:
            self._pending.extend(zip(ids, paths, probabilities.astype(np.float32), labels, extra))
            if len(self._pending) >= PARQUET_ROW_GROUP:
                self._flush_parquet()
        self.rows += len(ids)

    def _flush_parquet(self):
        import pyarrow as pa

        rows = self._pending
        arrays = [pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.string())]
        probs = np.array([r[2] for r in rows], dtype=np.float32).reshape(-1, len(self.classes))
        arrays += [pa.array(probs[:, k]) for k in range(len(self.classes))]
        arrays.append(pa.array([r[3] for r in rows], pa.string()))
        for j, (_, kind) in enumerate(self.extra):
            values = [r[4][j] for r in rows]
            arrays.append(pa.array([float(v) if v != "" else None for v in values], pa.float64()) if kind == "float"
                          else pa.array([v if v != "" else None for v in values], pa.string()))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self._pending = []

    def _ecsv_header(self) -> str:
        """ECSV's YAML header (column types, units, the metadata) and the column-name line, by astropy."""
        import io

        kinds = {"id": str, "path": str, "label": str, **{f"p_{c}": np.float32 for c in self.classes},
                 **{name: (np.float64 if kind == "float" else str) for name, kind in self.extra}}
        out = io.StringIO()
        empty_table({name: kinds[name] for name in self.columns}, self.metadata, self.units).write(out, format="ascii.ecsv", delimiter=",")
        return out.getvalue()

    def close(self):
        if self.format in ("csv", "ecsv"):
            self._fh.close()
        elif self.format == "parquet":
            if self._pending:
                self._flush_parquet()
            self._writer.close()
        else:
            self._writer.close()


class ErrorWriter:
    """The one errors writer: streams (path, stage, reason) rows for inputs that could not be classified.

    `header`: write the column names first (False for the per-shard files a `--ray` run merges).
    """

    def __init__(self, path, header: bool = True):
        self.path = Path(path)
        self.count = 0
        self._fh = open(self.path, "w", newline="")
        self._writer = csv.writer(self._fh)
        if header:
            self._writer.writerow(ERROR_COLUMNS)

    def write(self, path, stage, reason):
        self._writer.writerow([safe_text(path), stage, safe_text(reason)])
        self._fh.flush()
        self.count += 1

    def close(self):
        self._fh.close()
