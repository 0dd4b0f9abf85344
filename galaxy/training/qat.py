"""Quantization-aware fine-tuning: weights that keep the fp32 model's labels once quantized to int8.

A copy of the network is fine-tuned with fake quantization at every Conv/Linear: int8 weights per
output channel (symmetric) and uint8 inputs per tensor (moving-average ranges), the U8S8 scheme
ONNX Runtime's static QDQ models run. The target is the ORIGINAL fp32 network's logits on the same
images (distillation), so the int8 model is trained to agree with the fp32 model it stands in for,
not to relearn the labels. (Fake-quantizing the BatchNorm outputs too, as ONNX Runtime quantizes
the folded convolutions' outputs, measured worse on the compact d2-96: 99.22% against 99.61%
agreement with fp32 on 1024 training images.) BatchNorm stays frozen: it folds into the
convolutions in ONNX as before, and per-channel weight quantization is unchanged by that scaling.

The fine-tuned fp32 network is exported to ONNX; engine/quantize.py then quantizes it (static
QDQ, calibrated on training images) and caches the result under the engine key + recipe; the
fine-tuned weights are never written to the model folder. The fine-tune is seeded (batch order,
views, torch), so the same inputs give the same weights up to floating-point summation order
(thread count).
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

log = logging.getLogger(__name__)

QAT_STEPS = 300  # optimizer steps of 32 images: ~2 minutes on 2 CPU cores for the compact model


class FakeQuantized(nn.Module):
    """A Conv2d or Linear whose input (uint8, per tensor) and weight (int8, per channel) are fake-quantized."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.input_quant = _activation_quant()
        self.weight_quant = FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-127,
                                         quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                         ch_axis=0, averaging_constant=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_quant(self.layer.weight)
        x = self.input_quant(x)
        if isinstance(self.layer, nn.Linear):
            return nn.functional.linear(x, weight, self.layer.bias)
        return self.layer._conv_forward(x, weight, self.layer.bias)


def _activation_quant() -> FakeQuantize:
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                        qscheme=torch.per_tensor_affine, averaging_constant=0.01)


def wrap(network: nn.Module) -> nn.Module:
    """Replace every Conv2d/Linear of `network` in place by its FakeQuantized form; return it."""
    for name, child in list(network.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(network, name, FakeQuantized(child))
        else:
            wrap(child)
    return network


def unwrap(network: nn.Module) -> nn.Module:
    """The plain layers back (their fine-tuned fp32 weights), in place; return `network`."""
    for name, child in list(network.named_children()):
        if isinstance(child, FakeQuantized):
            setattr(network, name, child.layer)
        else:
            unwrap(child)
    return network


def _d4(x: torch.Tensor, k: int) -> torch.Tensor:
    x = torch.rot90(x, k % 4, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if k >= 4 else x


def finetune(network: nn.Module, images: np.ndarray, steps: int = QAT_STEPS, batch: int = 32, lr: float = 1e-4,
             seed: int = 0) -> tuple[nn.Module, dict]:
    """Fake-quant fine-tune a copy of `network` to reproduce its own fp32 logits.

    Args:
        network: the fp32 network in eval mode (returned unchanged).
        images: float32 (N, C, H, W) preprocessed training and unlabeled images (never validation).
        steps: optimizer steps of `batch` images (random D4 views).
        lr: AdamW learning rate (small: the weights only have to move within a quantization step).
        seed: seeds the batch order, the views and torch.

    Returns:
        (fine-tuned fp32 network in eval mode, record of the fine-tune).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    teacher = network.eval()
    student = wrap(copy.deepcopy(network)).eval()  # eval: BatchNorm and dropout frozen, fake quant on
    for module in student.modules():
        if isinstance(module, FakeQuantize):
            module.train()  # observers still learn the ranges
    optimizer = torch.optim.AdamW([p for n, p in student.named_parameters() if "quant" not in n], lr=lr,
                                  weight_decay=0.0)
    started, losses = time.time(), []
    for step in range(steps):
        if step == steps // 2:  # freeze the ranges for the second half, as the int8 model's are fixed
            student.apply(torch.ao.quantization.disable_observer)
        rows = rng.choice(len(images), size=min(batch, len(images)), replace=False)
        x = _d4(torch.from_numpy(images[rows]), int(rng.integers(8)))
        with torch.no_grad():
            target = teacher(x)
        out = student(x)
        # centred logits: a shift common to all classes changes no probability
        loss = nn.functional.mse_loss(out - out.mean(1, keepdim=True), target - target.mean(1, keepdim=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            log.info("qat step %d/%d: loss %.5f", step + 1, steps, np.mean(losses[-50:]))
    record = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "images": len(images),
              "loss_first_50": round(float(np.mean(losses[:50])), 6), "loss_last_50": round(float(np.mean(losses[-50:])), 6),
              "seconds": round(time.time() - started, 1)}
    return unwrap(student).eval(), record


def export(network: nn.Module, example: np.ndarray, out: Path) -> Path:
    """The fine-tuned fp32 network as ONNX, with the export settings of galaxy.training.export."""
    from galaxy.training.export import write_onnx

    return write_onnx(network, torch.from_numpy(example[:2]), out)


def quantization_aware_onnx(model_dir, card, images: np.ndarray, out, steps: int = QAT_STEPS, seed: int = 0) -> dict:
    """Fine-tune the model of `model_dir` with fake quantization; write its fp32 ONNX to `out`; return the record."""
    from galaxy.training.model import load_network

    network, _ = load_network(model_dir, card)
    tuned, record = finetune(network, images, steps=steps, seed=seed)
    export(tuned, images, Path(out))
    return record
