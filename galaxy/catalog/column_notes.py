"""What an input catalog says about its columns: units and descriptions, in whichever form its format keeps
them (FITS TUNIT/TCOMM and astropy's serialized-columns block, ECSV's YAML header, astropy-written Parquet's
table_meta_yaml), for the kept columns a classify run passes on."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from galaxy.catalog.formats import table_format
from galaxy.catalog.metadata import arrow_descriptions
from galaxy.catalog.fits_rows import table_hdu
from galaxy.catalog.read import parquet_schema
from galaxy.catalog.text_tables import ecsv_header

log = logging.getLogger(__name__)


def units_and_descriptions(path, columns) -> tuple[dict[str, str], dict[str, str]]:
    """(units, descriptions) of `columns` in an input catalog, where the format keeps them, from one
    reading of its header (`column_notes`); ({}, {}) without a catalog (`path` None)."""
    notes = column_notes(path, columns) if path else {}
    return tuple({name: note[key] for name, note in notes.items() if note.get(key)} for key in ("unit", "description"))


def column_units(path, columns) -> dict[str, str]:
    """Units of `columns` in an input catalog, where the format keeps them (`column_notes`)."""
    return units_and_descriptions(path, columns)[0]


def column_descriptions(path, columns) -> dict[str, str]:
    """Descriptions of `columns` in an input catalog, where the format keeps them (`column_notes`)."""
    return units_and_descriptions(path, columns)[1]


def column_notes(path, columns) -> dict[str, dict[str, str]]:
    """The unit and description of `columns` in an input catalog, where the format keeps them:
    name -> {"unit", "description"} (each only where known).

    FITS: TUNITn; TCOMMn (the HEASARC convention), else the TTYPEn card's comment, else astropy's
    serialized-columns COMMENT block (where astropy keeps a description it writes). ECSV, and
    Parquet written by astropy: the YAML header's unit and description; Parquet also a field's
    `description` metadata. Read from the header or schema alone; CSV tables carry none.
    """
    path, wanted = Path(path), set(columns)
    fmt = table_format(path)
    if not wanted or fmt not in ("fits", "ecsv", "parquet"):
        return {}
    found: dict[str, dict[str, str]] = {}

    def note(name, key, value):
        if name in wanted and value is not None and str(value).strip() and key not in found.get(name, {}):
            found.setdefault(name, {})[key] = str(value).strip()

    if fmt == "fits":
        from astropy.io import fits

        with fits.open(path) as hdul:  # the HDU the rows are read from, not always HDU 1
            table = table_hdu(hdul)
            header = table.header.copy() if table is not None else fits.Header()
        for i in range(1, int(header.get("TFIELDS", 0)) + 1):
            name = header.get(f"TTYPE{i}")
            if name not in wanted:
                continue
            note(name, "unit", header.get(f"TUNIT{i}"))
            comment = header.comments[f"TTYPE{i}"]  # STILTS and CFITSIO write "label for column/field N" there
            note(name, "description", header.get(f"TCOMM{i}") or ("" if _BOILERPLATE.fullmatch(comment.strip())
                                                                    else comment))
        datatype = _yaml_columns(path, _serialized_columns(header))
    elif fmt == "ecsv":
        datatype = ecsv_header(path)["datatype"]
    else:
        schema = parquet_schema(path)
        for name, text in arrow_descriptions(schema).items():
            note(name, "description", text)
        yaml = (schema.metadata or {}).get(b"table_meta_yaml")
        datatype = _yaml_columns(path, yaml.decode().splitlines() if yaml else [])
    for column in datatype:
        note(column.get("name"), "unit", column.get("unit"))
        note(column.get("name"), "description", column.get("description"))
    return found


_BOILERPLATE = re.compile(r"label for (field|column) *\d+", re.IGNORECASE)
# The lines astropy writes among a FITS table header's COMMENT cards to keep what FITS has no card for
# (column descriptions, some units, meta), as YAML.
_SERIALIZED = ("--BEGIN-ASTROPY-SERIALIZED-COLUMNS--", "--END-ASTROPY-SERIALIZED-COLUMNS--")


def _serialized_columns(header) -> list[str]:
    """The YAML lines of astropy's serialized-columns block: each split into COMMENT cards of 70
    characters and a backslash, joined back as astropy's FITS reader joins them."""
    comments = [str(c) for c in header.get("COMMENT", [])]
    if _SERIALIZED[0] not in comments or _SERIALIZED[1] not in comments:
        return []
    lines, continued = [], False
    for line in comments[comments.index(_SERIALIZED[0]) + 1:comments.index(_SERIALIZED[1])]:
        if continued:
            lines[-1] += line[:70]
        else:
            lines.append(line[:70])
        continued = len(line) == 71
    return lines


def _yaml_columns(path, lines) -> list[dict]:
    """The column entries (name, unit, description, ...) of astropy's YAML table header `lines`."""
    if not lines:
        return []
    from astropy.table.meta import get_header_from_yaml

    try:
        return list(get_header_from_yaml(lines)["datatype"])
    except Exception as exc:  # astropy's YamlParseError and yaml's own: the rows are still read
        log.warning("%s: its table header's YAML is not valid, its column units and descriptions are not kept: %s",
                    path, exc)
        return []
