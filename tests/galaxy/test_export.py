"""Export parity with the trained default model (random weights would prove nothing)."""

import json

import numpy as np

from galaxy.training.export import export_onnx
from galaxy.io.images import load_input
from tests.conftest import EXAMPLES


def test_export_parity_on_real_images(model_copy):
    record = export_onnx(model_copy, parity_images=[EXAMPLES])
    assert record["parity"]["images"] == 40
    assert record["parity"]["max_abs_dp"] <= 1e-4 and record["parity"]["labels_agree"]
    assert record["opset"] == 17 and record["exporter"] == "torchscript"
    card = json.loads((model_copy / "card.json").read_text())
    assert card["export"]["sha256"] == record["sha256"]


def test_onnx_dynamic_batch_and_trained_outputs_vary(model_copy):
    import onnxruntime as ort

    export_onnx(model_copy, parity_images=[EXAMPLES])
    session = ort.InferenceSession(str(model_copy / "model.onnx"), providers=["CPUExecutionProvider"])
    spec_card = json.loads((model_copy / "card.json").read_text())
    from galaxy.spec import InputSpec

    spec = InputSpec.from_dict(spec_card["input_spec"])
    batch = np.stack([load_input(p, spec)[0] for p in sorted(EXAMPLES.glob("*.jpeg"))[:5]])
    for n in (1, 5):
        assert session.run(None, {"input": batch[:n]})[0].shape == (n, 2)
    logits = session.run(None, {"input": batch})[0]
    assert np.ptp(logits[:, 1] - logits[:, 0]) > 1.0  # a trained model separates galaxies
