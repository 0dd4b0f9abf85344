"""A FITS binary-table catalog written with memory that does not grow with the number of rows.

FITS needs the row count and every column width in the header, before the data. Rows are
therefore spooled to a temporary CSV beside the output while the run goes on; `close` reads
the spool twice: once for the widths, once to write fixed-width big-endian records block by
block after the header. Character columns are ASCII (the FITS standard): other characters are
written as backslash escapes.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from galaxy.catalog.formats import NUMBER_KINDS, probability_column
from galaxy.catalog.text import ascii_text

BLOCK = 2880
ROWS_PER_WRITE = 8192


SKY_UNITS = {"ra": "deg", "dec": "deg"}
INT_NULL = -2 ** 63  # an int column's missing value (TNULLn); `column_kinds` never makes an int column holding it
_MISSING = {"int": INT_NULL, "float": np.nan}


def scratch_files(path) -> list[Path]:
    """The hidden files a FITS catalog at `path` is made in: the row spool and the file before its rename."""
    path = Path(path)
    return [path.with_name(f".{path.name}.spool.csv"), path.with_name(f".{path.name}.tmp")]


class FitsTableWriter:
    """Writes columns id, path, p_<class>..., label, extra... as a BINTABLE extension.

    Args:
        path: the .fits file.
        classes: class names, one float32 probability column each.
        metadata: header keywords (at most 8 characters) -> values; long values use CONTINUE.
        extra: (name, "int", "float" or "text") columns after label; ints are 64-bit with
            TNULLn = -2**63 for a missing value, floats 64-bit, NaN when missing; ra and dec carry
            the unit deg.
        units: name -> unit of numeric extra columns (default: ra and dec in deg).
    """

    def __init__(self, path, classes, metadata: dict, extra=(), units=None):
        self.path = Path(path)
        self.units = units if units is not None else SKY_UNITS
        self.classes = tuple(classes)
        self.extra = tuple(extra)
        self.metadata = metadata
        self._spool_path = scratch_files(self.path)[0]
        self._spool = open(self._spool_path, "w", newline="")
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
                    fits.Column(ascii_text(name), "K", null=INT_NULL, unit=self.units.get(name)) if kind == "int" else
                    fits.Column(ascii_text(name), "D", unit=self.units.get(name))
                    for j, (name, kind) in enumerate(self.extra)]
        header = fits.BinTableHDU.from_columns(columns, nrows=0).header
        header["NAXIS2"] = self.rows
        for k, name in enumerate(self.classes):
            header[f"TCOMM{3 + k}"] = f"probability that the galaxy is {name}"
        values = {key.upper()[:8]: ascii_text(str(value)) for key, value in self.metadata.items()}
        if any(len(v) > 68 for v in values.values()):
            header["LONGSTRN"] = ("OGIP 1.0", "long strings continue on CONTINUE cards")
        for key, value in values.items():
            header[key] = value
        return header

    def _records(self, dtype):
        k = len(self.classes)
        with open(self._spool_path, newline="") as fh:
            chunk = []
            for row in csv.reader(fh):
                extra = [v if kind == "text" else _MISSING[kind] if v == "" else NUMBER_KINDS[kind](v)
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
        with open(self._spool_path, newline="") as fh:
            for row in csv.reader(fh):
                cells = [row[0], row[1], row[2 + k], *row[3 + k:]]
                widths = [max(w, len(c)) for w, c in zip(widths, cells)]
        dtype = [("id", f"S{widths[0]}"), ("path", f"S{widths[1]}")]
        dtype += [(probability_column(c), ">f4") for c in self.classes] + [("label", f"S{widths[2]}")]
        dtype += [(name, {"int": ">i8", "float": ">f8"}.get(kind, f"S{widths[3 + j]}"))
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
