"""Export parity with the trained default model (random weights would prove nothing)."""

import json

import numpy as np

from galaxy.training.export import export_onnx
from galaxy.io.images import load_input
from tests.conftest import EXAMPLES


def test_export_parity_on_real_images(model_copy):
    import onnxruntime as ort
    import torch

    from galaxy.training.model import load_network

    record = export_onnx(model_copy, parity_images=[EXAMPLES])
    assert record["parity"]["images"] == 40
    assert record["parity"]["max_abs_dp"] <= 1e-4 and record["parity"]["labels_agree"]
    assert record["opset"] == 17 and record["exporter"] == "torchscript"
    card = json.loads((model_copy / "card.json").read_text())
    assert card["export"]["sha256"] == record["sha256"]
    # the parity the record claims, measured here: the ONNX file against the PyTorch network it came from
    network, model_card = load_network(model_copy)
    batch = np.stack([load_input(p, model_card.input_spec)[0] for p in sorted(EXAMPLES.glob("*.jpeg"))])
    with torch.no_grad():
        expected = torch.softmax(network(torch.from_numpy(batch)), dim=1).numpy()
    session = ort.InferenceSession(str(model_copy / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: batch})[0]
    exported = np.exp(logits - logits.max(axis=1, keepdims=True))
    exported /= exported.sum(axis=1, keepdims=True)
    assert np.abs(exported - expected).max() <= 1e-4 and np.ptp(expected[:, 1]) > 0.5  # a trained model's spread


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


def test_an_opset_the_export_cannot_write_is_a_usage_error(model_copy):
    from click.testing import CliRunner

    from galaxy.cli import cli

    for opset in ("5", "99"):
        result = CliRunner().invoke(cli, ["export", str(model_copy), "--opset", opset])
        assert result.exit_code == 2 and f"--opset {opset}: the export writes opsets 7 to" in result.output
    assert not (model_copy / "model.onnx").exists()


def test_an_export_blocked_by_a_folder_names_the_model_file(model_copy):
    from click.testing import CliRunner

    from galaxy.cli import cli

    (model_copy / "model.onnx").mkdir()
    result = CliRunner().invoke(cli, ["export", str(model_copy)])
    assert result.exit_code == 1 and f"Error: {model_copy / 'model.onnx'}: Is a directory" in result.output
    assert not [p.name for p in model_copy.iterdir() if p.name.endswith(".tmp")]


def test_saved_weights_are_readable_as_the_umask_makes_files(tmp_path):
    """safetensors wrote model.safetensors 0600 beside a 0644 card: a shared project folder's group
    could read the card and not the weights."""
    import os

    from galaxy.training.model import create_network, save_weights

    old = os.umask(0o022)
    try:
        save_weights(create_network("xception_compact_w50_d8", 2), tmp_path)
    finally:
        os.umask(old)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # written through a temporary file
