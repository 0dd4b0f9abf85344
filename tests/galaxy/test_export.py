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
    assert record["opset"] == 17 and record["exporter"] == "torchscript+exact-bn-folds"
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


def test_the_export_is_the_same_file_whatever_path_mkl_takes(default_model, tmp_path):
    """torch's float32 sqrt goes through MKL, whose result depends on the CPU: the exporter's BatchNorm
    folds came out one float32 step apart on an Intel AVX-512 Xeon and on AMD EPYCs, so the shipped int8
    recipe could not rebuild its checked model on the Xeon (2026-12-01). MKL_CBWR picks another MKL path
    on one machine; the export must not change with it (it did: two files, 31 of 40 folds differing)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from engine.artifacts import resolve_model; from galaxy.training.export import write_onnx; "
            "from galaxy.training.model import load_network; import torch; d, c = resolve_model(None); "
            "n, c = load_network(d, c); s = c.input_spec; "
            "write_onnx(n, torch.zeros(2, s.channels, s.size, s.size), sys.argv[1])")
    files = []
    for path in ("COMPATIBLE", "AUTO"):
        out = tmp_path / f"{path}.onnx"
        env = {**os.environ, "MKL_CBWR": path}
        done = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        files.append(out.read_bytes())
    assert files[0] == files[1]


def test_the_folds_written_are_the_exact_ones_and_a_wrong_one_is_refused(default_model, tmp_path):
    import numpy as np
    import onnx
    import pytest
    import torch
    from onnx import numpy_helper

    from galaxy.errors import ModelError
    from galaxy.training.bn_fold import exact_fold, fold_pairs, make_folds_exact
    from galaxy.training.export import write_onnx
    from galaxy.training.model import load_network

    network, card = load_network(*default_model)
    spec = card.input_spec
    example = torch.zeros(2, spec.channels, spec.size, spec.size)
    path = write_onnx(network, example, tmp_path / "model.onnx")
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    pairs = fold_pairs(network, example)
    folded = [(node, conv, norm) for node, (conv, norm) in zip(convs, pairs) if norm is not None]
    assert len(convs) == len(pairs) and len(folded) >= 30  # the compact Xception: 74 Convs, 40 with a BatchNorm
    for node, conv, norm in folded:
        fold = exact_fold(conv, norm)
        assert np.array_equal(inits[node.input[1]], fold.weight) and np.array_equal(inits[node.input[2]], fold.bias)
    # the float32 fold by hand for one channel: gamma / sqrt(var + eps), numpy's sqrt correctly rounded
    node, conv, norm = folded[0]
    f32 = np.float32
    scale = f32(norm.weight[0].item()) / np.sqrt(f32(norm.running_var[0].item()) + f32(norm.eps))
    assert inits[node.input[1]][0].ravel()[0] == f32(conv.weight[0].detach().numpy().ravel()[0]) * scale
    # a network whose BatchNorm is not the one the file folded: refused, the file left alone
    before = path.read_bytes()
    with torch.no_grad():
        norm.running_var.mul_(4)
    with pytest.raises(ModelError, match="not the fold of the network's Conv and BatchNorm"):
        make_folds_exact(network, example, path)
    assert path.read_bytes() == before
