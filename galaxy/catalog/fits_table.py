"""A FITS binary-table catalog written with memory that does not grow with the number of rows.

FITS needs the row count and every column width in the header, before the data. Rows are
therefore spooled to a temporary CSV beside the output while the run goes on; `close` reads
the spool twice: once for the widths, once to write fixed-width big-endian records block by
block after the header. Character columns are ASCII (the FITS standard): other characters are
written as backslash escapes.

Each column's description goes where FITS readers look for it: TCOMMn (the HEASARC convention
TOPCAT and STILTS read; a long one continues on CONTINUE cards), the TTYPEn card's comment (as
much of it as fits the card), and the COMMENT block astropy's FITS writer makes, the one place
its reader takes a description from.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from galaxy.catalog.formats import VALUE_KINDS, probability_column
from galaxy.catalog.metadata import empty_table
from galaxy.catalog.text import ascii_text

BLOCK = 2880
ROWS_PER_WRITE = 8192


SKY_UNITS = {"ra": "deg", "dec": "deg"}


def sky_units(keep=()) -> dict:
    """The units of the sky position from FITS headers (deg), for those of its columns not taken by a kept
    input column of that name: a kept `ra` has the unit its catalog gives it, or none (as a kept `RA` does)."""
    return {name: unit for name, unit in SKY_UNITS.items() if name not in keep}


INT_NULL = -2 ** 63  # an int column's missing value (TNULLn); `column_kinds` never makes an int column holding it
_MISSING = {"int": INT_NULL, "float": np.nan, "bool": b"\0"}  # a logical's null is a zero byte (FITS 4.0, 7.3.3)
_LOGICAL = {True: b"T", False: b"F"}


def scratch_files(path) -> list[Path]:
    """The hidden files a FITS catalog at `path` is made in: the row spool and the file before its rename."""
    path = Path(path)
    return [path.with_name(f".{path.name}.spool.csv"), path.with_name(f".{path.name}.tmp")]


def numpy_kinds(classes, extra) -> dict:
    """name -> numpy type of a catalog's columns, in order (id, path, p_<class>..., label, extra...),
    as the empty astropy Table that gives the ECSV header and astropy's FITS column block has them."""
    return {"id": str, "path": str, **{probability_column(c): np.float32 for c in classes}, "label": str,
            **{name: {"int": np.int64, "float": np.float64, "bool": np.bool_}.get(kind, str) for name, kind in extra}}


def _card_comment(card, text: str) -> str:
    """`text` as the comment of a keyword card: whole where it fits after the value (a string's
    field is at least 20 characters, to column 30) and the ' / ' that starts a comment, else cut,
    at a word where it has one, and ended with '...'; '' where the value leaves no room."""
    value_end = max(30, len(card.image.rstrip())) if len(card.image) == 80 else 80
    room = 80 - value_end - 3
    if len(text) <= room:
        return text
    if room <= 3:
        return ""
    head = text[:room - 3]
    if text[room - 3] != " " and " " in head:  # not within a word
        head = head.rsplit(" ", 1)[0]
    head = head.rstrip(" ,;:")
    return head + "..." if head else ""


# Text a card holds between its quotes, quotes doubled: 80 columns less `KEYWORD = '` (or `CONTINUE  '`)
# and the closing quote; a value that does not fit continues on CONTINUE cards (LONGSTRN).
CARD_TEXT = 68


def _continued(value: str) -> bool:
    """Whether a text value needs CONTINUE cards (LONGSTRN): longer than a card holds, quotes doubled."""
    return len(value.replace("'", "''")) > CARD_TEXT


def _set_text(header, key: str, value: str) -> None:
    """`header[key] = value`, a long value continued on CONTINUE cards split where astropy's own
    split is valid FITS: astropy cut a doubled quote in two ('xx'&' then '' y), and fitsverify
    refused the card ("Value and Comment not separated by a /")."""
    from astropy.io import fits

    if not _continued(value):
        header[key] = value
        return
    parts, part, room = [], "", CARD_TEXT - 1  # each continued part ends in "&"
    for char in value:
        if len(part.replace("'", "''")) + (2 if char == "'" else 1) > room:
            parts.append(part)
            part = ""
        part += char
    parts.append(part)
    if value.endswith("&"):  # a last part ending in "&" would read as continued: an empty one ends it
        parts.append("")
    images = [(f"{key:<8}= '" if k == 0 else "CONTINUE  '") + text.replace("'", "''") + ("&'" if k < len(parts) - 1
              else "'") for k, text in enumerate(parts)]
    if key in header:
        del header[key]
    header.append(fits.Card.fromstring("".join(image.ljust(80) for image in images)))  # written as built


def _astropy_descriptions(kinds: dict, descriptions: dict) -> list[str]:
    """The COMMENT lines in which astropy's FITS writer records column descriptions, for the columns
    of `kinds` (FITS name -> numpy type): what astropy writes for an empty table of them. A name
    with trailing spaces is left out: FITS ignores those, so astropy reads the column by another
    name and would fail to find it."""
    import io
    import warnings

    from astropy.io import fits

    kinds = {name: kind for name, kind in kinds.items() if name == name.rstrip()}
    if not kinds:
        return []
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # a name astropy advises against was warned of once, as the catalog's column
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        empty_table(kinds, {}, {}, descriptions).write(buffer, format="fits")
    buffer.seek(0)
    with fits.open(buffer) as hdul:
        return list(hdul[1].header.get("COMMENT", []))


