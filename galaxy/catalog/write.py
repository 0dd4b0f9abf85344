"""Writing catalogs (CSV, ECSV, Parquet, FITS) and their errors files.

Output columns: `id`, `path`, one `p_<class>` per class (float32), `label`. Every output
carries metadata: model name, weights sha256, InputSpec, galaxy version, the command and
its config, and the UTC date. CSV has no place for it, so it goes in a sidecar
`<OUT>.meta.json`; ECSV keeps it (and column types and units) in its YAML header; Parquet in
the schema metadata; FITS in the table header. Each column's description goes with it
(`catalog_descriptions`, and those of kept columns from the input catalog).
CSV rows are written as they arrive, Parquet in row groups of `PARQUET_ROW_GROUP` rows, FITS
through a spool file (`galaxy.catalog.fits_table`): memory stays flat however many rows there are.
"""

from __future__ import annotations

import csv
import math
import os
import re
from decimal import Decimal
from pathlib import Path

import numpy as np

from galaxy.catalog.fits_table import numpy_kinds, sky_units
from galaxy.catalog.formats import (BOOL_TEXTS, ERROR_COLUMNS, FITS_COLUMNS, MASKED_COLUMN, RAY_BOOKKEEPING,
                                    SKY_COLUMNS, VALUE_KINDS, catalog_columns, catalog_descriptions, output_format,
                                    probability_column, sidecar_path)
from galaxy.catalog.metadata import ARROW_DESCRIPTION, empty_table, kept_columns, parquet_metadata, sidecar_text
from galaxy.catalog.text import control_escaped, safe_text
from galaxy.errors import UsageError
from galaxy.files import arrow_source, close_source, same_file, writable_folder

PARQUET_ROW_GROUP = 16384


class UniqueIds:
    """The one unique-id rule of a catalog: `take(ident)` gives `ident`, or `ident#2`, `ident#3`,
    ... the first not taken yet, and takes it. The same stem in two folders keeps both rows; the
    path column says which file is which. Applied in listing order, so every run and every machine
    agree. Each id remembers the last suffix it tried, so a stem repeated k times costs O(k) in
    all, not O(k^2) (ids only ever join, so every suffix below that one is still taken)."""

    def __init__(self, taken=()):
        self._taken = set(taken)
        self._last: dict[str, int] = {}

    def __contains__(self, ident) -> bool:
        return ident in self._taken

    def __len__(self) -> int:
        return len(self._taken)

    def add(self, ident: str) -> None:
        """Mark `ident` taken as it is (rows of a catalog being resumed)."""
        self._taken.add(ident)

    def take(self, ident: str) -> str:
        n = self._last.get(ident, 1)
        candidate = ident if n == 1 else f"{ident}#{n}"
        while candidate in self._taken:
            n += 1
            candidate = f"{ident}#{n}"
        if n > 1:  # an id taken as it is needs no record: `_taken` answers (a quarter of a run's per-row memory)
            self._last[ident] = n
        self._taken.add(candidate)
        return candidate


def column_kinds(rows) -> list[tuple[str, str]]:
    """(name, "int", "float", "bool" or "text") of the extra columns in `rows` (dicts of text), in
    first-seen order.

    A column is int when every value it has is a whole number int64 holds (SDSS objids such as
    588848901537202306, run/camcol/field numbers: a join on them needs every digit, and int64 has
    them), float when every value is a number and float64 holds each as written, i.e. gives it back
    as the same number (ra, dec, redshift; not 3.14159265358979323846; a column mixing whole numbers
    and others is float only while its whole numbers stay within 2**53). Empty values are missing ones (NaN, null), not text; a column with no value at
    all is text. Kept as text: numbers written with a leading zero ("007", codes), whole numbers
    beyond int64, numbers beyond 2**53 beside fractions, and numbers beyond 2**53 in a column with
    a missing value (astropy and pandas read a Parquet int column holding a null as float64, which
    would round an objid). A column whose every value is True or False (a FITS logical, a Parquet or
    ECSV bool, as read) is bool, missing values allowed. The `extra` argument of `CatalogWriter`; a
    `--ray` merge applies it to all parts at once (engine/ray_parts.py).
    """
    seen: dict[str, list] = {}  # name -> [any fraction, largest whole magnitude, any text, any missing, any non-bool]
    for row in rows:
        for key, value in row.items():
            state = seen.setdefault(key, [False, -1, False, False, False])
            if value == "":
                state[3] = True
                continue
            if value not in BOOL_TEXTS:
                state[4] = True
            if state[2]:
                continue
            number = _number(value)
            if number is None:
                state[2] = True
            elif isinstance(number, int):
                state[1] = max(state[1], abs(number))
            else:
                state[0] = True
    return [(key, _kind(*state)) for key, state in seen.items()]


