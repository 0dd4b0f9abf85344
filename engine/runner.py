"""The one runner: backend session + decode pipeline + batches (+ D4 TTA) -> probabilities.

Every command that classifies files goes through it: `galaxy classify` (engine/run.py), each
Ray actor (engine/ray_actor.py), `galaxy evaluate` (engine/evaluate.py) and the Python API
(galaxy/api.py). None of them builds a session, a pipeline or batches of its own.

    runner = Runner(model_dir, card, backend="onnxruntime", batch_size=32)
    for ids, paths, probabilities, columns in runner.run(items, on_error=failures.append):
        ...

Batches follow the one last-batch rule of engine/batching.py (the last batch is short, never
padded), so every row of `probabilities` belongs to a real input.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from engine import backends
from engine.batching import batches
from engine.listing import Item, iter_inputs, parse_band_columns
from engine.pipelines import open_pipeline
from engine.tta import run_d4
from galaxy.cores import usable_cores
from galaxy.io.bands import parse_bands
from galaxy.io.fits import hdu_value
from galaxy.io.framing import FEW, SAMPLE, card_framing, framing_report, nothing_measured
from galaxy.errors import UsageError
from galaxy.spec import MAX_BATCH

log = logging.getLogger(__name__)


# Images a CPU batch decoder (DALI) decodes per run of its graph, whatever the engine's batch (the
# batches are regrouped after decoding): its per-run costs spread over more images. Compact model
# end to end, 2-core Zen 5, 3,000 cutouts, one process per run: 64 against 32, int8 119,300 ->
# 125,100/min (3 pairs), fp32 75,600 -> 77,900 (2 pairs); 128 no better than 64.
CPU_DECODE_CHUNK = 64


def on_cpu(device) -> bool:
    """Whether a session's `device` is the CPU (torch says "cpu", ONNX Runtime its provider)."""
    return str(device) in ("cpu", "CPUExecutionProvider")


def open_decoder(decoder: str, spec, workers: int, batch_size: int, device, hdu=None):
    """The decode pipeline for engine batches of `batch_size` on `device`: on the CPU it decodes
    chunks of at least CPU_DECODE_CHUNK images (regrouped into batches after decoding), with two
    chunks' or four batches' worth decoded ahead, whichever is more."""
    chunk = max(batch_size, CPU_DECODE_CHUNK) if on_cpu(device) else batch_size
    return open_pipeline(decoder, spec, workers, depth=max(4 * batch_size, 2 * chunk), hdu=hdu, batch_size=chunk,
                         device=str(device))


class Failure(NamedTuple):
    """An input that could not be classified: the record every errors file holds, one per input.
    `id` is the catalog id, FITS OBJID or file stem the input would have had in the catalog."""

    id: str
    path: str
    stage: str
    reason: str


class Result(NamedTuple):
    """One batch of classified inputs, in input order.

    Attributes:
        ids: sample ids (catalog id, FITS OBJID or file stem; not yet made unique), length N.
        paths: input paths, length N.
        probabilities: float32 (N, K), in the card's class order.
        columns: per input, the extra catalog columns (kept input columns, sky position) as text.
    """

    ids: list[str]
    paths: list[str]
    probabilities: np.ndarray
    columns: list[dict]


def require_batch_size(batch_size: int) -> None:
    """Refuse a batch size below 1 (also before a `--ray` run starts its actors, which would each fail)."""
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: a batch holds at least 1 image")


_FORKED_AWAY: list = []  # a forked child's copies of its parent's batch decoders, kept from their destructors


