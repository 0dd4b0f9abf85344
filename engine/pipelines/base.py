"""What every decode pipeline shares: the `Decoded` record, the per-file reference decode every
pipeline falls back to, the bounded in-order thread map, the base of the batch decoders
(`ChunkedPipeline`) and the JPEG sniffing that tells which files a batch decoder takes
(`read_jpeg`, with galaxy.io.jpeg's questions).

One pipeline per module beside this one (reference, dali, dali_gpu, nvjpeg), each with
`create(spec, workers, depth, hdu, batch_size)`; engine/pipelines/__init__.py picks one by name.
"""

from __future__ import annotations

import collections
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from engine.listing import Item
from engine.queues import chunks, prefetch
from galaxy.catalog.formats import MASKED_COLUMN
from galaxy.errors import ImageReadError
from galaxy.io.images import load_band_input, load_input, raster_refusal, stem_id
from galaxy.io.jpeg import jpeg_frame
from galaxy.spec import InputSpec


@dataclass
class Decoded:
    """One decoded input: a (C, H, W) float32 tensor, or the reason it failed, the columns that
    go into its catalog row beside the probabilities, and `centre`: {"ra", "dec"} (ICRS degrees) of
    the cutout centre its headers give, or None, with `kept`, the catalog's own columns (what its
    position is checked against the centre with: `galaxy.io.sky.OffCentreRows`)."""

    id: str
    path: str
    tensor: np.ndarray | None = None
    error: ImageReadError | None = None
    columns: dict = field(default_factory=dict)
    centre: dict | None = None
    kept: dict = field(default_factory=dict)

    @classmethod
    def of(cls, item: Item, tensor=None, error=None, meta: dict | None = None) -> Decoded:
        """The Decoded of an item: id from the catalog, else the header's OBJID, else the file
        stem; columns from the catalog, plus the header's sky position unless the catalog has one
        (the header's is kept as `centre` either way) and a FITS input's `masked_fraction`."""
        meta = meta or {}
        columns = dict(item.columns)
        for key in ("ra", "dec"):
            if key in meta and key not in columns:
                columns[key] = repr(float(meta[key]))
        if MASKED_COLUMN in meta:  # a FITS input's; float text ("0.0") whatever its value, as a column of floats
            columns[MASKED_COLUMN] = repr(round(float(meta[MASKED_COLUMN]), 6))
        first = item.bands[0][1] if item.bands else item.path
        centre = {"ra": meta["ra"], "dec": meta["dec"]} if "ra" in meta and "dec" in meta else None
        return cls(item.id or meta.get("objid") or stem_id(first), item.path, tensor, error, columns, centre,
                   item.columns)


# A normalised channel's spread across a sample that marks it as possibly blank: BLANK_SPREAD in display
# units over a channel's std (0.1 for the shipped models), so a blank crop resampled in float32 (DALI's
# and torch's antialiased resize leave ~1e-7) is caught and a faint galaxy is left to the reference reader.
BLANK_TENSOR_SPREAD = 1e-3


def blank_samples(tensors) -> list[bool]:
    """Per sample of a normalised batch (N, C, H, W), numpy or torch, whether every channel is flat to
    BLANK_TENSOR_SPREAD: possibly a blank cutout, which the batch decoders hand to the reference reader
    to refuse with its reason, or to classify (`galaxy.io.images.blank_reason` decides). On a GPU one
    small copy per batch."""
    spread = tensors.reshape(tensors.shape[0], tensors.shape[1], -1)
    if isinstance(spread, np.ndarray):
        return list((spread.max(axis=2) - spread.min(axis=2) <= BLANK_TENSOR_SPREAD).all(axis=1))
    return (spread.amax(dim=2) - spread.amin(dim=2) <= BLANK_TENSOR_SPREAD).all(dim=1).tolist()


def decode_item(item: Item, spec: InputSpec, hdu=None) -> Decoded:
    """Read and preprocess one input; failures become a `Decoded` with `error` set."""
    try:
        tensor, meta = load_band_input(item.bands, spec, hdu) if item.bands else load_input(item.path, spec, hdu)
    except ImageReadError as exc:
        return Decoded.of(item, error=exc)
    except Exception as exc:  # anything the readers did not foresee belongs to this file, never ends the run
        return Decoded.of(item, error=ImageReadError(item.path, f"{type(exc).__name__}: {exc}", stage="decode"))
    return Decoded.of(item, tensor=tensor, meta=meta)


def bounded_map(fn, iterable, workers: int, depth: int):
    """Like `executor.map`, in order, but at most `depth` items in flight.

    The input iterable is consumed lazily, so memory does not grow with its length. Closed early (the
    consumer stops: Ctrl-C, SIGTERM, an error), the items not yet started are dropped, not decoded: a
    `with` block's shutdown waited for all `depth` of them (up to 128 one-second FITS decodes, past a
    batch scheduler's grace period before its SIGKILL).
    """
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        pending = collections.deque()
        for value in iterable:
            pending.append(pool.submit(fn, value))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # the running ones finish (at most `workers`)


def decode_stream(items, spec: InputSpec, workers: int, depth: int, hdu=None):
    """Decoded inputs, in input order, decoded `workers` at a time."""
    return bounded_map(lambda item: decode_item(item, spec, hdu), items, workers, depth)


class ChunkedPipeline:
    """Base of the batch decoders (DALI, nvJPEG): `Item`s in chunks of `batch_size`, `Decoded` out in order.

    A subclass sets `spec`, `workers`, `depth`, `hdu`, `batch_size` and implements
    `_chunk(chunk) -> list[Decoded | None]`; every None (a file it does not take, or one it
    rejected) is decoded by the reference reader, so a bad file gets the reference reader's reason.
    `by_reference` counts the inputs the reference reader decoded (FITS on the CPU, PNG, ...), so the
    summary says what really decoded.
    """

    by_reference = 0

    def _decode(self, items):
        for chunk in chunks(items, self.batch_size):
            results = self._chunk(chunk)
            rest = [k for k, decoded in enumerate(results) if decoded is None]
            retried = decode_stream([chunk[k] for k in rest], self.spec, self.workers, 2 * self.workers, self.hdu)
            for k, decoded in zip(rest, retried):
                results[k] = decoded
                self.by_reference += decoded.error is None
            yield from results

    def decode(self, items):
        """Decoded items in input order, decoded in a background thread ahead of the consumer."""
        return prefetch(self._decode(items), self.depth)


def read_jpeg(path) -> bytes | None:
    """The file's bytes when it is a whole JPEG a batch decoder takes (1 or 3 components, nothing
    `raster_refusal` refuses: its size, its image data) and square, else None (the
    reference reader then takes it, or words its refusal: PNG, CMYK JPEG, FITS, unreadable, truncated
    or not regular files, images too small to be cutouts or too large to decode, and non-square cutouts,
    whose square crop `galaxy.io.images.crop_resize` takes)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open, /dev/zero fill memory
            return None
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    frame = jpeg_frame(data)
    # square only: the reference reader crops a non-square cutout's square from its longer side (crop_resize)
    square = frame is not None and frame[1] == frame[2]
    return data if square and frame[0] in (1, 3) and raster_refusal(data) is None else None
