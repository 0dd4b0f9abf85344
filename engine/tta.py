"""Test-time augmentation over the dihedral group D4 (galaxies have no up, and no handedness
that matters for spiral vs elliptical): 4 rotations x 2 flips of each image, probabilities averaged.

The views are taken of the normalised (N, C, H, W) tensor: per-channel normalisation commutes
with rotations and flips, so this equals preprocessing each rotated image.
"""

from __future__ import annotations

import numpy as np


def d4_views(tensor: np.ndarray) -> list[np.ndarray]:
    """The 8 D4 images of a (N, C, H, W) batch (square H == W)."""
    views = []
    for turns in range(4):
        rotated = np.rot90(tensor, turns, axes=(2, 3))
        views.append(np.ascontiguousarray(rotated))
        views.append(np.ascontiguousarray(rotated[..., ::-1]))
    return views


def run_d4(session, tensor: np.ndarray) -> np.ndarray:
    """Mean class probabilities (N, K) over the 8 D4 views, in batches the session accepts."""
    views = np.concatenate(d4_views(tensor))  # view-major: (8 N, C, H, W)
    step = session.max_batch
    probs = np.concatenate([session.run(views[i:i + step]) for i in range(0, len(views), step)])
    return probs.reshape(8, len(tensor), -1).mean(axis=0).astype(np.float32)
