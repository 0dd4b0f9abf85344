"""Assemble decoded inputs into batches that carry their ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Batch:
    """`tensor[:n_valid]` are the images of `ids` / `paths`, in order; rows after are padding.

    Attributes:
        ids: sample ids, length n_valid.
        paths: input paths, length n_valid.
        tensor: float32 (N, C, H, W), N >= n_valid.
        n_valid: number of real images.
    """

    ids: list[str]
    paths: list[str]
    tensor: np.ndarray
    n_valid: int


def _assemble(group, pad_to: int | None) -> Batch:
    tensor = np.stack([d.tensor for d in group])
    n_valid = len(group)
    if pad_to and n_valid < pad_to:
        tensor = np.concatenate([tensor, np.zeros((pad_to - n_valid, *tensor.shape[1:]), tensor.dtype)])
    return Batch([d.id for d in group], [d.path for d in group], tensor, n_valid)


def batches(decoded, batch_size: int, on_error, pad_to: int | None = None):
    """Group a stream of `Decoded` into `Batch`es of `batch_size`.

    Failed inputs are handed to `on_error(decoded)` as they pass and never reach a batch.
    With `pad_to`, the last batch is padded with zeros to that size (static-shape engines).
    """
    group = []
    for item in decoded:
        if item.error is not None:
            on_error(item)
            continue
        group.append(item)
        if len(group) == batch_size:
            yield _assemble(group, pad_to)
            group = []
    if group:
        yield _assemble(group, pad_to)
