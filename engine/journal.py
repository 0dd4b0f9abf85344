"""Crash-safe progress of a classify run, so a killed survey run resumes without losing or
repeating a row.

While a run works on OUT, finished rows are committed in chunks under `OUT.partial/` (every
`COMMIT_ROWS` rows or `COMMIT_SECONDS` seconds, whichever comes first): each
chunk is written to a temporary file, fsynced, then renamed (atomic on POSIX), so a chunk is
either wholly there or absent. When the run ends (or is interrupted with Ctrl-C) the chunks
are assembled into OUT and its errors file, each written to a temporary name and renamed,
and the folder is renamed away in one step, then deleted (a kill while deleting leaves nothing
a rerun would trust). A rerun on the same OUT:
  * with chunks in `OUT.partial/` (the last run was killed): takes its committed rows;
  * else with OUT present (the last run finished or was interrupted): takes OUT's rows, read from
    OUT until the rerun commits a row of its own; then they are copied into the journal as its
    first chunk, before that row's (OUT is replaced only at the end, so a rerun killed before
    that finds them in OUT again). A rerun that classifies nothing new leaves OUT as it is and
    writes only its errors file;
and skips every input already classified (a file a catalog lists twice counts once per
listing). Inputs that failed are tried again (the file may have been fixed). A second process
on the same OUT is refused while the first holds the lock; a rerun with another model, backend,
TTA setting, crop, kept columns or reading of the FITS files (`--hdu`, `--bands`, `--band-columns`)
is refused (mixing them in one catalog would be wrong) unless `--overwrite` starts over.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from engine.fingerprint import (FINGERPRINT, changed_settings, journal_dir, keep_fingerprint, output_fingerprint,
                                warn_older_crop)
from engine.journal_done import DoneRows
from engine.journal_rows import chunk_rows, output_rows, write_chunk
from galaxy.catalog.fits_table import scratch_files
from galaxy.catalog.formats import PROBABILITY_PREFIX, output_format, sidecar_path
from galaxy.catalog.metadata import CROP_RULE_KEY, CROP_RULE_MIXED
from galaxy.catalog.read import UNREADABLE, input_catalog_columns
from galaxy.catalog.written import read_catalog_metadata
from galaxy.catalog.text import existing_file, safe_text, text_as_written
from galaxy.catalog.write import CatalogWriter, describe_rows, errors_path, ErrorWriter, UniqueIds
from galaxy.errors import UsageError
from galaxy.files import hold_lock, remove_quietly, same_file, sync_to_disk, write_atomically

log = logging.getLogger(__name__)

COMMIT_ROWS = 2048
COMMIT_SECONDS = 2.0


class Journal:
    """Committed chunks of one output; see the module docstring.

    Args:
        output: the catalog being written.
        classes: class names (one probability column each).
        fingerprint: what must not change between a run and its resumption.
        overwrite: discard earlier results of this output first.
        defaults: the values of settings a fingerprint may leave out (`changed_settings`).
        units, descriptions: name -> unit and description of kept columns, as the input catalog
            gives them (`CatalogWriter`).
    """

    def __init__(self, output, classes, fingerprint: dict, overwrite: bool = False, commit_rows: int = COMMIT_ROWS,
                 fmt: str | None = None, units: dict | None = None, commit_seconds: float = COMMIT_SECONDS,
                 defaults: dict | None = None, descriptions: dict | None = None):
        self.output = Path(output)
        self.defaults = defaults or {}
        self.format, self.units, self.descriptions = fmt, units or {}, descriptions or {}
        self.commit_rows, self.commit_seconds = commit_rows, commit_seconds
        self._last_commit = time.monotonic()
        self.classes = tuple(classes)
        self.dir = journal_dir(self.output)
        # files per galaxy (`--band-columns`, recorded as band=column pairs): a done row's path joins them
        pairs = fingerprint.get("band_columns")
        self._bands = len(pairs.split(",")) if pairs else 0
        self.output.parent.mkdir(parents=True, exist_ok=True)
        begun_here = not self.dir.exists()
        self._lock = self._take_lock()
        for leftover in self.output.parent.glob(f".{glob.escape(self.dir.name)}.done-*"):  # killed while tidying up
            shutil.rmtree(leftover, onerror=_log_undeleted)
        if overwrite:
            for old in self.dir.glob("chunk-*.csv"):
                old.unlink()
            for old in (self.dir / FINGERPRINT, self.dir / "cwd", self.output, sidecar_path(self.output)):
                old.unlink(missing_ok=True)  # the sidecar too: one of a CSV stood beside a Parquet rerun's output
        try:
            self._check_fingerprint(fingerprint)
            self._chunks = sorted(self.dir.glob("chunk-*.csv"))
            begun_in = self._begun_in()
            self._written = text_as_written(output_format(self.output, self.format))
            # a finished output's rows are read from it until this run commits a row of its own (`commit`):
            # a rerun with nothing new to do then leaves it as it is (`finish`)
            self._unimported = not self._chunks and self.output.exists()
            self._done = DoneRows(self._written, self._bands)  # the inputs a rerun skips (`is_done`)
            self.ids = UniqueIds()
            relative = None  # a row's path that is relative to `begun_in`, if any
            for row in self.rows(check=True):  # a finished output's rows come in its written form, a journal's not
                self.ids.add(self._written(row[0]))
                self._done.add(row[0], row[1], begun_in)
                if relative is None and not os.path.isabs(row[1]):
                    relative = row[1]
            if relative is not None and not same_file(begun_in, os.getcwd()):
                raise UsageError(f"{self.output} was begun in {begun_in}, and its rows name files from there "
                                 f"({relative!r}): rerun from that folder, or use --overwrite to start over")
        except UsageError:
            if begun_here:  # a refused rerun leaves no OUT.partial/ of its own (its lock, cwd or fingerprint)
                shutil.rmtree(self.dir, ignore_errors=True)
            self._lock.close()
            raise
        self.resumed = self._done.done.total()
        self._pending_rows: list[list] = []
        self.errors: list[tuple[str, str, str, str]] = []  # (id, path, stage, reason): engine.runner.Failure

    def _take_lock(self):
        """Hold `OUT.partial/lock` for this process, or refuse. The folder may vanish under us (a
        finishing run renames it away, then deletes it): a lock on a file no longer at that path
        guards nothing, so then the folder is made again and locked afresh."""
        while True:
            self.dir.mkdir(exist_ok=True)
            try:
                lock = hold_lock(self.dir / "lock", f"another galaxy classify is writing {self.output}")
            except FileNotFoundError:  # renamed away between mkdir and open
                continue
            try:
                if os.stat(self.dir / "lock").st_ino == os.fstat(lock.fileno()).st_ino:
                    return lock
            except FileNotFoundError:
                pass
            lock.close()

    def _check_fingerprint(self, fingerprint):
        path, older = self.dir / FINGERPRINT, False
        if not path.exists() and self.output.exists():  # a finished catalog keeps its fingerprint in its metadata
            meta = self._read_output(lambda: output_fingerprint(self.output, self.format))  # None: no run record
            if meta is None and not self._has_catalog_columns():
                raise UsageError(f"{self.output} exists and is not a catalog written by galaxy classify: give another "
                                 "-o")
            sidecar = sidecar_path(self.output)
            if output_format(self.output, self.format) == "csv" and not sidecar.exists():
                raise UsageError(f"{self.output} has lost {sidecar.name}, which records how it was made, so a rerun "
                                 "cannot check that it continues with the same settings: restore that file, or use "
                                 "--overwrite to start over")
            changed = changed_settings(meta, fingerprint, self.defaults) if meta is not None else None
            if changed:
                raise UsageError(f"{self.output} was written with other settings ({changed}); use --overwrite to "
                                 "start over")
            if meta is not None and warn_older_crop(meta, fingerprint, self.output):
                older = True
        if older:  # recorded so, for every later rerun
            fingerprint = {**fingerprint, CROP_RULE_KEY: CROP_RULE_MIXED}
        self.older_crop = keep_fingerprint(path, fingerprint, self.output, self.defaults) or older

    def _has_catalog_columns(self) -> bool:
        """Whether an existing output without a run record (a CSV that lost its metadata file, a catalog of a
        version before the record) is still a catalog galaxy classify wrote: its id, path and p_<class> columns.
        A table of the user's own, given as -o, had been taken for a damaged catalog, and --overwrite named as
        the way on, which deletes it."""
        fmt = output_format(self.output, self.format)
        columns = self._read_output(lambda: input_catalog_columns(self.output, fmt))
        return {"id", "path"} <= set(columns) and any(c.startswith(PROBABILITY_PREFIX) for c in columns)

    def _begun_in(self) -> str:
        """The working directory of the run that began this output, which its relative paths are from:
        recorded in the journal (`cwd`), else in a finished catalog's metadata, else this one. A new
        journal records this run's."""
        record = self.dir / "cwd"
        if record.is_file():
            return record.read_text(encoding="utf-8", errors="surrogateescape")
        begun_in = os.getcwd()
        if self.output.exists():
            metadata = self._read_output(lambda: read_catalog_metadata(self.output, self.format))
            begun_in = existing_file(metadata["cwd"]) if "cwd" in metadata else begun_in  # (its name escaped
            # where not UTF-8, as Parquet and FITS write it: the folder it names)
        # (a folder named in bytes that are not UTF-8 as those bytes: a run begun there had been a traceback)
        write_atomically(record, lambda tmp: tmp.write_text(begun_in, encoding="utf-8", errors="surrogateescape"))
        return begun_in

    def _import_output(self):
        """The rows of the finished output, which a rerun continues, as the first chunk (written whole or
        not at all), before the first chunk of this run's own rows: from then on the journal holds every
        row, and a run killed later resumes from it. Until then the output itself holds them (it is
        replaced only by `finish`), and a killed run's rerun reads them from it again."""
        if not self.output.exists():  # deleted while this run worked: its rows went with it, this run's stay
            log.warning("%s was removed while this run worked: its %d earlier rows are gone, and the catalog this "
                        "run writes holds only the rows it classifies", self.output, self.resumed)
            self._unimported = False
            return
        before = len(self._chunks)
        try:
            self._write_chunk(self._output_rows())
        except BaseException:
            if len(self._chunks) > before:  # it landed, and a signal came right after its rename
                self._unimported = False
            raise
        self._unimported = False  # (an output of no rows makes no chunk)

    def _output_rows(self):
        """The finished output's rows in the journal's form, each checked as it is read (`output_rows`)."""
        return output_rows(self.output, self.format, self.classes, self._read_output)

    def _read_output(self, read):
        """`read()` of the existing output, which a rerun continues; an output that is not a
        catalog of this run's format (e.g. `catalog.csv` with `--format parquet`) is a usage error."""
        try:
            return read()
        except UNREADABLE as exc:
            raise UsageError(f"{self.output} exists but cannot be read as a {output_format(self.output, self.format)} "
                             f"catalog to resume ({type(exc).__name__}: {exc}); use --overwrite to replace it, "
                             "or another output name") from None

    def _write_chunk(self, rows):
        write_chunk(self.dir, self._chunks, rows)

    def is_done(self, path: str, ident: str | None = None, bands=()) -> bool:
        """Whether this listing of an input is already in the catalog, taking one of its rows (`DoneRows.is_done`)."""
        return self._done.is_done(path, ident, bands)

    def count_new(self, items) -> int:
        """How many of `items` `is_done` does not skip, taking none of their rows (`DoneRows.count_new`)."""
        return self._done.count_new(items)

    def rows(self, check: bool = False):
        """Committed rows: [id, path, p_class..., columns JSON] as strings, in commit order. With
        `check` (once, when a run opens its journal: the chunks it writes itself are whole) each row
        is checked to be as `add` wrote it. A finished output not yet imported (`_import_output`) gives its
        rows first, always checked.

        Raises:
            UsageError: with `check`, a chunk was changed after it was written (cut short, edited): named,
                with the line; a finished output's row, named with its number.
        """
        if self._unimported:
            yield from self._output_rows()
        yield from chunk_rows(self._chunks, len(self.classes), check)

    def take_id(self, ident: str) -> str:
        """The catalog id of the next input in listing order (`UniqueIds.take` of its text as the output
        writes it, `text_as_written`): the Runner's `unique_id`, called for failed inputs too, so that ids
        never depend on which inputs failed, and the errors file names each failure by an id no row has."""
        return self.ids.take(self._written(ident))

    def add(self, ids, paths, probabilities: np.ndarray, columns=None):
        """Stage classified rows, their ids from `take_id`; they are committed every `commit_rows` rows or
        `commit_seconds` seconds, whichever comes first, so a kill loses at most that much work.

        `columns`: per row, a dict of extra column values (text), e.g. kept catalog columns, ra, dec.
        """
        for i, ident in enumerate(ids):
            extra = {k: safe_text(v) for k, v in columns[i].items()} if columns else {}
            self._pending_rows.append([ident, safe_text(paths[i]),
                                       *(f"{p:.6f}" for p in probabilities[i]), json.dumps(extra)])
        if (len(self._pending_rows) >= self.commit_rows
                or time.monotonic() - self._last_commit >= self.commit_seconds):
            self.commit()

    def commit(self):
        if self._pending_rows and self._unimported:  # first the finished output's rows: then the journal has all
            self._import_output()
        rows, before = self._pending_rows, len(self._chunks)
        if rows:
            try:
                self._pending_rows = []  # before the write: a signal between a write and this had the rows
                # written again by `finish` (twice in the catalog, for good)
                self._write_chunk(rows)
            except BaseException:
                if len(self._chunks) == before:  # not renamed into place: still to be committed
                    self._pending_rows = rows + self._pending_rows
                raise
        self._last_commit = time.monotonic()

    def finish(self, metadata: dict) -> int:
        """Commit, write OUT and its errors file atomically, remove the journal; return the row count.

        A rerun of a finished run that classified nothing new (every input done, or failing again) leaves
        OUT as it is, metadata included (the run that made its rows): its rewrite had been the larger part
        of such a rerun (~50 s of a million-row catalog). The errors file is this run's, as always."""
        self.commit()
        if self._unimported and not self.output.exists():
            self._import_output()  # (deleted while this run worked: said there)
        if self._unimported and metadata.get("complete") == "true" and self._output_as_made():
            errors = errors_path(self.output).with_suffix(".tmp")
            try:
                self._write_errors(errors)
            except BaseException:
                remove_quietly(errors)
                self._lock.close()
                raise
            sync_to_disk(errors)
            errors.replace(errors_path(self.output))
            sync_to_disk(errors_path(self.output))  # and the rename
            self._remove()
            return self.resumed
        if self.older_crop and "run" in metadata:  # begun before the square-crop rule: the catalog says so
            metadata = {**metadata, "run": json.dumps({**json.loads(metadata["run"]), CROP_RULE_KEY: CROP_RULE_MIXED})}
        tmp_out = self.output.with_name(f".{self.output.name}.assembling{self.output.suffix}")
        errors = errors_path(self.output).with_suffix(".tmp")
        try:
            writer = self._assemble(tmp_out, metadata, errors)
            sync_to_disk(tmp_out, sidecar_path(tmp_out), errors)  # the rows are on disk before their journal goes
            tmp_out.replace(self.output)
            if sidecar_path(tmp_out).exists():
                sidecar_path(tmp_out).replace(sidecar_path(self.output))
            errors.replace(errors_path(self.output))
        except BaseException as exc:  # a full disk, a second Ctrl-C / SIGTERM while assembling, or a rename
            # refused (a folder where a file goes): the hidden files go (on a full disk they hold the space
            # the user is told to free), the rows are committed and the journal stays for a rerun
            remove_quietly(tmp_out, sidecar_path(tmp_out), *scratch_files(tmp_out), errors)
            self._lock.close()
            # name the files the user knows: the catalog where the error names none (ENOSPC) or a hidden
            # work file of it (a permission error named .c.csv.assembling.csv), the errors file for its own
            named = {str(tmp_out): self.output, str(sidecar_path(tmp_out)): sidecar_path(self.output),
                     str(errors): errors_path(self.output)}
            if isinstance(exc, OSError) and (exc.filename is None or str(exc.filename) in named):
                raise OSError(exc.errno, exc.strerror, str(named.get(str(exc.filename), self.output))) from exc
            raise
        sync_to_disk(self.output)  # and the renames
        self._remove()
        return writer.rows

    def _output_as_made(self) -> bool:
        """Whether the finished output already says what this run's catalog would: it describes itself (its
        run record: a CSV's metadata file lost while a journal stood had passed unseen, and the journal's
        fingerprint, the last record, would go), every input of its run was done (an interrupted run's
        says not, and its rerun writes it again), and a catalog begun before the square-crop rule says it
        mixes two crops (`older_crop`)."""
        metadata = self._read_output(lambda: read_catalog_metadata(self.output, self.format))
        try:
            run = json.loads(metadata.get("run", "null"))
        except ValueError:
            return False
        return (isinstance(run, dict) and str(metadata.get("complete", "true")).lower() == "true"
                and (not self.older_crop or run.get(CROP_RULE_KEY) == CROP_RULE_MIXED))

    def _remove(self):
        """OUT is complete: the journal goes in one rename (a kill while deleting it must not leave some
        chunks for a rerun to trust), then is deleted, holding the lock until it is gone."""
        doomed = self.dir.with_name(f".{self.dir.name}.done-{os.getpid()}")
        os.replace(self.dir, doomed)
        shutil.rmtree(doomed, onerror=_log_undeleted)
        self._lock.close()

    def _assemble(self, tmp_out: Path, metadata: dict, errors: Path):
        """Write the catalog into `tmp_out` and the errors file into `errors`; return the catalog's writer."""
        extra, lengths = describe_rows((row[0], row[1], self._columns(row)) for row in self.rows())
        writer = CatalogWriter(tmp_out, self.classes, metadata, self.format, extra, self.units, lengths,
                               self.descriptions)
        batch: list[list[str]] = []
        for row in self.rows():
            batch.append(row)
            if len(batch) == 4096:
                self._write(writer, batch)
                batch = []
        if batch:
            self._write(writer, batch)
        writer.close()
        self._write_errors(errors)
        return writer

    def _write_errors(self, errors: Path) -> None:
        try:
            error_writer = ErrorWriter(errors)
            for error in self.errors:
                error_writer.write(*error)
            error_writer.close()
        except OSError as exc:  # a full disk's error names no file: it is the errors file's, not the catalog's
            if exc.filename is None:
                raise OSError(exc.errno, exc.strerror, str(errors)) from exc
            raise

    def _columns(self, row) -> dict:
        return json.loads(row[2 + len(self.classes)]) if len(row) > 2 + len(self.classes) else {}

    def _write(self, writer, rows):
        k = len(self.classes)
        writer.write([r[0] for r in rows], [r[1] for r in rows], np.array([r[2:2 + k] for r in rows], dtype=np.float32),
                     [self._columns(r) for r in rows])

    def release(self):
        """Commit what is staged and let go of the lock, leaving the journal for a rerun."""
        self.commit()
        self._lock.close()


def _log_undeleted(function, path, exc_info) -> None:
    """A finished journal that cannot be deleted is left (the catalog is complete), and said."""
    log.warning("could not delete %s (%s); the catalog is complete, delete it by hand", path, exc_info[1])
