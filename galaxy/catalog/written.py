"""Reading the catalogs galaxy wrote: their format (told by name or first bytes), rows and metadata, a
`classify --ray` output folder part by part."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from galaxy.catalog import formats
from galaxy.catalog.formats import (OUTPUT_FORMATS, RAY_BOOKKEEPING, RAY_MANIFEST, beside_catalog, output_format,
                                    sidecar_path)
from galaxy.catalog.fits_rows import fits_rows
from galaxy.catalog.metadata import SIDECAR_COLUMNS, galaxy_keys, run_metadata
from galaxy.catalog.read import UNREADABLE, _parts, parquet_schema
from galaxy.catalog.text_tables import ecsv_header, open_text, text_dicts
from galaxy.errors import UsageError
from galaxy.files import arrow_source, close_source


def written_format(path, fmt: str | None = None) -> str:
    """The format of a catalog galaxy wrote: `fmt` when named, else by its extension, else (a name
    `classify --format` was given, such as `run.dat`) by its first bytes: FITS, Parquet, ECSV, or a
    CSV beside its metadata file.

    Raises:
        UsageError: none of these tells it.
    """
    path = Path(path)
    if fmt:
        return output_format(path, fmt)
    try:
        with open(path, "rb") as fh:
            start = fh.read(16)
    except OSError:
        start = b""
    held = next((name for name, magic in _MAGIC.items() if start.startswith(magic)), None)
    if path.suffix.lower() in OUTPUT_FORMATS:
        named = output_format(path)
        if held is not None and held != named:
            raise UsageError(f"{path} is named as a {named} catalog but holds a {held} one (written with --format "
                             f"{held}?)")
        return named
    if held is not None:
        return held
    if sidecar_path(path).is_file():
        return "csv"
    raise UsageError(f"cannot tell the format of catalog {path}: its first bytes are not FITS, Parquet or ECSV, and "
                     f"a CSV catalog is told by its name (.csv) or by its metadata file ({sidecar_path(path).name}, "
                     "missing): rename it to .csv if it is one")


# The first bytes of each binary or self-describing format galaxy writes.
_MAGIC = {"fits": b"SIMPLE  =", "parquet": b"PAR1", "ecsv": b"# %ECSV"}


def read_catalog_metadata(path, fmt: str | None = None) -> dict[str, str]:
    """The metadata galaxy stored with a catalog it wrote (keys lower case); {} when none."""
    path = Path(path)
    if _parts(path) is not None:
        return dict(json.loads((path / RAY_BOOKKEEPING / RAY_MANIFEST).read_text()).get("metadata", {}))
    fmt = written_format(path, fmt)
    if fmt == "csv":
        sidecar = beside_catalog(path, sidecar_path)  # (a link to a catalog: its metadata is beside the file)
        if not sidecar.exists():
            return {}
        try:
            held = json.loads(sidecar.read_text())
        except ValueError as exc:  # (a message naming the catalog alone sent the user to the wrong file)
            raise ValueError(f"its metadata file {sidecar.name} is not JSON ({exc})") from None
        if not isinstance(held, dict):
            raise ValueError(f"its metadata file {sidecar.name} holds a JSON {type(held).__name__}, not an object")
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in held.items()
                if k != SIDECAR_COLUMNS}  # the columns' descriptions and units, not the run's metadata
    if fmt == "ecsv":
        return {k: str(v) for k, v in ecsv_header(path)["meta"].items()}
    if fmt == "parquet":
        return galaxy_keys(parquet_schema(path).metadata)
    from astropy.io import fits

    header = fits.getheader(path, 1)
    return run_metadata(header)


def read_catalog_rows(path, fmt: str | None = None, unescape: bool = False):
    """Rows of a catalog galaxy wrote, as dicts with `id`, `path`, the `p_*` columns and any extra ones.

    A `classify --ray` output folder is read part by part, in order. FITS text is stored escaped to
    ASCII (`ascii_text`) and is given as stored, the form a resumed run compares; `unescape=True`
    gives it back as the other formats hold it, e.g. a path to open.
    """
    parts = _parts(Path(path))
    if parts is not None:
        for part in parts:
            try:
                yield from read_catalog_rows(part, "parquet")
            except UNREADABLE as exc:  # (the folder had been named, the damaged part not)
                raise UsageError(f"cannot read catalog {path}: its part {part.name} ({type(exc).__name__}: {exc})") \
                    from None
        return
    fmt = written_format(path, fmt)
    if fmt in ("csv", "ecsv"):
        with open_text(path) as fh:
            yield from text_dicts(fh, fmt)[1]
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq

        source = arrow_source(path)
        try:
            for group in pq.ParquetFile(source).iter_batches(batch_size=formats.CATALOG_BATCH):
                yield from group.to_pylist()
        finally:
            close_source(source)
        return
    yield from fits_rows(path, unescape)


def shown_catalog_rows(path):
    """`read_catalog_rows(path, unescape=True)` for the commands that show a catalog (report, montage): a
    file that cannot be read is a UsageError naming it and why (it had been a traceback); so is an empty CSV
    file (0 bytes: it had been shown as a catalog of no rows; the other formats' readers say so themselves)."""
    if Path(path).suffix.lower() == ".csv" and Path(path).is_file() and not Path(path).stat().st_size:
        raise UsageError(f"cannot read catalog {path}: it is empty (0 bytes)")
    rows = read_catalog_rows(path, unescape=True)
    while True:
        try:
            row = next(rows, None)
        except UNREADABLE as exc:
            kind = "CSV" if isinstance(exc, csv.Error) else type(exc).__name__  # (csv's is named Error)
            raise UsageError(f"cannot read catalog {path} ({kind}: {exc})") from None
        if row is None:
            return
        yield row
