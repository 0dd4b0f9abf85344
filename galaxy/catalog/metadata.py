"""How a catalog describes itself: the run's metadata in each output format.

Every catalog galaxy writes carries str -> str metadata (model, weights, spec, command, ...).
CSV keeps it in a JSON sidecar with JSON values stored as JSON, not as text; FITS in the
table header; ECSV and Parquet in the YAML header astropy reads back as `Table.meta`, and
Parquet also as `galaxy.<key>` schema metadata for pyarrow readers. Column descriptions go
where each format's readers look: the YAML header's column `description` (ECSV, Parquet), the
Arrow field's `description` metadata (Parquet), the sidecar's `columns` (CSV); FITS in
`galaxy.catalog.fits_table`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import numpy as np

from galaxy.catalog.text import safe_text
from galaxy.config import config_dict
from galaxy.version import __version__


# Keywords of a FITS table header that describe the table itself, not the run that wrote it.
_FITS_STRUCTURE = re.compile(r"^(XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|LONGSTRN|COMMENT|HISTORY|CONTINUE|"
                             r"T(TYPE|FORM|UNIT|COMM|DISP|NULL|SCAL|ZERO|DIM)\d+)$")


def sidecar_value(text: str):
    """A metadata value for the JSON sidecar: JSON objects, lists and numbers stored as themselves
    (not as JSON text inside JSON), when they read back to exactly the same text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (dict, list, int, float)) and json.dumps(value) == text else text


def run_metadata(header) -> dict[str, str]:
    """The metadata keywords of a FITS table header (lower case), without those of the table itself."""
    return {k.lower(): str(header[k]) for k in header if k and not _FITS_STRUCTURE.match(k)}


# The CSV sidecar's key for its columns (name -> {"description", "unit"}), beside the metadata keys.
SIDECAR_COLUMNS = "columns"
# The key of an Arrow field's metadata that holds the column's description.
ARROW_DESCRIPTION = b"description"


def sidecar_text(metadata: dict, columns, units: dict, descriptions: dict) -> str:
    """The JSON sidecar of a CSV catalog: the metadata (`sidecar_value`), and under `columns` each
    column in order with its description and unit where it has them."""
    described = {name: {**({"description": descriptions[name]} if name in descriptions else {}),
                        **({"unit": units[name]} if name in units else {})} for name in columns}
    return json.dumps({**{k: sidecar_value(v) for k, v in metadata.items()}, SIDECAR_COLUMNS: described},
                      indent=1) + "\n"


def empty_table(kinds: dict, metadata: dict, units: dict, descriptions: dict | None = None):
    """An astropy Table with no rows: columns of `kinds` (name -> numpy type, in order), the units
    of its float64 columns, the `descriptions` (name -> text) of its columns, and `metadata` as its
    meta. Its YAML header is what ECSV and astropy's Parquet reader understand."""
    from astropy.table import Table

    table = Table({name: np.array([], dtype=kind) for name, kind in kinds.items()}, meta=metadata)
    for name, unit in units.items():
        if name in table.colnames and kinds[name] is np.float64:
            table[name].unit = unit
    for name, text in (descriptions or {}).items():
        if name in table.colnames:
            table[name].description = text
    return table


def arrow_descriptions(schema) -> dict[str, str]:
    """name -> description of the fields of an Arrow schema that have one (`ARROW_DESCRIPTION`)."""
    return {f.name: f.metadata[ARROW_DESCRIPTION].decode() for f in schema
            if f.metadata and ARROW_DESCRIPTION in f.metadata}


def parquet_metadata(schema, metadata: dict, units: dict, text_lengths: dict | None = None) -> dict[str, str]:
    """Schema metadata of a Parquet catalog: one `galaxy.<key>` per metadata item, and the
    `table_meta_yaml` and `table::len::NAME` (the longest text of each text column, when known)
    that astropy writes and reads (column types, units, the fields' descriptions
    (`arrow_descriptions`) and the metadata as `Table.meta`), so `Table.read` sees what pyarrow sees."""
    import pyarrow as pa
    from astropy.table import meta

    # a name in bytes that are not UTF-8 (the output's, in `command` and `output`) as \xNN: pyarrow encodes
    # each value as UTF-8, and the surrogate escapes Python holds such names in had been a traceback
    metadata = {k: safe_text(v) if isinstance(v, str) else v for k, v in metadata.items()}
    kinds = {f.name: str if pa.types.is_string(f.type) else f.type.to_pandas_dtype() for f in schema}
    yaml = "\n".join(meta.get_yaml_from_table(empty_table(kinds, metadata, units, arrow_descriptions(schema))))
    lengths = {f"table::len::{name}": str(max(1, text_lengths.get(name, 1)))
               for name, kind in kinds.items() if kind is str} if text_lengths is not None else {}
    return {**{f"galaxy.{k}": v for k, v in metadata.items()}, "table_meta_yaml": yaml, **lengths}


