"""Assemble decoded inputs into batches that carry their ids.

The one last-batch rule (DALI names it `LastBatchPolicy.PARTIAL`): the last batch holds what is
left, never padded, so every row of every batch is a real input and no caller trims. Backends
with a static input shape (torch-compile, torch-cuda's CUDA graph) pad inside `Session.run`
and drop their padding rows there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Batch:
    """`tensor[k]` is the image of `ids[k]` / `paths[k]`.

    Attributes:
        ids: sample ids, length n_valid.
        paths: input paths, length n_valid.
        tensor: float32 (n_valid, C, H, W): numpy, or a torch CUDA tensor when a GPU pipeline
            decoded the images (only GPU backends are given those).
        n_valid: number of images (batch_size, or fewer in the last batch).
        columns: per image, the extra catalog columns (kept input columns, sky position).
        centres: per image, the cutout centre its headers give, or None (`Decoded.centre`), and
            `kept`: its catalog's own columns (`Decoded.kept`).
    """

    ids: list[str]
    paths: list[str]
    tensor: np.ndarray
    n_valid: int
    columns: list[dict] = field(default_factory=list)
    centres: list = field(default_factory=list)
    kept: list = field(default_factory=list)


def _assemble(group) -> Batch:
    if all(isinstance(d.tensor, np.ndarray) for d in group):
        tensor = np.stack([d.tensor for d in group])
    else:
        tensor = _stack_on_device([d.tensor for d in group])
    return Batch([d.id for d in group], [d.path for d in group], tensor, len(group), [d.columns for d in group],
                 [d.centre for d in group], [d.kept for d in group])


def _stack_on_device(tensors):
    """One torch CUDA batch from GPU-decoded images, plus any the reference reader decoded on the host."""
    import torch

    device = next(t.device for t in tensors if isinstance(t, torch.Tensor))
    return torch.stack([t if isinstance(t, torch.Tensor) else torch.from_numpy(t).to(device) for t in tensors])


def batches(decoded, batch_size: int, on_error):
    """Group a stream of `Decoded` into `Batch`es of `batch_size`; the last one is short.

    Failed inputs are handed to `on_error(decoded)` as they pass and never reach a batch.
    """
    group = []
    for item in decoded:
        if item.error is not None:
            on_error(item)
            continue
        group.append(item)
        if len(group) == batch_size:
            yield _assemble(group)
            group = []
    if group:
        yield _assemble(group)