class FitsTableWriter:
    """Writes columns id, path, p_<class>..., label, extra... as a BINTABLE extension.

    Args:
        path: the .fits file.
        classes: class names, one float32 probability column each.
        metadata: header keywords (at most 8 characters) -> values; long values use CONTINUE.
        extra: (name, "int", "float", "bool" or "text") columns after label; ints are 64-bit with
            TNULLn = -2**63 for a missing value, floats 64-bit, NaN when missing, bools logical (L),
            a zero byte when missing; ra and dec carry the unit deg.
        units: name -> unit of numeric extra columns (default: ra and dec in deg).
        descriptions: name -> description of the columns that have one (written as printable ASCII).
    """

    def __init__(self, path, classes, metadata: dict, extra=(), units=None, descriptions: dict | None = None):
        self.path = Path(path)
        self.descriptions = descriptions or {}
        self.units = units if units is not None else SKY_UNITS
        self.classes = tuple(classes)
        self.extra = tuple(extra)
        self.metadata = metadata
        self._spool_path = scratch_files(self.path)[0]
        self._spool = open(self._spool_path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._spool)
        self.rows = 0

    def write(self, ids, paths, probabilities: np.ndarray, labels, extra=None):
        for i, ident in enumerate(ids):
            self._csv.writerow([ascii_text(ident), ascii_text(paths[i]), *(repr(float(p)) for p in probabilities[i]),
                                labels[i], *(ascii_text(v) for v in (extra[i] if extra else ()))])
        self.rows += len(ids)

    def _header(self, widths):
        from astropy.io import fits

        columns = [fits.Column("id", f"{widths[0]}A"), fits.Column("path", f"{widths[1]}A")]
        columns += [fits.Column(probability_column(c), "E") for c in self.classes]
        columns.append(fits.Column("label", f"{widths[2]}A"))
        # classify refuses names that are not printable ASCII up front (check_kept_columns); any other
        # caller gets them escaped as the text is, never a failure after the rows are spooled
        columns += [fits.Column(ascii_text(name), f"{widths[3 + j]}A") if kind == "text" else
                    fits.Column(ascii_text(name), "L") if kind == "bool" else
                    fits.Column(ascii_text(name), "K", null=INT_NULL, unit=self.units.get(name)) if kind == "int" else
                    fits.Column(ascii_text(name), "D", unit=self.units.get(name))
                    for j, (name, kind) in enumerate(self.extra)]
        header = fits.BinTableHDU.from_columns(columns, nrows=0).header
        header["NAXIS2"] = self.rows
        kinds = numpy_kinds(self.classes, self.extra)
        described = {}  # column number -> (FITS name, description)
        for n, name in enumerate(kinds, 1):
            if self.descriptions.get(name):
                described[n] = (ascii_text(name), ascii_text(self.descriptions[name]))
                _set_text(header, f"TCOMM{n}", described[n][1])
                header.comments[f"TTYPE{n}"] = _card_comment(header.cards[f"TTYPE{n}"], described[n][1])
        values = {key.upper()[:8]: ascii_text(str(value)) for key, value in self.metadata.items()}
        texts = [*values.values(), *(text for _, text in described.values())]
        if any(_continued(v) for v in texts):
            header["LONGSTRN"] = ("OGIP 1.0", "long strings continue on CONTINUE cards")
        for key, value in values.items():
            _set_text(header, key, value)
        fits_kinds = {ascii_text(name): kind for name, kind in kinds.items()}
        for line in _astropy_descriptions({name: fits_kinds[name] for name, _ in described.values()},
                                          dict(described.values())):
            header.add_comment(line)
        return header

    def _records(self, dtype):
        k = len(self.classes)
        with open(self._spool_path, newline="", encoding="utf-8") as fh:
            chunk = []
            for row in csv.reader(fh):
                extra = [v if kind == "text" else _MISSING[kind] if v == "" else
                         _LOGICAL[VALUE_KINDS[kind](v)] if kind == "bool" else VALUE_KINDS[kind](v)
                         for v, (_, kind) in zip(row[3 + k:], self.extra)]
                chunk.append((row[0], row[1], *map(float, row[2:2 + k]), row[2 + k], *extra))
                if len(chunk) == ROWS_PER_WRITE:
                    yield np.array(chunk, dtype=dtype)
                    chunk = []
            if chunk:
                yield np.array(chunk, dtype=dtype)

    def close(self):
        from astropy.io import fits

        self._spool.close()
        k = len(self.classes)
        widths = [1] * (3 + len(self.extra))
        with open(self._spool_path, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh):
                cells = [row[0], row[1], row[2 + k], *row[3 + k:]]
                widths = [max(w, len(c)) for w, c in zip(widths, cells)]
        dtype = [("id", f"S{widths[0]}"), ("path", f"S{widths[1]}")]
        dtype += [(probability_column(c), ">f4") for c in self.classes] + [("label", f"S{widths[2]}")]
        dtype += [(name, {"int": ">i8", "float": ">f8", "bool": "S1"}.get(kind, f"S{widths[3 + j]}"))
                  for j, (name, kind) in enumerate(self.extra)]
        tmp = scratch_files(self.path)[1]
        written = 0
        with open(tmp, "wb") as out:
            out.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
            out.write(self._header(widths).tostring().encode("ascii"))
            for records in self._records(dtype):
                out.write(records.tobytes())
                written += records.nbytes
            out.write(b"\0" * (-written % BLOCK))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)
        self._spool_path.unlink()