class Runner:
    """A model ready to classify files: its backend session and a decode pipeline reading its InputSpec.

    Args:
        model_dir, card: the model (see `engine.artifacts.resolve_model`).
        backend: a backend name or "auto"; decoder: a pipeline name or "auto".
        batch_size: images per batch, at most the session's `max_batch`.
        threads: inference threads (0: on a CPU, one single-threaded stream per core for the
            `STREAMED` backends, else the backend's default); workers: decode threads (0: one per CPU).
        tta: average the 8 D4 views of each image.
        spec: the InputSpec to read with (default: the card's).
        hdu: FITS HDU index or EXTNAME (default: the first with image data).

    Raises:
        UsageError: a batch size below 1, an unknown backend or decoder.
    """

    def __init__(self, model_dir, card, backend: str = "auto", decoder: str = "auto", batch_size: int = 32,
                 threads: int = 0, workers: int = 0, tta: bool = False, spec=None, hdu=None):
        require_batch_size(batch_size)
        if batch_size > MAX_BATCH:  # before `auto` times the backends at it: no session runs more at once
            log.info("--batch-size %d: batches hold at most %d images; using %d", batch_size, MAX_BATCH, MAX_BATCH)
            batch_size = MAX_BATCH
        self.card, self.tta, self.spec = card, tta, spec or card.input_spec
        # the decode pipeline runs beside the backend on the same cores: no spin-waiting (BackendOptions)
        options = backends.BackendOptions(threads=threads, batch_size=batch_size, spin_wait=False)
        if not threads:  # one batch per core, each on one thread (see `streams`)
            options = backends.per_core(options)
        name = backends.pick(backend, card, model_dir, options)
        options = backends.options_for(name, options)  # GPU, int8, torch-compile: one batch at a time
        self.session = backends.load_chosen(backend, name, model_dir, card, options)
        # ONNX Runtime may have taken a GPU (onnxruntime-gpu installed): one batch at a time there
        self.streams = options.streams if on_cpu(self.session.device) else 1
        self.batch_size = min(batch_size, self.session.max_batch)
        self._decoder = (decoder, self.spec, workers or usable_cores(), self.batch_size, self.session.device, hdu)
        self.pipeline = open_decoder(*self._decoder)
        self._pid, self._lock, self._pipeline_busy = os.getpid(), threading.Lock(), False

    def _lease_pipeline(self):
        """(pipeline, shared) for one `run`: `pipeline` while no other run uses it, else a private one of
        the same kind (two threads, or two interleaved generators, driving one DALI graph got each other's
        images). In a forked child, the reference reader: DALI and CUDA do not survive a fork (a
        multiprocessing worker hung), ONNX Runtime and torch do."""
        if os.getpid() != self._pid:  # a forked child: the parent's lock may have been copied held
            self._pid, self._lock, self._pipeline_busy = os.getpid(), threading.Lock(), False
            if self.pipeline.name != "reference":
                log.warning("%s decoding does not survive a fork: this process (%d) decodes with the reference "
                            "reader (the same pixels to ~1e-6)", self.pipeline.name, self._pid)
                _FORKED_AWAY.append(self.pipeline)  # never destroyed here: its destructor waits for threads
                self._decoder = ("reference", *self._decoder[1:])  # that exist only in the parent
                self.pipeline = open_decoder(*self._decoder)
        with self._lock:
            if not self._pipeline_busy:
                self._pipeline_busy = True
                return self.pipeline, True
        return open_decoder(*self._decoder), False

    @classmethod
    def for_classify(cls, model_dir, card, config) -> Runner:
        """The runner of a ClassifyConfig: its backend, decoder, batching, TTA, `--bands`, `--crop-fraction`
        and `--hdu`."""
        return cls(model_dir, card, config.backend, config.decoder, config.batch_size, config.threads,
                   config.workers, config.tta, classify_spec(card, config), hdu_value(config.hdu))

    @property
    def backend(self) -> str:
        """The backend and precision really in use, e.g. "onnxruntime fp32"."""
        return f"{self.session.name} {self.session.precision}"

    def infer(self, tensor) -> np.ndarray:
        """float32 (N, C, H, W) (numpy, or torch CUDA for GPU sessions) -> float32 (N, K) probabilities."""
        return run_d4(self.session, tensor) if self.tta else self.session.run(tensor)

    def infer_all(self, tensors) -> np.ndarray:
        """float32 (N, C, H, W) ready tensors -> float32 (N, K) probabilities, in batches of `batch_size`,
        `streams` of them at once (one single-threaded batch per core on a CPU, as `run` does)."""
        parts = [tensors[i:i + self.batch_size] for i in range(0, len(tensors), self.batch_size)]
        if self.streams == 1 or len(parts) == 1:
            return np.concatenate([self.infer(part) for part in parts])
        with ThreadPoolExecutor(self.streams, thread_name_prefix="galaxy-infer") as pool:
            return np.concatenate(list(pool.map(self.infer, parts)))

    def run(self, items: Iterable[Item], on_error: Callable[[Failure], None],
            unique_id: Callable[[str], str] | None = None,
            on_centre: Callable[[str, dict, dict], None] | None = None) -> Iterator[Result]:
        """Classify `items` batch by batch, in input order.

        Inputs that cannot be read never reach a batch: each is handed to `on_error` as a
        `Failure` after the results of the batches before the one it was found in and before that
        batch's, so failures and results each come in input order.

        `unique_id` (e.g. `UniqueIds.take`) turns each decoded input's id (the catalog's, a FITS
        OBJID or the file stem) into the one it keeps, failed inputs included and strictly in
        input order, so an id does not depend on which other inputs failed: a file fixed and
        retried by a rerun gets the id a first run without the failure would have given it.

        `on_centre(id, kept, centre)` (e.g. `OffCentreRows.add`) is given, as each Result is handed
        out, every input of it whose headers give a cutout centre and whose catalog row kept columns
        (`kept`, as the catalog gives them): the classify runs, single or `--ray`, count rows whose
        catalog position is not their cutout's.

        With `streams` > 1 (a CPU with several cores) that many batches run at once, each on one
        thread: a core that finishes its batch takes the next one or decodes, where the threads of
        one batch would wait for each other at every layer while the decode pipeline holds a core.
        Measured (2-core Zen 5, compact model, 3,000 cutouts, DALI, one process per run, 3
        interleaved rounds): end to end ONNX Runtime fp32 67,500 -> 75,200 images/min, torch bf16
        62,100 -> 76,200; the full model unchanged (its engine is the limit); int8 slower, so it
        keeps one batch at a time (`backends.STREAMED`).
        """
        def failed(decoded):
            failure = Failure(decoded.id, decoded.path, decoded.error.stage, decoded.error.reason)
            if self.streams > 1:  # held until the batches before it are handed out
                pending.append(failure)
            else:
                on_error(failure)

        pending: deque = deque()  # Failures and (batch, future) pairs, in input order
        pipeline, shared = self._lease_pipeline()
        stream = pipeline.decode(items)
        decoded = stream if unique_id is None else (dataclasses.replace(d, id=unique_id(d.id)) for d in stream)
        try:
            if self.streams == 1:  # GPU backends among them: batches run in this thread, as they always did
                for batch in batches(decoded, self.batch_size, failed):
                    yield _result(batch, self.infer(batch.tensor), on_centre)
                return
            with ThreadPoolExecutor(self.streams, thread_name_prefix="galaxy-infer") as pool:
                for batch in batches(decoded, self.batch_size, failed):
                    pending.append((batch, pool.submit(self.infer, batch.tensor)))
                    yield from _deliver(pending, on_error, self.streams, on_centre)
                yield from _deliver(pending, on_error, 0, on_centre)
        finally:  # Ctrl-C, an error, a consumer that stops: the decode thread is stopped and joined here,
            # not when the garbage collector happens on it in some thread (which could be its own, and then
            # DALI's exit handler met a pipeline still decoding and the process aborted, exit -6)
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            if shared:
                with self._lock:
                    self._pipeline_busy = False


