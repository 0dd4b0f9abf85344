"""Batch inference inside training (validation, teacher soft targets): torch, no engine.

The engine's backends serve `classify`; training needs the live network it is optimising,
so this small path stays here (the engine layer sits above galaxy and cannot be imported).
"""

from __future__ import annotations

import numpy as np
import torch

from galaxy.spec import InputSpec


def pick_device() -> tuple[torch.device, torch.dtype | None]:
    """(device, autocast dtype or None): bf16 where the hardware does it natively."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    if torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported():
        return torch.device("cpu"), torch.bfloat16
    return torch.device("cpu"), None


def d4_batch(x: torch.Tensor) -> torch.Tensor:
    """The 8 D4 views of a (N, C, H, W) batch, view-major: (8 N, C, H, W)."""
    rotations = [torch.rot90(x, turns, dims=(2, 3)) for turns in range(4)]
    return torch.cat([view for rotated in rotations for view in (rotated, rotated.flip(3))])


@torch.inference_mode()
def predict(network, cache: torch.Tensor, spec: InputSpec, device, amp_dtype, batch_size: int = 64,
            views: int = 1) -> np.ndarray:
    """Class probabilities of a cache of images.

    Args:
        network: the classifier (put in eval mode here).
        cache: (N, 3, spec.size, spec.size) float16/float32 display pixels in [0, 1].
        spec: supplies mean/std.
        device, amp_dtype: where to run, and the autocast dtype (None: fp32).
        batch_size: images per forward pass (times `views`).
        views: 1, or 8 to average the probabilities over the D4 rotations and flips.

    Returns:
        float32 (N, K) probabilities.
    """
    if views not in (1, 8):
        raise ValueError(f"views must be 1 or 8, got {views}")
    network.eval()
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    out = []
    for start in range(0, len(cache), batch_size):
        x = (cache[start:start + batch_size].float() - mean) / std
        n = len(x)
        if views == 8:
            x = d4_batch(x)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = network(x)
        probs = torch.softmax(logits.float(), dim=1).cpu().view(views, n, -1).mean(dim=0)
        out.append(probs.numpy())
    return np.concatenate(out)
