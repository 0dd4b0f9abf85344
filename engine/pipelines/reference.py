"""The reference decode pipeline: the reference reader in a thread pool, in order, bounded."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from engine.listing import Item
from engine.queues import chunks, prefetch
from galaxy.images import stem_id
from galaxy.errors import ImageReadError
from galaxy.images import load_band_input, load_input
from galaxy.spec import InputSpec


@dataclass
class Decoded:
    """One decoded input: a (C, H, W) float32 tensor, or the reason it failed, and the
    columns that go into its catalog row beside the probabilities."""

    id: str
    path: str
    tensor: np.ndarray | None = None
    error: ImageReadError | None = None
    columns: dict = field(default_factory=dict)

    @classmethod
    def of(cls, item: Item, tensor=None, error=None, meta: dict | None = None) -> Decoded:
        """The Decoded of an item: id from the catalog, else the header's OBJID, else the file
        stem; columns from the catalog, plus the header's sky position unless the catalog has one."""
        meta = meta or {}
        columns = dict(item.columns)
        for key in ("ra", "dec"):
            if key in meta and key not in columns:
                columns[key] = repr(float(meta[key]))
        first = item.bands[0][1] if item.bands else item.path
        return cls(item.id or meta.get("objid") or stem_id(first), item.path, tensor, error, columns)


def decode_item(item: Item, spec: InputSpec, hdu=None) -> Decoded:
    """Read and preprocess one input; failures become a `Decoded` with `error` set."""
    try:
        tensor, meta = load_band_input(item.bands, spec, hdu) if item.bands else load_input(item.path, spec, hdu)
    except ImageReadError as exc:
        return Decoded.of(item, error=exc)
    except (OSError, ValueError, MemoryError) as exc:  # anything the readers did not foresee
        return Decoded.of(item, error=ImageReadError(item.path, f"{type(exc).__name__}: {exc}", stage="decode"))
    return Decoded.of(item, tensor=tensor, meta=meta)


def bounded_map(fn, iterable, workers: int, depth: int):
    """Like `executor.map`, in order, but at most `depth` items in flight.

    The input iterable is consumed lazily, so memory does not grow with its length.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = collections.deque()
        for value in iterable:
            pending.append(pool.submit(fn, value))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def decode_stream(items, spec: InputSpec, workers: int, depth: int, hdu=None):
    """Decoded inputs, in input order, decoded `workers` at a time."""
    return bounded_map(lambda item: decode_item(item, spec, hdu), items, workers, depth)


class ReferencePipeline:
    """Decodes with `galaxy.images.load_input`, `workers` at a time, `depth` in flight."""

    name = "reference"

    def __init__(self, spec: InputSpec, workers: int, depth: int, hdu=None):
        self.spec, self.workers, self.depth, self.hdu = spec, workers, depth, hdu

    def decode(self, items):
        return decode_stream(items, self.spec, self.workers, self.depth, self.hdu)


def create(spec: InputSpec, workers: int, depth: int, hdu=None, batch_size: int = 32) -> ReferencePipeline:
    del batch_size  # decodes file by file
    return ReferencePipeline(spec, workers, depth, hdu)


class ChunkedPipeline:
    """Base of the batch decoders (DALI, nvJPEG): `Item`s in chunks of `batch_size`, `Decoded` out in order.

    A subclass sets `spec`, `workers`, `depth`, `hdu`, `batch_size` and implements
    `_chunk(chunk) -> list[Decoded | None]`; every None (a file it does not take, or one it
    rejected) is decoded by the reference reader, so a bad file gets the reference reader's reason.
    """

    def _decode(self, items):
        for chunk in chunks(items, self.batch_size):
            results = self._chunk(chunk)
            rest = [k for k, decoded in enumerate(results) if decoded is None]
            retried = decode_stream([chunk[k] for k in rest], self.spec, self.workers, 2 * self.workers, self.hdu)
            for k, decoded in zip(rest, retried):
                results[k] = decoded
            yield from results

    def decode(self, items):
        """Decoded items in input order, decoded in a background thread ahead of the consumer."""
        return prefetch(self._decode(items), self.depth)
