"""CSV and ECSV files read as text, for the catalog readers (`galaxy.catalog.read`): rows exactly as written
(the csv module on the untouched stream: kept columns keep their spaces, a `#` in a CSV is data), and an
ECSV file's YAML header without reading a row.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

from galaxy.catalog.formats import CSV_ENCODING


def open_text(path: Path):
    """A CSV or ECSV file for the csv module: UTF-8, with or without the byte-order mark Excel's
    "CSV UTF-8" writes (read as text, it would become part of the first column's name)."""
    return open(path, newline="", encoding=CSV_ENCODING)


def ecsv_reader(fh):
    """csv rows of an open ECSV file: the column names, then the data, as written.

    Only the leading block of `#` lines is ECSV's header (YAML: types, units, meta, delimiter);
    after it every line is data, even one that starts with `#`: a value such as `#weird.jpeg`, or
    the continuation line of a quoted multi-line cell (astropy and galaxy both write such lines).
    The csv module reads the untouched stream, so text comes back exactly as written (astropy's
    ECSV reader strips spaces and reads those lines as comments).
    """
    from astropy.table.meta import get_header_from_yaml

    header, line = [], fh.readline()
    while line.startswith("#"):
        header.append(line)
        line = fh.readline()
    if not header or not header[0].startswith("# %ECSV"):
        raise ValueError("not an ECSV file: it does not start with '# %ECSV'")
    try:
        yaml = get_header_from_yaml((h[2:] if h.startswith("# ") else h[1:]).rstrip("\r\n") for h in header[1:])
    except Exception as exc:  # astropy's YamlParseError and yaml's own errors alike
        raise ValueError(f"ECSV header is not valid: {exc}") from None
    delimiter = yaml.get("delimiter", " ")
    rows = csv.reader(itertools.chain([line], fh), delimiter=delimiter, skipinitialspace=delimiter == " ", strict=True)
    names = next(rows, None)
    if not names:
        raise ValueError("ECSV file without its line of column names")
    yield names
    for row in rows:
        if delimiter == " ":  # runs of spaces are one delimiter; spaces at a line's ends are none
            while len(row) > len(names) and row[-1] == "":
                row.pop()
            while len(row) > len(names) and row[0] == "":
                row.pop(0)
        if row:
            yield row


def ecsv_dicts(fh):
    """(column names, iterator of {column: text} rows) of an open ECSV file; the header is read
    (and checked) now, the rows as they are taken."""
    rows = ecsv_reader(fh)
    names = next(rows)

    def dicts():
        for row in rows:
            if len(row) != len(names):
                raise ValueError(f"ECSV row with {len(row)} values for {len(names)} columns: {row}")
            yield dict(zip(names, row))

    return names, dicts()


def text_dicts(fh, fmt: str):
    """(column names, iterator of {column: text} rows) of an open CSV or ECSV file (`open_text`):
    a CSV has no comment lines (a line starting with `#` is data), an ECSV only its header block."""
    if fmt == "csv":
        # strict: an unclosed quote is an error, not every later row in one cell
        reader = csv.DictReader(fh, strict=True)
        return list(reader.fieldnames or []), reader
    return ecsv_dicts(fh)


def ecsv_header(path) -> dict:
    """An ECSV file's header: its YAML as a dict ("datatype": one entry per column with its name, datatype,
    unit and description; "meta": the table's metadata). No data row is read, and none is built: astropy
    cannot make an empty table of an array column (ECSV subtype float64[3]), so reading the header as a
    table refused any catalog holding one.

    Raises:
        ValueError: the file has no ECSV header, or its YAML cannot be read.
    """
    from astropy.table.meta import YamlParseError, get_header_from_yaml

    lines = []
    with open_text(path) as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            lines.append(line[2:] if line.startswith("# ") else line[1:])
    if not lines or not lines[0].startswith("%ECSV"):
        raise ValueError("no ECSV header (its first line is not '# %ECSV <version>')")
    try:
        header = get_header_from_yaml(line.rstrip("\r\n") for line in lines[1:])
    except YamlParseError as exc:
        raise ValueError(f"its ECSV header's YAML cannot be read: {exc}") from None
    return {"datatype": list(header.get("datatype", [])), "meta": dict(header.get("meta") or {})}