def galaxy_keys(schema_metadata) -> dict[str, str]:
    """The `galaxy.<key>` items of a Parquet schema's metadata (bytes -> bytes), as key -> text."""
    return {k.decode()[len("galaxy."):]: v.decode() for k, v in (schema_metadata or {}).items()
            if k.startswith(b"galaxy.")}


def kept_columns(metadata: dict) -> tuple[str, ...]:
    """The input columns a catalog keeps, as its metadata records them (the run fingerprint's
    `keep`): its columns whether or not any row was written. () without a run fingerprint."""
    try:
        keep = json.loads(metadata.get("run", "{}")).get("keep", ())
    except (ValueError, AttributeError):
        return ()
    return tuple(name for name in keep if isinstance(name, str))


def run_fingerprint(card, session, config, spec=None) -> dict:
    """What a resumed run must share with the run it continues; `spec`: the InputSpec read with,
    whose crop is recorded (with `--crop-fraction auto`, the crop measured, not the word)."""
    fingerprint = {"weights": card.weights_sha256, "temp": card.temperature, "keep": list(config.keep_columns),
                   "backend": f"{session.name} {session.precision}", "tta": config.tta}
    if config.crop_fraction is not None:  # only when given, so runs journalled before the option still resume
        fingerprint["crop"] = spec.crop_fraction if spec is not None else config.crop_fraction
    if getattr(session, "fingerprint", None):  # which int8 model: a rerun after another `galaxy quantize` had
        fingerprint[INT8_KEY] = session.fingerprint  # mixed two int8 models' rows in one catalog (up to 0.023)
    if getattr(session, "arithmetic", None):  # and on which CPU int8 arithmetic: a task resubmitted from a VNNI
        fingerprint[INT8_ARITHMETIC_KEY] = session.arithmetic  # node to an AVX2 one, whose sums saturate, went on
    return {**fingerprint, CROP_RULE_KEY: CROP_RULE, **reading_settings(config, spec or card.input_spec)}


# How a cutout is cropped: since 2026-11-29 the square of the crop fraction of the longer side (a non-square
# cutout keeps its pixel scale, zero-padded where the square passes a short side); before, the crop fraction
# of each side, resized to the square, squashed non-square cutouts. A fingerprint without the key was made
# before: its run continues (square cutouts read as they did), with a warning (`begun_with_older_crop`),
# and records CROP_RULE_MIXED from then on, so that every later rerun warns and the catalog says so.
CROP_RULE_KEY = "crop_rule"
CROP_RULE = "square of the longer side"
CROP_RULE_MIXED = "squashed to the square before 2026-11-29, then square of the longer side"


def begun_with_older_crop(earlier: dict) -> bool:
    """Whether a run's recorded fingerprint comes from before the square-crop rule (CROP_RULE), or from
    a run continued from one (CROP_RULE_MIXED)."""
    return earlier.get(CROP_RULE_KEY, CROP_RULE_MIXED) == CROP_RULE_MIXED


# The settings of how a run reads each FITS file (`reading_settings`), and the key that says a
# fingerprint records them: one written before they were recorded lacks it (`as_recorded_now`).
# READING_RECORDED holds the version of the record: 1 recorded the first three keys, 2 the catalog's path
# and id columns too (`--path-column`, `--id-column`: a rerun naming another id column mixed two kinds of
# id in one catalog); KEYS_SINCE says which version first recorded a key.
INT8_KEY = "int8"  # the fingerprint (`engine.int8_models.model_fingerprint`) of the int8 model a run used
INT8_ARITHMETIC_KEY = "int8_arithmetic"  # and the CPU's int8 arithmetic it ran on (`engine.machine.int8_arithmetic`)
READING_KEYS = ("hdu", "bands", "band_columns", "path_column", "id_column")
READING_RECORDED = "reading"
READING_VERSION = 2
KEYS_SINCE = {"path_column": 2, "id_column": 2}


