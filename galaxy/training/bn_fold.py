"""Conv + BatchNorm folds of an ONNX export, computed the same on every CPU.

torch's TorchScript exporter folds each eval-mode BatchNorm into the Conv before it (its
`eval_peephole` pass: scale = gamma / sqrt(var + eps), W' = W * scale, b' = beta - mean * scale)
with torch's own CPU kernels, and torch's float32 `sqrt` goes through MKL's vector math, whose
result depends on the CPU MKL runs on: on an Intel AVX-512 Xeon a few channels' scales come out
one float32 step away from the ones an AMD EPYC gives (measured 2026-12-01: 31 of the compact
model's 40 folded Convs differed somewhere). The fp32 ONNX then differs by CPU, and so does an
int8 model built from it, so the shipped int8 recipe (`engine.int8_models`) could not rebuild the
model its check had run on. Here each folded value is computed again from the network's own
parameters in the exporter's order of operations with numpy's float32 arithmetic, which is IEEE
(correctly rounded, `sqrt` included) on every CPU, and written over the exporter's. Only values
within a few float32 steps of the exporter's are replaced; anything else means the export is not
the fold described here, and it is refused rather than altered.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from galaxy.errors import ModelError

ULPS = 8  # how far (in float32 steps of the terms) the exporter's fold may sit from the exact one


def fold_pairs(network: torch.nn.Module, example: torch.Tensor) -> list:
    """The network's Conv2d modules in the order its forward pass calls them, each with the
    BatchNorm2d that takes its output (None where none does): the order the exporter writes them."""
    calls = []

    def hook(module, inputs, output):
        calls.append((module, inputs[0], output))

    handles = [module.register_forward_hook(hook) for module in network.modules()
               if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    try:
        with torch.inference_mode():
            network(example)
    finally:
        for handle in handles:
            handle.remove()
    pairs = []
    for index, (module, _, output) in enumerate(calls):
        if isinstance(module, torch.nn.Conv2d):
            after = calls[index + 1] if index + 1 < len(calls) else None
            norm = after[0] if after and isinstance(after[0], torch.nn.BatchNorm2d) and after[1] is output else None
            pairs.append((module, norm))
    return pairs


class Fold(NamedTuple):
    weight: np.ndarray  # float32, the Conv's weight shape
    bias: np.ndarray  # float32 (C_out,)
    terms: tuple  # the two float32 (C_out,) terms the bias is the sum or difference of: its rounding's scale


def exact_fold(conv: torch.nn.Conv2d, norm: torch.nn.BatchNorm2d) -> Fold:
    """The weight and bias of `conv` followed by eval-mode `norm`, float32, in the exporter's order of
    operations: scale = gamma / sqrt(var + eps); W * scale per output channel; (b - mean) * scale +
    beta where the Conv has a bias, else beta - mean * scale."""
    f32 = np.float32

    def array(tensor):
        return tensor.detach().cpu().numpy().astype(f32)

    var = array(norm.running_var)
    gamma = array(norm.weight) if norm.weight is not None else np.ones_like(var)  # affine=False: the exporter's 1 and 0
    beta = array(norm.bias) if norm.bias is not None else np.zeros_like(var)
    scale = gamma / np.sqrt(var + f32(norm.eps))
    weight = array(conv.weight) * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    mean = array(norm.running_mean)
    if conv.bias is not None:
        product = (array(conv.bias) - mean) * scale
        bias = product + beta
    else:
        product = mean * scale
        bias = beta - product
    return Fold(weight.astype(f32), bias.astype(f32), (product, beta))


def _near(exact: np.ndarray, exported: np.ndarray, *terms: np.ndarray) -> bool:
    """Whether the exporter's values are the exact ones but for rounding: within ULPS float32 steps
    of the largest term each value was computed from (a bias is a difference of two such terms)."""
    if exact.shape != exported.shape:
        return False
    step = np.maximum.reduce([np.spacing(np.abs(term).astype(np.float32)) for term in (exact, *terms)])
    with np.errstate(invalid="ignore"):  # broken weights (NaN, inf) are the same where both have them: the
        # export goes on, and its parity check says what is wrong with the model
        same = (exact == exported) | (np.isnan(exact) & np.isnan(exported))
        return bool(np.all(same | (np.abs(exact.astype(np.float64) - exported) <= ULPS * step)))


def make_folds_exact(network: torch.nn.Module, example: torch.Tensor, path) -> int:
    """Rewrite the folded Conv weights and biases of the ONNX file `path`, exported from `network`
    (eval mode) with `example`, with `exact_fold`'s values; return how many Convs were folded.

    Raises:
        ModelError: the file's Convs are not the network's in call order, or a folded value is not
            the fold of the network's parameters (the file is left as the exporter wrote it).
    """
    import onnx
    from onnx import numpy_helper

    pairs = fold_pairs(network, example)
    if not any(norm is not None for _, norm in pairs):
        return 0  # nothing for the exporter to fold (a network with its BatchNorms already fused, as QAT's)
    model = onnx.load(str(path))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    if len(convs) != len(pairs):
        raise ModelError(f"cannot check the BatchNorm folds of {path}: {len(convs)} Conv nodes, "
                         f"{len(pairs)} Conv2d calls in the network")
    folded = 0
    for node, (conv, norm) in zip(convs, pairs):
        if norm is None or len(node.input) < 2 or node.input[1] not in initializers:
            continue  # no BatchNorm after it, or weights computed in the graph: the exporter folds parameters only
        weight = numpy_helper.to_array(initializers[node.input[1]])
        raw = conv.weight.detach().cpu().numpy().astype(np.float32)
        if weight.shape == raw.shape and np.array_equal(weight, raw):
            continue  # not folded (the Conv's output is used elsewhere too)
        fold = exact_fold(conv, norm)
        bias = numpy_helper.to_array(initializers[node.input[2]]) if len(node.input) > 2 and \
            node.input[2] in initializers else None
        if bias is None or not (_near(fold.weight, weight) and _near(fold.bias, bias, *fold.terms)):
            raise ModelError(f"cannot check the BatchNorm folds of {path}: Conv {node.name}'s folded weights are "
                             "not the fold of the network's Conv and BatchNorm")
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(fold.weight, node.input[1]))
        initializers[node.input[2]].CopyFrom(numpy_helper.from_array(fold.bias, node.input[2]))
        folded += 1
    if folded:
        onnx.save(model, str(path))
    return folded
