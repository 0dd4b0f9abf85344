"""Assemble decoded inputs into batches that carry their ids."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Batch:
    """`tensor[:n_valid]` are the images of `ids` / `paths`, in order; rows after are padding.

    Attributes:
        ids: sample ids, length n_valid.
        paths: input paths, length n_valid.
        tensor: float32 (N, C, H, W), N >= n_valid: numpy, or a torch CUDA tensor when a GPU
            pipeline decoded the images (only GPU backends are given those).
        n_valid: number of real images.
        columns: per image, the extra catalog columns (kept input columns, sky position).
    """

    ids: list[str]
    paths: list[str]
    tensor: np.ndarray
    n_valid: int
    columns: list[dict] = field(default_factory=list)


def _assemble(group, pad_to: int | None) -> Batch:
    n_valid = len(group)
    if all(isinstance(d.tensor, np.ndarray) for d in group):
        tensor = np.stack([d.tensor for d in group])
        if pad_to and n_valid < pad_to:
            tensor = np.concatenate([tensor, np.zeros((pad_to - n_valid, *tensor.shape[1:]), tensor.dtype)])
    else:
        tensor = _stack_on_device([d.tensor for d in group], pad_to)
    return Batch([d.id for d in group], [d.path for d in group], tensor, n_valid, [d.columns for d in group])


def _stack_on_device(tensors, pad_to: int | None):
    """One torch CUDA batch from GPU-decoded images, plus any the reference reader decoded on the host."""
    import torch

    device = next(t.device for t in tensors if isinstance(t, torch.Tensor))
    tensor = torch.stack([t if isinstance(t, torch.Tensor) else torch.from_numpy(t).to(device) for t in tensors])
    if pad_to and len(tensors) < pad_to:
        tensor = torch.cat([tensor, tensor.new_zeros((pad_to - len(tensors), *tensor.shape[1:]))])
    return tensor


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
