"""`galaxy export`: the model as ONNX, checked against PyTorch on real images.

The export is pinned: TorchScript-based exporter (`dynamo=False`), opset `ONNX_OPSET`,
constant folding on, a dynamic batch axis, tensor names from `galaxy.spec`, and its Conv +
BatchNorm folds computed again the same on every CPU (`galaxy.training.bn_fold`). After export
the graph passes `onnx.checker`, then ONNX Runtime (CPU, fp32) and PyTorch (fp32) classify
the same preprocessed real images; the export is refused when the class probabilities
differ by more than the tolerance anywhere.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from galaxy.evaluation.calibration import softmax
from galaxy.card import ONNX_EXPORTER, ONNX_FILE, ONNX_OPSET, SAMPLES_DIR, ModelCard, file_sha256, load_card
from galaxy.files import writable_folder, write_atomically
from galaxy.errors import ImageReadError, ModelError, UsageError
from galaxy.io.images import is_image_path, load_input
from galaxy.spec import INPUT_NAME, OUTPUT_NAME
from galaxy.training.bn_fold import make_folds_exact

log = logging.getLogger(__name__)

MIN_OPSET = 7  # torch.onnx's oldest; 5 and 6 write BatchNormalization forms the checker or ONNX Runtime refuse
EXPORTER = ONNX_EXPORTER
PARITY_TOLERANCE = 1e-4


def max_opset() -> int:
    """The newest opset the installed torch.onnx writes (23 in torch 2.14; newer ones it refuses)."""
    from torch.onnx import _constants  # torch has no public name for it

    return _constants.ONNX_MAX_OPSET


def write_onnx(network: torch.nn.Module, example: torch.Tensor, path, opset: int = ONNX_OPSET) -> Path:
    """The one ONNX export of a network: the tensor names of `galaxy.spec`, a dynamic batch axis, and
    the BatchNorm folds of `galaxy.training.bn_fold.make_folds_exact` (the same file on every CPU).

    Args:
        network: in eval mode; example: a float32 (N, C, H, W) batch of the input size.
        path: the .onnx file to write.
    """
    with torch.inference_mode():
        torch.onnx.export(network, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    make_folds_exact(network, example, path)
    return Path(path)


def _parity_batch(images, spec) -> np.ndarray:
    paths = []
    for item in images:
        item = Path(item)
        paths.extend(sorted(p for p in item.rglob("*") if is_image_path(p)) if item.is_dir() else [item])
    tensors = []
    for path in paths[:64]:
        try:
            tensors.append(load_input(path, spec)[0])
        except ImageReadError as exc:
            log.warning("parity check skips %s", exc)
    if not tensors:
        raise UsageError(f"no readable images for the parity check in {[str(i) for i in images]}")
    return np.stack(tensors)


def export_onnx(model_dir, out_path=None, parity_images=(), tolerance=PARITY_TOLERANCE,
                opset=ONNX_OPSET, card: ModelCard | None = None) -> dict:
    """Export a model directory's network to ONNX and check it.

    Args:
        model_dir: the model directory (card + weights).
        out_path: where to write; default MODEL_DIR/model.onnx.
        parity_images: image files or folders for the parity check (default: the
            package's sample cutouts).
        tolerance: the largest |p_onnx - p_torch| allowed.
        opset: ONNX opset.
        card: the already loaded card, to skip reading it again.

    Returns:
        The export record (also stored in the card when writing into MODEL_DIR).

    Raises:
        UsageError: an opset the export cannot write (checked before anything is read).
        ModelError: the check or the parity test failed; no file is left behind.
        OSError: OUT_PATH cannot be written (named, not the temporary file; none is left behind).
    """
    import onnx
    import onnxruntime as ort

    from galaxy.training.model import load_network

    if not MIN_OPSET <= opset <= max_opset():
        raise UsageError(f"--opset {opset}: the export writes opsets {MIN_OPSET} to {max_opset()} "
                         f"(default {ONNX_OPSET})")
    model_dir = Path(model_dir)
    network, card = load_network(model_dir, card)
    spec = card.input_spec
    out_path = Path(out_path) if out_path else model_dir / ONNX_FILE
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batch = _parity_batch(parity_images or [SAMPLES_DIR], spec)
    started = time.time()

    def write_checked(tmp: Path):
        write_onnx(network, torch.from_numpy(batch[:2]), tmp, opset)
        onnx.checker.check_model(str(tmp), full_check=True)
        options = ort.SessionOptions()
        session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        p_onnx = softmax(session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])
        with torch.inference_mode():
            p_torch = torch.softmax(network(torch.from_numpy(batch)), dim=1).numpy()
        max_dp = float(np.abs(p_onnx - p_torch).max())
        if max_dp > tolerance:
            raise ModelError(f"ONNX export of {model_dir} differs from PyTorch by max |dp| = {max_dp:.2e} "
                             f"on {len(batch)} real images (tolerance {tolerance:.0e})")
        return p_onnx, p_torch, max_dp

    p_onnx, p_torch, max_dp = write_atomically(out_path, write_checked)
    record = {
        "file": out_path.name, "sha256": file_sha256(out_path), "weights_sha256": card.weights_sha256,
        "engine_key": card.engine_key, "temperature": card.temperature,
        "opset": opset, "exporter": EXPORTER, "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxruntime": ort.__version__, "input": INPUT_NAME, "output": OUTPUT_NAME,
        "parity": {"images": int(len(batch)), "max_abs_dp": max_dp, "tolerance": tolerance,
                   "labels_agree": bool((p_onnx.argmax(1) == p_torch.argmax(1)).all())},
        "seconds": round(time.time() - started, 1),
    }
    log.info("exported %s: parity max |dp| %.2e on %d images", out_path, max_dp, len(batch))
    if out_path.parent.resolve() == model_dir.resolve():
        card.export = record
        card.save(model_dir)
    return record


def export_model_dir(config) -> dict:
    """`galaxy export` entry point (an ExportConfig)."""
    card = load_card(config.model_dir)
    writable_folder(config.model_dir, f"cannot write {Path(config.model_dir) / ONNX_FILE}")  # before the export
    return export_onnx(config.model_dir, None, config.parity_images, config.tolerance, config.opset, card)