def _result(batch, probabilities, on_centre) -> Result:
    """A classified batch's Result; its inputs with a header centre and kept columns go to `on_centre` first."""
    if on_centre is not None:
        for ident, kept, centre in zip(batch.ids, batch.kept, batch.centres):
            if centre is not None and kept:
                on_centre(ident, kept, centre)
    return Result(batch.ids, batch.paths, probabilities, batch.columns)


def _deliver(pending: deque, on_error, in_flight: int, on_centre) -> Iterator[Result]:
    """Hand out the leading entries of `pending` in order: failures to `on_error`, finished batches
    as Results, waiting on the oldest batch while more than `in_flight` are queued (0: all)."""
    while pending:
        head = pending[0]
        if isinstance(head, Failure):
            on_error(pending.popleft())
            continue
        queued = sum(1 for entry in pending if not isinstance(entry, Failure))
        if not head[1].done() and queued <= in_flight:
            return
        batch, future = pending.popleft()
        yield _result(batch, future.result(), on_centre)


def classify_spec(card, config):
    """The InputSpec a classify run reads with: the card's, with `--bands` and `--crop-fraction` applied."""
    spec = card.input_spec.replace(fits_bands=parse_bands(config.bands)) if config.bands else card.input_spec
    if config.crop_fraction == "auto":
        return spec.replace(crop_fraction=measured_crop(card, config, spec))
    return spec.with_crop(config.crop_fraction)


def measured_crop(card, config, spec) -> float:
    """`--crop-fraction auto`: the centre crop that shows the inputs' galaxies at the scale the model was
    trained on, from the median Petrosian radius of the first `SAMPLE` inputs (listing order, so a
    resumed run measures the same ones) against the card's training framing.

    Raises:
        UsageError: the card records no training framing, the inputs are per-band catalog rows, or
            too few of the sampled cutouts show a galaxy above the noise.
    """
    card_framing(card)  # before listing or reading anything
    items = list(islice(iter_inputs(config.inputs, config.catalog, config.path_column, config.id_column,
                                    band_columns=parse_band_columns(config.band_columns)), SAMPLE))
    if any(item.bands for item in items):
        raise UsageError("--crop-fraction auto measures single-file cutouts; with --band-columns give the crop "
                         "as a number (measure one band's files with galaxy framing)")
    report = framing_report(card, [item.path for item in items], spec, config.workers, hdu_value(config.hdu))
    measured = report["measured"]
    if measured["measured"] == 0:
        raise UsageError(f"--crop-fraction auto: {nothing_measured(len(items), report['unreadable'])}; give the crop "
                         "as a number")
    if measured["measured"] < min(FEW, len(items)):
        raise UsageError(f"--crop-fraction auto: only {measured['measured']} of the first {len(items)} inputs show "
                         "a galaxy above the noise near the centre; give the crop as a number")
    log.info("--crop-fraction auto: the galaxies of the first %d inputs appear %.2fx the size the model was trained "
             "on (median Petrosian radius %.3f of the side against %.3f): reading a centre crop of %.3f (card: %g)",
             measured["measured"], report["scale"], measured["median"], report["training"]["median"],
             report["crop_fraction"], card.input_spec.crop_fraction)
    if report["at_crop_1"] is not None:  # (a crop of 1 had been taken without a word)
        log.warning("--crop-fraction auto: no crop shows these galaxies at the training scale: the whole cutout "
                    "(crop 1) still shows them %.2fx%s the size the model learned", report["at_crop_1"],
                    " or more" if report["lower_bound"] else "")
    return report["crop_fraction"]
