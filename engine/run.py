"""`galaxy classify` on one machine: list -> the runner (decode, batch, infer) -> journal -> catalog.

The runner (engine/runner.py) decodes ahead of inference (bounded look-ahead), so reading the
next batch overlaps with classifying this one; the journal commits results batch by batch and
assembles the catalog at the end.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from engine import backends
from engine.fingerprint import earlier_backend
from engine.journal import Journal
from engine.listing import count_inputs, iter_inputs, parse_band_columns, require_inputs, with_catalog_columns
from engine.machine import installed_versions
from engine.runner import Runner
from galaxy.catalog.metadata import catalog_metadata, fingerprint_defaults, run_fingerprint
from galaxy.catalog.formats import check_kept_columns, output_format
from galaxy.catalog.column_notes import units_and_descriptions
from galaxy.catalog.write import errors_path, require_writable
from galaxy.config import ClassifyConfig
from galaxy.errors import BackendError, UsageError
from galaxy.files import same_file
from galaxy.io.masked import MaskedRows
from galaxy.io.sky import OffCentreRows
from galaxy.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Summary:
    """What a classify run did."""

    classified: int
    failed: int
    seconds: float
    output: str
    errors: str
    backend: str
    device: str
    decoder: str
    interrupted: KeyboardInterrupt | None = None  # what stopped the run early: Ctrl-C, or SIGTERM (`Terminated`)
    resumed: int = 0
    total: int = 0
    crop_fraction: float | None = None  # the centre crop read with, when --crop-fraction overrode the card's
    by_reference: int = 0  # inputs a batch decoder (DALI, nvJPEG) left to the reference reader, in this run

    @property
    def images_per_min(self) -> float:
        return 60.0 * self.classified / self.seconds if self.seconds > 0 else 0.0


def _continuing(config, fmt, model_dir, card):
    """The config the runner takes: with `--backend auto` rerun into an output begun before, the backend
    that began it, where auto may still choose it here (tasks of a job array timing the backends at once
    chose differently, and a resubmitted task was refused as using other settings)."""
    if config.backend != "auto" or config.overwrite:
        return config
    earlier = earlier_backend(config.output, fmt)
    if not backends.still_choosable(earlier, card, model_dir):
        return config
    log.info("continuing %s with the backend that began it: %s", config.output, earlier)
    return replace(config, backend=earlier)


def classify(config: ClassifyConfig) -> Summary:
    """Classify every input of `config` into its output catalog; errors go to the errors file."""
    from engine.artifacts import resolve_model

    if os.path.isdir(config.output):
        raise UsageError(f"output {config.output} is a folder: give a catalog file (.csv, .ecsv, .parquet, .fits), "
                         "or add --ray to write a folder of Parquet parts")
    band_columns = parse_band_columns(config.band_columns)
    if band_columns and not config.catalog:
        raise UsageError("--band-columns names columns of --catalog; give --catalog FILE too")
    fmt = output_format(config.output, config.output_format)
    require_inputs(config.inputs, config.catalog, config.path_column, config.id_column, config.keep_columns,
                   band_columns, fmt)
    config, column_defaults = with_catalog_columns(config, band_columns)  # recorded and compared as read
    require_writable(config.output, config.inputs, config.catalog, fmt)
    model_dir, card = resolve_model(config.model_dir)
    check_kept_columns(config.keep_columns, fmt, card.classes)  # its p_<class> columns, before the engine loads
    runner = Runner.for_classify(model_dir, card, _continuing(config, fmt, model_dir, card))
    session = runner.session
    units, descriptions = units_and_descriptions(config.catalog, config.keep_columns)  # of the kept columns
    journal = Journal(config.output, card.classes, run_fingerprint(card, session, config, runner.spec),
                      config.overwrite, config.commit_every, config.output_format, units, config.commit_seconds,
                      fingerprint_defaults(card) | column_defaults, descriptions)
    if journal.resumed:
        log.info("resuming %s: %d images already classified are skipped", config.output, journal.resumed)
    bar = progress("classifying", "img", enabled=config.progress)
    counter = None  # the bar's total: with no bar shown (--quiet) not counted, which a finished run's rerun had
    if config.progress:  # waited up to a second for (1.2 of its 3.6 s over 50,000 done rows, 2-core Zen 4)
        counter = threading.Thread(target=_count_total, args=(bar, config, band_columns, journal), daemon=True)
        counter.start()
    classified = 0
    off_centre = OffCentreRows(units=units)  # rows whose catalog position is not their cutout's centre
    masked = MaskedRows()  # rows whose crop was much masked (filled)

    def on_error(failure):
        journal.errors.append(failure)
        log.debug("failed: %s: %s", failure.path, failure.reason)
        bar.update(1)

    started = time.perf_counter()
    interrupted, finished = None, False
    try:
        items = (item for item in iter_inputs(config.inputs, config.catalog, config.path_column, config.id_column,
                                              config.keep_columns, band_columns)
                 if not journal.is_done(item.path, item.id, item.bands) and not _is_output(item.path, config.output))
        for result in runner.run(items, on_error, journal.take_id, off_centre.add):
            broken = ~np.isfinite(result.probabilities).all(axis=1)
            if broken.any():  # never committed: a NaN row is no classification (and a rerun would call it damaged)
                raise BackendError(f"the model's outputs are not finite for {int(broken.sum())} of a batch of "
                                   f"{len(broken)} (first: {result.paths[int(np.argmax(broken))]}): its weights are "
                                   f"broken or the backend overflowed ({runner.backend}); the rows before this batch "
                                   "are kept for a rerun")
            journal.add(*result)
            for ident, columns in zip(result.ids, result.columns):
                masked.add(ident, columns)
            classified += len(result.ids)
            bar.update(len(result.ids))
            bar.set_postfix_str(f"{len(journal.errors)} failed")
        finished = True
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep what is done, write the catalog properly
        interrupted = exc
    finally:
        if counter is not None:
            counter.join(timeout=1)  # counting is far cheaper than classifying: done by now, bar a huge catalog
        bar.close()
        if finished or interrupted is not None:
            try:
                total = journal.finish(catalog_metadata(card, session, config, runner.spec, complete=finished,
                                                        decoder=runner.pipeline.name, software=installed_versions()))
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM (again, or first) while the catalog was written
                log.warning("interrupted%s while %s was written: the rows classified so far are kept in %s; rerun "
                            "the same command to go on (it writes the catalog)", " again" if interrupted else "",
                            config.output, journal.dir)
                raise
        else:  # an unexpected error: the committed rows stay for a rerun
            journal.release()
    seconds = time.perf_counter() - started
    for line in [*off_centre.warnings(), *masked.warnings()]:  # warnings: the rows are written, the exit status stays
        log.warning("%s", line)
    return Summary(classified, len(journal.errors), seconds, str(config.output), str(errors_path(config.output)),
                   runner.backend, session.device, runner.pipeline.name, interrupted,
                   journal.resumed, total, None if config.crop_fraction is None else runner.spec.crop_fraction,
                   getattr(runner.pipeline, "by_reference", 0))


def _is_output(path: str, output: str) -> bool:
    """Whether an input is the catalog being written: a FITS catalog (or `--format csv -o x.jpeg`) in an
    input folder was listed as an input by the rerun, and failed as one (exit 3)."""
    return os.path.basename(path) == os.path.basename(output) and same_file(path, output)


def _count_total(bar, config: ClassifyConfig, band_columns, journal: Journal) -> None:
    """Give the progress bar its total (and so an ETA) while the run works: the inputs are
    counted by a second, cheap listing in this thread, less those a resumed run skips (`Journal.count_new`)."""
    try:
        if journal.resumed:
            items = iter_inputs(config.inputs, config.catalog, config.path_column, config.id_column, (), band_columns)
            bar.total = journal.count_new(item for item in items if not _is_output(item.path, config.output))
        else:
            bar.total = count_inputs(config.inputs, config.catalog, config.path_column, band_columns)
    except (OSError, UsageError) as exc:  # the run itself reports a bad input; the bar just has no total
        log.debug("no progress total: %s", exc)
