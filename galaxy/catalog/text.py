"""The text forms of ids and paths in what galaxy writes: one escaping, two strengths.

File names that are not valid UTF-8 reach Python as surrogate escapes. `safe_text` writes
their undecodable bytes as \\xNN (every catalog and errors file; resuming compares paths in
this form); `ascii_text` is the same and also escapes every non-ASCII character, for FITS,
whose text columns must be printable ASCII; `unescape_ascii_text` reads that form back.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def safe_text(value: str) -> str:
    """A str that encodes as UTF-8: file names that are not UTF-8 (held by Python as surrogate
    escapes) get their undecodable bytes written as \\xNN. Every catalog and errors file uses
    this form for ids and paths, and resuming compares paths in this form."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def cell_text(value) -> str:
    """A catalog cell as the text a kept column carries through a run ('' for missing: None, a float
    NaN; a float as Python writes it, so it reads back the same number). Text is kept as it is:
    read_catalog_rows gives missing cells as '' (or None, NaN), so a kept 'nan' or '--' is text."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def control_escaped(value: str) -> str:
    """`safe_text` with every control character (a tab or newline in a file name) as a \\xNN escape: an
    ECSV cell's text (`galaxy.catalog.write.ecsv_text`, which also quotes it)."""
    return CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", safe_text(value))


def ascii_text(value: str) -> str:
    """Printable ASCII form of a str, as FITS text must be: `control_escaped`, then every non-ASCII
    character as a backslash escape."""
    return control_escaped(value).encode("ascii", "backslashreplace").decode("ascii")


def text_as_written(fmt: str):
    """The form a catalog of format `fmt` gives its ids and paths back in (str -> str): `ascii_text` for
    FITS, `control_escaped` for ECSV, `safe_text` for the others. A rerun compares the rows it read back
    with new inputs in this form: in another, a FITS catalog's escaped `\\xe9` did not take the id `é`
    from the next file of that name (two rows had one id), and an ECSV catalog's file with a tab in its
    name was classified again on every rerun."""
    return {"fits": ascii_text, "ecsv": control_escaped}.get(fmt, safe_text)


BYTE_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def file_name_candidates(text: str) -> list[str]:
    """The names a catalog's path text may stand for, most literal first: as written; with its \\xNN
    escapes read as the bytes of a file name that is not UTF-8 (every format writes such a name's
    undecodable bytes so) or as control characters (ECSV); and, for a FITS path already read back by
    `unescape_ascii_text` (which takes \\xe9 to be é), escaped again and read as bytes. The caller
    opens the first that exists: the escaped form alone cannot tell a name's byte 0xE9 from é.
    (A str holding surrogate escapes is what `os` functions take for those bytes.)"""
    if "\\" not in text and text.isascii() and text.isprintable():  # no escape to read: the one reading
        return [text]  # (building the others had cost a catalog's listing 40% more per row)

    def as_bytes(value: str) -> str:
        return BYTE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16) if int(m.group(1), 16) < 0x80
                                             else 0xDC00 + int(m.group(1), 16)), value)

    out = []
    for name in (text, as_bytes(text), as_bytes(ascii_text(text))):
        if name not in out:
            out.append(name)
    return out


def existing_file(text: str, base=None) -> str:
    """The file a catalog's path text names: relative names from `base` (when given); of the names its
    escapes may stand for (`file_name_candidates`), the first that exists, else the name as written (whose
    failure its reader then reports). An ordinary path has one reading and costs no look-up."""
    def placed(name: str) -> str:  # relative names from `base`
        path = Path(name)
        return str(path if base is None or path.is_absolute() else Path(base) / path)

    located = [placed(name) for name in file_name_candidates(text)]
    if len(located) == 1:
        return located[0]
    return next((name for name in located if os.path.lexists(name)), located[0])


ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))")


def unescape_ascii_text(text: str) -> str:
    """The str that `ascii_text` escaped: every \\xNN, \\uNNNN and \\UNNNNNNNN back to its character,
    so a FITS catalog's path opens the file it names. Two cases cannot be told apart in the
    escaped form, and the common one is taken: \\xNN of 80-ff is read as that character (é, not
    the undecodable byte of a file name that is not UTF-8), and a backslash the name itself held
    before x, u or U and hex digits is read as an escape."""
    def character(match) -> str:
        code = int(next(g for g in match.groups() if g), 16)
        return chr(code) if code <= sys.maxunicode else match.group()  # not an escape ascii_text writes

    return ESCAPE.sub(character, text)


def not_utf8(path) -> str:
    """Why a text table failed to decode, for its error message: 'not UTF-8 text (line N: bytes)', N being
    the first line that does not decode. (A decode error names a byte offset within the chunk being
    decoded, which means nothing to the user.)"""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                near = line[max(exc.start - 10, 0):exc.end + 10]
                return f"not UTF-8 text (line {number}: {near!r}); save it as UTF-8"
    return "not UTF-8 text"
