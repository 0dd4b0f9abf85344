"""The run loop of `galaxy classify`: list -> decode -> batch -> infer -> write.

Decoding runs in a thread pool ahead of inference (bounded look-ahead), so reading the
next batch overlaps with classifying this one; results are written batch by batch.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from tqdm.auto import tqdm

from engine import backends
from engine.batching import batches
from engine.pipelines import open_pipeline
from engine.tta import run_d4
from engine.listing import iter_inputs
from galaxy import __version__
from galaxy.catalog import CatalogWriter, ErrorWriter, errors_path
from galaxy.config import ClassifyConfig, config_dict
from galaxy.errors import UsageError

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
    interrupted: bool = False

    @property
    def images_per_min(self) -> float:
        return 60.0 * self.classified / self.seconds if self.seconds > 0 else 0.0


def catalog_metadata(card, session, config: ClassifyConfig) -> dict:
    """Self-description stored with every catalog (keys of at most 8 characters, for FITS)."""
    return {
        "model": card.name, "weights": card.weights_sha256, "spec": json.dumps(card.input_spec.to_dict()),
        "version": f"galaxy-engine {__version__}", "backend": f"{session.name} {session.precision}",
        "device": session.device, "command": config.command, "config": json.dumps(config_dict(config)),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _hdu(value):
    return int(value) if value is not None and str(value).isdigit() else value


def classify(config: ClassifyConfig) -> Summary:
    """Classify every input of `config` into its output catalog; errors go to the errors file."""
    from engine.artifacts import resolve_model

    if not config.inputs and not config.catalog:
        raise UsageError("no inputs: give image files, folders, or --catalog FILE")
    missing = [value for value in config.inputs if not os.path.lexists(value)]
    if missing:  # checked before any output file is opened
        raise UsageError(f"input {missing[0]} does not exist" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    model_dir, card = resolve_model(config.model_dir)
    spec = card.input_spec
    workers = config.workers or os.cpu_count() or 1
    batch_size = config.batch_size
    if not 1 <= batch_size:
        raise UsageError(f"batch size {batch_size} must be at least 1")
    session = backends.load(config.backend, model_dir, card,
                            backends.BackendOptions(threads=config.threads, batch_size=batch_size))
    batch_size = min(batch_size, session.max_batch)
    pipeline = open_pipeline(config.decoder, spec, workers, depth=4 * batch_size, hdu=_hdu(config.hdu),
                             batch_size=batch_size)
    writer = CatalogWriter(config.output, card.classes, catalog_metadata(card, session, config))
    errors = ErrorWriter(errors_path(config.output))
    bar = tqdm(desc="classifying", unit="img", file=sys.stderr, disable=not config.progress, dynamic_ncols=True)

    def on_error(item):
        errors.write(item.path, item.error.stage, item.error.reason)
        log.debug("failed: %s", item.error)
        bar.update(1)

    started = time.perf_counter()
    interrupted = False
    try:
        items = iter_inputs(config.inputs, config.catalog, config.path_column)
        decoded = pipeline.decode(items)
        for batch in batches(decoded, batch_size, on_error):
            tensor = batch.tensor[: batch.n_valid]
            probabilities = run_d4(session, tensor) if config.tta else session.run(batch.tensor)[: batch.n_valid]
            writer.write(batch.ids, batch.paths, probabilities)
            bar.update(batch.n_valid)
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(f"{60 * writer.rows / elapsed:,.0f} img/min, {errors.count} failed")
    except KeyboardInterrupt:  # Ctrl-C: keep what is done, close the files properly
        interrupted = True
    finally:
        bar.close()
        writer.close()
        errors.close()
    seconds = time.perf_counter() - started
    if writer.rows == 0 and errors.count == 0 and not interrupted:
        raise UsageError(f"no images found in {list(config.inputs) + ([config.catalog] if config.catalog else [])}")
    return Summary(writer.rows, errors.count, seconds, str(config.output), str(errors.path),
                   f"{session.name} {session.precision}", session.device, pipeline.name, interrupted)


def quantize_model(config) -> str:
    """`galaxy quantize`: build the int8 model from real training images (a QuantizeConfig)."""
    from engine.artifacts import resolve_model
    from engine.quantize import quantize, training_paths

    model_dir, card = resolve_model(config.model_dir)
    paths = training_paths(model_dir, card, config.calibration, config.label_column, config.path_column,
                           config.images)
    return str(quantize(model_dir, card, paths))


def check_model_backends(config) -> dict:
    """`galaxy check-backends` (a CheckConfig)."""
    from engine.artifacts import resolve_model
    from engine.checks import check_backends

    model_dir, card = resolve_model(config.model_dir)
    return check_backends(model_dir, card, config.data, config.backends, label_column=config.label_column,
                          path_column=config.path_column)
