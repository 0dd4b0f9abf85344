"""Test-time augmentation over the dihedral group D4 (galaxies have no up, and no handedness
that matters for spiral vs elliptical): 4 rotations x 2 flips of each image, probabilities averaged.

The views are taken of the normalised (N, C, H, W) tensor: per-channel normalisation commutes
with rotations and flips, so this equals preprocessing each rotated image.
"""

from __future__ import annotations

import numpy as np


def d4_views(tensor):
    """The 8 D4 images of a (N, C, H, W) batch (square H == W): numpy, or torch on the GPU."""
    if not isinstance(tensor, np.ndarray):
        import torch

        rotations = [torch.rot90(tensor, turns, dims=(2, 3)) for turns in range(4)]
        return [view.contiguous() for rotated in rotations for view in (rotated, rotated.flip(3))]
    views = []
    for turns in range(4):
        rotated = np.rot90(tensor, turns, axes=(2, 3))
        views.append(np.ascontiguousarray(rotated))
        views.append(np.ascontiguousarray(rotated[..., ::-1]))
    return views


def run_d4(session, tensor) -> np.ndarray:
    """Mean class probabilities (N, K) over the 8 D4 views, in batches the session accepts."""
    views = d4_views(tensor)
    if isinstance(tensor, np.ndarray):
        views = np.concatenate(views)  # view-major: (8 N, C, H, W)
    else:
        import torch

        views = torch.cat(views)
    step = session.max_batch
    probs = np.concatenate([session.run(views[i:i + step]) for i in range(0, len(views), step)])
    return probs.reshape(8, len(tensor), -1).mean(axis=0).astype(np.float32)