def _kind(fraction: bool, whole: int, text: bool, missing: bool, not_bool: bool) -> str:
    if text and not not_bool:  # every value it has is True or False
        return "bool"
    if text or (not fraction and whole < 0):  # text, or no value at all
        return "text"
    if fraction:
        return "float" if whole <= EXACT_INTEGER else "text"
    return "int" if whole <= (EXACT_INTEGER if missing else INT64_MAX) else "text"


# A number as tables write one (not all that Python's float() takes: "1_000", non-ASCII digits).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)", re.ASCII | re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
EXACT_INTEGER = 2 ** 53  # every integer up to this magnitude is exact in float64
INT64_MAX = 2 ** 63 - 1  # int64's largest; its smallest, -2**63, is the FITS columns' missing-value marker


def _number(text: str) -> int | float | None:
    """The number a cell holds: an int for a whole number written without a point or exponent,
    a float for another number, None for text."""
    text = text.strip()
    digits = text.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
        return None  # "007", "0123": a code, not a number ("0.5" is one)
    if _NUMBER.fullmatch(text) is None:
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        return None if math.isinf(number) and "inf" not in text.lower() else number  # "1e999" overflows to inf
    # float64 holds it as written only if its shortest form is the same number: 3.14159265358979323846
    # would come back as 3.141592653589793, 1.0000000000000001 as 1.0
    return number if Decimal(repr(number)) == Decimal(text) else None


def arrow_type(kind: str):
    """A column kind's Arrow type."""
    import pyarrow as pa

    return {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "text": pa.string()}[kind]


def int_text(value: str) -> str:
    """A cell of an int column as int64 text ("+12" -> "12"); "" stays "" (missing)."""
    return str(int(value)) if value.strip() else ""


def output_columns(extra, keep=()) -> tuple[tuple[str, str], ...]:
    """The extra columns a catalog has: `extra` ((name, kind) from the rows, `column_kinds`) with
    every kept column in `keep` there, text where no row gave it a value, and without the FITS
    headers' `ra`/`dec` where a kept column of that name in another case (`RA`, `Dec`) is the
    sky position: FITS and most table tools compare names ignoring case, so two would be one.
    Kept columns come first, in the order kept."""
    kinds = dict(extra)
    names = [*keep, *(name for name in kinds if name not in keep)]
    kept_sky = {name.casefold() for name in keep if name.casefold() in SKY_COLUMNS and name not in SKY_COLUMNS}
    return tuple((name, kinds.get(name, "text")) for name in names if name not in kept_sky)


def ecsv_text(value: str) -> str:
    """A text cell of an ECSV data line that astropy reads back as written.

    astropy's ECSV reader drops every physical line starting with `#` (even inside a quoted
    value) and strips or merges the lines of a multi-line value, so each row is one line: control
    characters (a newline, a tab) are written as \\xNN escapes, as FITS text is (`ascii_text`);
    a value starting with `#` or a quote or space, or holding a comma or quote, is quoted.
    """
    text = control_escaped(value)
    if text and (text[0] in '#" ' or text[-1] == " " or "," in text or '"' in text):
        return '"' + text.replace('"', '""') + '"'
    return text


def describe_rows(rows) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """What a writer must know of all rows before the first: the extra columns' kinds
    (`column_kinds`) and the longest text of each column, which astropy's Parquet reader takes from
    the file (`table::len::NAME`, as astropy's own writer records it).

    Args:
        rows: (id, path, extra columns dict of text) per row.

    Returns:
        (extra, text_lengths): the `extra` and `text_lengths` arguments of `CatalogWriter`.
    """
    from galaxy.io.fits import is_fits_path

    lengths = {"id": 1, "path": 1}
    fits = [False]

    def columns():
        for ident, path, extra in rows:
            lengths["id"], lengths["path"] = max(lengths["id"], len(ident)), max(lengths["path"], len(path))
            fits[0] = fits[0] or is_fits_path(path)  # (band files: "g.fits;r.fits;i.fits")
            for key, value in extra.items():
                lengths[key] = max(lengths.get(key, 1), len(value))
            yield extra

    kinds = column_kinds(columns())
    if fits[0]:  # a catalog of FITS inputs has ra/dec and masked_fraction even where no header gave a position
        # (the chunks of one survey's job array had differed in columns), last and in one order
        kind = dict(kinds)
        if not any(name in kind for name in SKY_COLUMNS):
            kind.update({name: "float" for name in SKY_COLUMNS})
        kind.setdefault(MASKED_COLUMN, "float")
        kinds = [*((name, k) for name, k in kinds if name not in FITS_COLUMNS),
                 *((name, kind[name]) for name in FITS_COLUMNS if name in kind)]
    return kinds, lengths


