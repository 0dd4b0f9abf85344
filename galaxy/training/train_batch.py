"""One training step's input and loss: the augmented, normalised batch drawn from the in-memory caches
(moved to the GPU when training there), the class-weighted label loss plus the soft-target loss, and
the scale-consistency loss between a galaxy and its larger view. `galaxy.training.train` runs the steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from galaxy.training.augment import geometric_views, larger_view_crops, photometric, view_crops
from galaxy.config import TrainConfig
from galaxy.training.soft_targets import soft_target_loss
from galaxy.training.train_data import TrainingData


def _batch_loss(logits, labels, targets, class_weights, config: TrainConfig) -> torch.Tensor:
    """Class-weighted cross entropy on the labelled rows, plus the soft-target loss on all rows."""
    logits = logits.float()
    labelled = labels >= 0
    loss = logits.new_zeros(())
    if bool(labelled.any()):
        loss = F.cross_entropy(logits[labelled], labels[labelled], weight=class_weights)
    if targets is not None:
        loss = loss + config.soft_weight * soft_target_loss(logits, targets, config.soft_temperature, class_weights)
    return loss


def scale_consistency_loss(anchor_logits: torch.Tensor, larger_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_anchor || p_larger), the anchor's probabilities held fixed (as UDA and FixMatch hold the weakly
    augmented view): the network learns to call a galaxy shown larger what it calls it at the training scale.

    Args:
        anchor_logits, larger_logits: (B, K) logits of the same galaxies, the second view 1.1-1.5x larger.

    Returns:
        scalar float32, mean over the batch.
    """
    anchor = F.softmax(anchor_logits.detach().float(), dim=1)
    return (anchor * (torch.log(anchor.clamp_min(1e-8)) - F.log_softmax(larger_logits.float(), dim=1))).sum(1).mean()


def _training_batch(data: TrainingData, idx, config: TrainConfig, generator, mean, std, device) -> torch.Tensor:
    """Augmented, normalised float32 (B, 3, size, size) channels_last views of pool images `idx`; with
    `--scale-consistency`, (2B, ...): then rows B.. show the same galaxies 1.1-1.5x larger (own augmentation)."""
    zoom = config.zoom_range if "zoom" in config.augment else None
    on = data.pool_cache.device  # the caches lie on the GPU when training there (`_caches_to`)
    fields = data.pool_cache[idx.to(on)]
    if data.fits_cache is not None:  # some labelled samples as the FITS path shows their flux
        labelled = idx < len(data.fits_cache)
        chosen = labelled & (torch.rand(len(idx), generator=generator) < config.fits_probability)
        view = torch.randint(0, data.fits_cache.shape[1], (len(idx),), generator=generator)
        if chosen.any():
            fields = fields.clone()
            fields[chosen.to(on)] = data.fits_cache[idx[chosen].to(on), view[chosen].to(on)]
    framing = data.pool_framing[idx] if data.pool_framing is not None else None
    crop = view_crops(len(idx), config.crop_fraction, data.cache_fraction, zoom, generator, framing,
                      config.apparent_size)
    x = geometric_views(fields, config.size, config.crop_fraction, data.cache_fraction, zoom,
                        "rotate" in config.augment, config.jitter, generator, crop=crop)
    x = photometric(x, config.augment, generator)
    if config.scale_consistency:
        larger = geometric_views(fields, config.size, config.crop_fraction, data.cache_fraction, zoom,
                                 "rotate" in config.augment, config.jitter, generator,
                                 crop=larger_view_crops(crop, generator))
        x = torch.cat([x, photometric(larger, config.augment, generator)])
    return ((x - mean) / std).to(device).contiguous(memory_format=torch.channels_last)


def _caches_to(data: TrainingData, device: torch.device) -> None:
    """On a GPU, the training caches move there once and every batch is augmented there: the host
    would take longer to resample and perturb a batch than the GPU takes to learn from it."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True  # one input shape throughout: the fastest kernels are found once
    data.pool_cache = data.pool_cache.to(device)
    if data.fits_cache is not None:
        data.fits_cache = data.fits_cache.to(device)
