"""The reference decode pipeline: the reference reader (PIL / astropy) in a thread pool, in order, bounded."""

from __future__ import annotations

from engine.pipelines.base import decode_stream
from galaxy.spec import InputSpec


class ReferencePipeline:
    """Decodes with `galaxy.io.images.load_input`, `workers` at a time, `depth` in flight."""

    name = "reference"

    def __init__(self, spec: InputSpec, workers: int, depth: int, hdu=None):
        self.spec, self.workers, self.depth, self.hdu = spec, workers, depth, hdu

    def decode(self, items):
        return decode_stream(items, self.spec, self.workers, self.depth, self.hdu)


def create(spec: InputSpec, workers: int, depth: int, hdu=None, batch_size: int = 32) -> ReferencePipeline:
    """The reference reader (PIL for JPEG/PNG, astropy for FITS) file by file in `workers` threads:
    the preprocessing every other pipeline is held equal to.

    Returns:
        A pipeline whose batches are `(ids, float32 (N, C, H, W), n_valid)`.
    """
    del batch_size  # decodes file by file
    return ReferencePipeline(spec, workers, depth, hdu)