def errors_path(output) -> Path:
    """The errors file of an output: catalog.fits -> catalog.fits.errors.csv. The whole name is
    kept, so `res.csv` and `res.fits` written side by side each keep their own errors. In a
    folder of Parquet parts (`classify --ray`), OUT/_galaxy/errors.csv."""
    output = Path(output)
    if output.is_dir():
        return output / RAY_BOOKKEEPING / "errors.csv"
    return output.with_name(output.name + ".errors.csv")


class CatalogWriter:
    """Streams result rows to a CSV, ECSV, Parquet or FITS catalog.

    Args:
        path: output file.
        classes: class names; one probability column each.
        metadata: str -> str pairs stored with the catalog.
        fmt: "csv", "ecsv", "parquet" or "fits" (default from the extension).
        extra: (name, "int", "float", "bool" or "text") of columns after `label` (kept input columns,
            ra, dec; `column_kinds`); `write` takes their values as text, "" or absent for missing (NaN
            in float columns, null in int and bool ones: empty in CSV and ECSV, null in Parquet, TNULLn
            or a zero byte in FITS; "" in text columns). The kept columns the metadata records
            (`kept_columns`) are there even when no row has them (a run where every input failed); a
            kept `RA` or `Dec` replaces the FITS headers' `ra`/`dec` as a kept `ra`/`dec` does
            (`output_columns`).
        units: name -> unit of numeric extra columns (FITS TUNITn, ECSV unit); the headers' ra/dec
            are deg (a kept one has its catalog's unit: `sky_units`).
        descriptions: name -> description of kept columns, as the input catalog gives it
            (`galaxy.catalog.column_notes.units_and_descriptions`); the catalog's own columns and the sky
            position have theirs (`catalog_descriptions`).
        text_lengths: name -> the longest text of the id, path and text extra columns over all rows
            (`describe_rows`), recorded in Parquet for astropy's reader: without it every
            `Table.read` warns, and one of a catalog without rows fails.
    """

    def __init__(self, path, classes, metadata: dict, fmt: str | None = None, extra=(), units=None,
                 text_lengths: dict | None = None, descriptions: dict | None = None):
        self.path = Path(path)
        self.format = output_format(path, fmt)
        self.classes = tuple(classes)
        self.metadata = {k: str(v) for k, v in metadata.items()}
        self.units = {**sky_units(kept_columns(self.metadata)), **(units or {})}
        self.extra = output_columns(extra, kept_columns(self.metadata))
        self.columns = (*catalog_columns(self.classes), *(name for name, _ in self.extra))
        described = {**catalog_descriptions(self.classes, kept_columns(self.metadata)), **(descriptions or {})}
        self.descriptions = {name: described[name] for name in self.columns if described.get(name)}
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pending: list[tuple] = []
        self._fh = self._writer = None
        if self.format == "csv":
            self._fh = open(self.path, "w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._fh, lineterminator="\n")
            self._writer.writerow(self.columns)
            numeric = {name for name, kind in self.extra if kind != "text"}
            sidecar_path(self.path).write_text(sidecar_text(self.metadata, self.columns, {
                name: unit for name, unit in self.units.items() if name in numeric}, self.descriptions))
        elif self.format == "ecsv":
            self._fh = open(self.path, "w", newline="", encoding="utf-8")
            self._fh.write(self._ecsv_header())
        elif self.format == "fits":
            from galaxy.catalog.fits_table import FitsTableWriter

            self._writer = FitsTableWriter(self.path, self.classes, self.metadata, self.extra, self.units,
                                           self.descriptions)
        elif self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            kinds = {"id": pa.string(), "path": pa.string(), **{probability_column(c): pa.float32() for c in self.classes},
                     "label": pa.string(), **{name: arrow_type(kind) for name, kind in self.extra}}
            self._schema = pa.schema([pa.field(name, kinds[name], metadata={ARROW_DESCRIPTION: self.descriptions[name]}
                                               if name in self.descriptions else None) for name in self.columns])
            lengths = None if text_lengths is None else {**text_lengths, "label": max(len(c) for c in self.classes)}
            self._schema = self._schema.with_metadata(parquet_metadata(self._schema, self.metadata, self.units,
                                                                       lengths))
            sink = arrow_source(self.path, "wb")
            self._fh = None if isinstance(sink, str) else sink  # (a name that is not UTF-8: a file, closed by `close`)
            try:
                self._writer = pq.ParquetWriter(sink, self._schema)
            except BaseException:
                close_source(sink)
                raise

    def write(self, ids, paths, probabilities: np.ndarray, columns=None):
        """Append rows. probabilities: float (N, K) in class order; columns: per row a dict of extra values."""
        labels = [self.classes[k] for k in probabilities.argmax(axis=1)]
        extra = [[(columns[i] if columns else {}).get(name, "") for name, _ in self.extra] for i in range(len(ids))]
        if self.format == "csv":
            for i, ident in enumerate(ids):
                self._writer.writerow([ident, paths[i], *(f"{p:.6f}" for p in probabilities[i]), labels[i], *extra[i]])
            self._fh.flush()
        elif self.format == "ecsv":
            cell = [{"text": ecsv_text, "int": int_text}.get(kind, str) for _, kind in self.extra]
            self._fh.writelines(",".join([ecsv_text(ident), ecsv_text(paths[i]), *(f"{p:.6f}" for p in probabilities[i]),
                                          ecsv_text(labels[i]), *(f(v) for v, f in zip(extra[i], cell))]) + "\n"
                                for i, ident in enumerate(ids))
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
            # missing text is "", not null: astropy's Parquet reader turns a null string into the text 'None'
            arrays.append(pa.array(values, pa.string()) if kind == "text" else
                          pa.array([None if v == "" else VALUE_KINDS[kind](v) for v in values], arrow_type(kind)))
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        self._pending = []

    def _ecsv_header(self) -> str:
        """ECSV's YAML header (column types, units, the metadata) and the column-name line, by astropy."""
        import io

        out = io.StringIO()
        empty_table(numpy_kinds(self.classes, self.extra), self.metadata, self.units,
                    self.descriptions).write(out, format="ascii.ecsv", delimiter=",")
        return out.getvalue()

    def close(self):
        if self.format in ("csv", "ecsv"):
            self._fh.close()
        elif self.format == "parquet":
            if self._pending:
                self._flush_parquet()
            self._writer.close()
            if self._fh is not None:
                self._fh.close()
        else:
            self._writer.close()


class ErrorWriter:
    """The one errors writer: streams (id, path, stage, reason) rows for inputs that could not be classified.

    `header`: write the column names first (False for the per-shard files a `--ray` run merges).
    """

    def __init__(self, path, header: bool = True):
        self.path = Path(path)
        self.count = 0
        self._fh = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh, lineterminator="\n")
        if header:
            self._writer.writerow(ERROR_COLUMNS)

    def write(self, ident, path, stage, reason, *bookkeeping):
        """One row; `bookkeeping` (a --ray part's place of the input in its shard) follows the columns."""
        self._writer.writerow([safe_text(ident), safe_text(path), stage, safe_text(reason), *bookkeeping])
        self._fh.flush()
        self.count += 1

    def close(self):
        self._fh.close()


def require_writable(output, inputs=(), catalog=None, fmt: str | None = None) -> None:
    """Refuse, before any work, an output whose folder cannot be made or written to, or that is
    one of the inputs (the `--catalog`, a named file): writing it, or `--overwrite`, would destroy it.
    `fmt`: the output's format where given (`--format`): a CSV's metadata file goes beside it whatever its name.

    Raises:
        UsageError: naming the output and the system's reason.
    """
    for given in (catalog, *inputs):
        if given and os.path.isfile(given) and same_file(given, output):
            raise UsageError(f"the output {output} is an input of this run: give another -o")
    writable_folder(Path(output).absolute().parent, f"cannot write {output}")
    besides = [errors_path(output)] + ([sidecar_path(output)] if output_format(output, fmt) == "csv" else [])
    for beside in besides:  # written at the end, after the catalog
        if beside.is_dir():
            what = "errors file" if beside == errors_path(output) else "metadata"
            raise UsageError(f"{beside} is a folder, where {output} writes its {what}: move it, or give another -o")