def reading_settings(config, spec) -> dict:
    """How a run reads its inputs where it is told to (`--hdu`, `--bands`, `--band-columns` for each FITS
    file; `--path-column`, `--id-column` for a catalog): the pixels and the id a galaxy gets depend on
    them, so a rerun that changes one would mix two readings in one catalog (it was taken, and the
    metadata then named the new bands over rows made with the old; ids of two columns sat in one).
    Each is recorded only when given (`fingerprint_defaults` says what leaving it out means), beside
    READING_RECORDED; `spec` is the InputSpec read with (its bands are `--bands` parsed)."""
    settings = {READING_RECORDED: READING_VERSION}
    if config.hdu is not None:
        settings["hdu"] = str(config.hdu)
    if config.bands:
        settings["bands"] = list(spec.fits_bands)
    if config.band_columns:  # spacing aside, in order: it orders each galaxy's files (its path, and planes)
        pairs = ("=".join(side.strip() for side in pair.split("=", 1)) for pair in config.band_columns.split(","))
        settings["band_columns"] = ",".join(pair for pair in pairs if pair)
    for key in ("path_column", "id_column"):  # which column names each galaxy's file, and its id
        if getattr(config, key, None):
            settings[key] = getattr(config, key)
    return settings


def as_recorded_now(earlier: dict, fingerprint: dict) -> dict:
    """An `earlier` fingerprint in the form of today's `fingerprint`: the reading settings it did not
    record yet (no READING_RECORDED, or an older version of it) are taken to be as this run's, since
    what it was told is not known (a `--ray` folder recorded `hdu` and its columns already, and keeps
    them); runs before 2026-11-29 recorded `--crop-fraction auto` as the word, not the crop it
    measured, and are continued at the crop measured now; runs before the square-crop rule
    (CROP_RULE) are continued under it (their caller warns: `begun_with_older_crop`)."""
    version = earlier.get(READING_RECORDED, 0)
    if version < fingerprint.get(READING_RECORDED, 0):  # what it did not record is taken to be as now
        reading = {k: fingerprint[k] for k in READING_KEYS
                   if KEYS_SINCE.get(k, 1) > version and k in fingerprint and k not in earlier}
        earlier = {**reading, **earlier, READING_RECORDED: fingerprint[READING_RECORDED]}
    for key in (INT8_KEY, INT8_ARITHMETIC_KEY):  # an int8 run journalled before the key: not known
        if key in fingerprint and key not in earlier and earlier.get("backend") == fingerprint.get("backend"):
            earlier = {**earlier, key: fingerprint[key]}
    if earlier.get("crop") == "auto" and isinstance(fingerprint.get("crop"), float):
        earlier = {**earlier, "crop": fingerprint["crop"]}
    if CROP_RULE_KEY in fingerprint and begun_with_older_crop(earlier):  # continued, with a warning
        earlier = {**earlier, CROP_RULE_KEY: fingerprint[CROP_RULE_KEY]}
    return earlier


def fingerprint_defaults(card) -> dict:
    """What a run fingerprint leaves out means this: the card's own crop (`--crop-fraction` not
    given) and bands, the first image HDU, one file per galaxy."""
    return {"crop": card.input_spec.crop_fraction, "bands": list(card.input_spec.fits_bands), "hdu": None,
            "band_columns": None}


def catalog_metadata(card, session, config, spec=None, complete: bool = True, decoder: str | None = None,
                     software: dict | None = None) -> dict:
    """Self-description stored with every catalog (keys of at most 8 characters, for FITS).

    `session`: the backend session that ran (its name, precision, device); `config`: the ClassifyConfig;
    `spec`: the InputSpec the images were read with (default: the card's); `complete`: False for the
    catalog of a run interrupted before every input was done ("complete": "false"; a rerun goes on and
    writes "true"); `decoder`: the pipeline that ran (`auto` resolved); `software`: the versions of the
    libraries that computed the rows (`engine.machine.versions`: an int8 model is rebuilt by the local
    ONNX Runtime, and its probabilities depend on it).
    """
    return {"run": json.dumps(run_fingerprint(card, session, config, spec)),
        "complete": "true" if complete else "false",
        "model": card.name, "weights": card.weights_sha256, "temp": card.temperature,
        "spec": json.dumps((spec or card.input_spec).to_dict()),
        "version": f"galaxy-engine {__version__}", "backend": f"{session.name} {session.precision}",
        "device": session.device, "command": config.command, "config": json.dumps(config_dict(config)),
        "cwd": config.cwd,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),  # FITS DATE: UTC, no offset
        **({"decoder": decoder} if decoder else {}),
        **({"software": json.dumps(software)} if software else {}),
    }
