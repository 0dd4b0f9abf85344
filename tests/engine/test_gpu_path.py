"""The GPU path: what can be checked on a CPU always runs; the rest is marked and skipped here.

CPU: engine cache keys, the plan record/refusal rules, the optimization profile constants
shared with the export, INT8 calibrator batches from real images, backend and decoder
selection, device-tensor batching and TTA. GPU (`gpu`, `tensorrt`, `dali`): the torch CUDA
and TensorRT backends against ONNX Runtime fp32 on real images, and the GPU decoders against
the reference reader.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from engine import backends
from engine.batching import batches
from engine.listing import Item
from engine.pipelines import dali_installed, pick
from engine.pipelines.base import Decoded
from engine.tensorrt_build import (Target, calibration_batches, check_plan, plan_intact, plan_path, plan_record,
                                   read_plan)
from engine.tta import d4_views
from galaxy.errors import ModelError, UsageError
from galaxy.io.images import load_input
from galaxy.spec import INPUT_NAME, MAX_BATCH, MIN_BATCH, OPT_BATCH
from tests.conftest import EXAMPLES

H100 = Target("NVIDIA H100 80GB HBM3", "9.0", "10.13.0.35")
CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible to PyTorch on this machine")
needs_tensorrt = pytest.mark.skipif(not backends.tensorrt_installed(),
                                    reason="TensorRT is not installed (pip install tensorrt-cu12 from pypi.nvidia.com)")


def test_plan_cache_key_holds_model_precision_gpu_and_tensorrt(default_model):
    _, card = default_model
    path = plan_path(card, "fp16", H100)
    assert path.name == f"{card.engine_key}-fp16-nvidia-h100-80gb-hbm3-sm90-trt10.13.0.35.plan"
    others = {plan_path(card, "int8", H100), plan_path(card, "fp16", replace(H100, gpu="NVIDIA A100-SXM4-40GB")),
              plan_path(card, "fp16", replace(H100, compute_capability="8.0")),
              plan_path(card, "fp16", replace(H100, tensorrt="10.14.0")),
              plan_path(replace(card, calibration={"temperature": 1.3}), "fp16", H100)}
    assert path not in others and len(others) == 5
    with pytest.raises(UsageError, match="precision"):
        plan_path(card, "int4", H100)


def test_a_plan_is_checked_against_the_sha256_its_record_holds(default_model):
    """A damaged plan had been handed to TensorRT's deserializer, which may crash on one rather than refuse
    it: its record now holds its sha256 (a record from before that is taken as it is)."""
    _, card = default_model
    record = plan_record(card, "fp16", H100, "abc", 0, 1.0, b"the plan's bytes")
    assert plan_intact(record, b"the plan's bytes")
    assert not plan_intact(record, b"the plan's bytez") and not plan_intact(record, b"")
    assert plan_intact({k: v for k, v in record.items() if k != "plan_sha256"}, b"anything")


def test_a_plan_read_while_another_process_replaces_it_is_read_again(default_model, tmp_path, monkeypatch):
    """Two processes building one plan (a job array on a fresh cache) rename plan and record into place one
    after the other: a reader between them saw a record and a plan of two builds, and refused a good plan."""
    import engine.tensorrt_build as tensorrt_build

    _, card = default_model
    path = tmp_path / "p.plan"
    first, second = (plan_record(card, "fp16", H100, "abc", 0, 1.0, plan) for plan in (b"first", b"second"))
    path.with_suffix(".json").write_text(json.dumps(first))
    path.write_bytes(b"second")  # the second build's plan is in place, its record not yet

    def second_record_lands(seconds):
        path.with_suffix(".json").write_text(json.dumps(second))

    monkeypatch.setattr(tensorrt_build.time, "sleep", second_record_lands)
    assert read_plan(path) == (second, b"second")
    path.write_bytes(b"damaged")
    assert read_plan(path, wait=0) == (second, None)


def test_a_plan_for_another_gpu_or_version_is_refused_by_name(default_model):
    _, card = default_model
    record = plan_record(card, "fp16", H100, "abc", 0, 1.0, b"plan")
    assert record["profile"] == {"input": INPUT_NAME, "min": MIN_BATCH, "opt": OPT_BATCH, "max": MAX_BATCH}
    check_plan(record, card, H100, "p.plan")  # the machine it was built on
    with pytest.raises(ModelError, match="built for NVIDIA H100.*cannot run on NVIDIA L4"):
        check_plan(record, card, Target("NVIDIA L4", "8.9", "10.13.0.35"), "p.plan")
    with pytest.raises(ModelError, match="TensorRT 10.13.0.35.*TensorRT 10.14"):
        check_plan(record, card, replace(H100, tensorrt="10.14.0"), "p.plan")
    with pytest.raises(ModelError, match="other weights"):
        check_plan(record, replace(card, weights_sha256="0" * 64), H100, "p.plan")


def test_profile_constants_are_the_exports(default_model, tmp_path):
    import onnx

    from galaxy.training.export import export_onnx

    model_dir, card = default_model
    export_onnx(model_dir, tmp_path / "m.onnx", [EXAMPLES], card=card)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    (inp,) = graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == INPUT_NAME and dims[0].dim_param and not dims[0].dim_value  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [3, card.input_spec.size, card.input_spec.size]
    assert MIN_BATCH <= OPT_BATCH <= MAX_BATCH


def test_int8_calibrator_gets_full_batches_of_real_images(default_model):
    from engine.quantize import calibration_tensors

    _, card = default_model
    paths = sorted(str(p) for p in EXAMPLES.glob("*.jpeg"))[:36]
    tensors = calibration_tensors(paths, card.input_spec)
    out = list(calibration_batches(tensors, 16))
    assert [b.shape for b in out] == [(16, 3, card.input_spec.size, card.input_spec.size)] * 2  # 4 left over, dropped
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in out)
    np.testing.assert_array_equal(out[1][0], load_input(paths[16], card.input_spec)[0])
    with pytest.raises(UsageError, match="at least 64"):
        next(calibration_batches(tensors, 64))


def test_compile_without_tensorrt_says_how_to_install(default_model):
    if backends.tensorrt_installed():
        pytest.skip("TensorRT is installed here")
    from click.testing import CliRunner

    from galaxy.cli import cli

    result = CliRunner().invoke(cli, ["compile", str(default_model[0])])
    assert result.exit_code == 1
    assert "TensorRT is not installed" in result.output and "pypi.nvidia.com" in result.output


def test_auto_prefers_tensorrt_then_torch_cuda_then_checked_cpu_backends(default_model, monkeypatch):
    _, card = default_model
    from engine.backends import torch_cuda

    if not CUDA:  # what this machine really does
        assert backends.pick("auto", card, default_model[0]) in ("torch", "onnxruntime", "onnxruntime-int8")
        assert not any(backends.available(n, card) for n in backends.GPU_BACKENDS)
    monkeypatch.setattr(torch_cuda, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "tensorrt_installed", lambda: True)
    assert backends.pick("auto", card) == "tensorrt"
    monkeypatch.setattr(backends, "tensorrt_installed", lambda: False)
    assert backends.pick("auto", card) == "torch-cuda"
    monkeypatch.setattr(torch_cuda, "cuda_available", lambda: False)
    assert backends.pick("auto", card) not in backends.GPU_BACKENDS


def test_auto_falls_back_to_torch_cuda_where_tensorrt_cannot_run(default_model, monkeypatch):
    """A partly installed TensorRT (its PyPI wheel fetches the real one) or a plan that fails to build
    ended the run; auto now runs torch-cuda instead, as on a CPU it drops a candidate that cannot load."""
    from engine.backends import torch_cuda

    model_dir, card = default_model
    monkeypatch.setattr(torch_cuda, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "tensorrt_installed", lambda: True)
    loaded = []

    def fake_load(name, *args, **kwargs):
        loaded.append(name)
        if name == "tensorrt":
            raise ImportError("libnvinfer.so.10: cannot open shared object file")
        return name

    monkeypatch.setattr(backends, "load_named", fake_load)
    assert backends.load("auto", model_dir, card, backends.BackendOptions()) == "torch-cuda"
    assert loaded == ["tensorrt", "torch-cuda"]
    with pytest.raises(ImportError):  # asked for by name: its own error
        backends.load("tensorrt", model_dir, card, backends.BackendOptions())


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_auto_picks_a_gpu_backend_where_there_is_one(default_model):
    """On the device itself: auto rules CUDA out without torch only where no NVIDIA driver is seen."""
    from engine.machine import nvidia_driver_absent

    assert not nvidia_driver_absent()
    assert backends.pick("auto", default_model[1], default_model[0]) in backends.GPU_BACKENDS


def test_gpu_decoders_follow_the_backend_device():
    assert pick("auto", "cuda:0 NVIDIA H100") == ("dali-gpu" if dali_installed() else "nvjpeg")
    assert pick("auto", "CPUExecutionProvider") in ("dali", "reference")
    for name in ("dali-gpu", "nvjpeg"):
        with pytest.raises(UsageError, match="GPU backend"):
            pick(name, "cpu")


def test_device_batches_keep_ids_and_mix_host_fallbacks():
    a, b = np.full((3, 4, 4), 1, np.float32), np.full((3, 4, 4), 2, np.float32)
    decoded = [Decoded("a", "a.jpg", tensor=torch.from_numpy(a)), Decoded("b", "b.fits", tensor=b)]
    (batch,) = list(batches(iter(decoded), 4, on_error=None, ))
    assert isinstance(batch.tensor, torch.Tensor) and batch.ids == ["a", "b"] and batch.n_valid == 2
    assert batch.tensor.shape == (2, 3, 4, 4) and float(batch.tensor[1].mean()) == 2


def test_tta_views_on_device_tensors_equal_the_numpy_views():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5)).astype(np.float32)
    for host, device in zip(d4_views(x), d4_views(torch.from_numpy(x))):
        np.testing.assert_array_equal(host, device.numpy())


def test_nvjpeg_graph_on_the_cpu_matches_the_reference_reader(default_model, tmp_path):
    """The nvjpeg pipeline's crop/resize/normalise, run by libjpeg-turbo on the CPU: batched by
    shape (a 300 px cutout among 424 px ones), labels kept, a non-JPEG handed to the reference reader."""
    from PIL import Image

    from engine.pipelines.nvjpeg import NvjpegPipeline

    model_dir, card = default_model
    paths = sorted(EXAMPLES.glob("*.jpeg"))[:12]
    Image.open(paths[0]).resize((300, 300)).save(tmp_path / "small.jpeg", quality=95)
    Image.open(paths[1]).save(tmp_path / "png.png")
    Image.open(paths[2]).crop((0, 112, 424, 312)).save(tmp_path / "wide.jpeg", quality=95)  # reference reader
    paths += [tmp_path / "small.jpeg", tmp_path / "wide.jpeg", tmp_path / "png.png"]
    reference = np.stack([load_input(p, card.input_spec)[0] for p in paths])
    pipeline = NvjpegPipeline(card.input_spec, 2, 2, batch_size=8, device="cpu")
    out = list(pipeline.decode(Item(str(p)) for p in paths))
    assert [d.path for d in out] == [str(p) for p in paths] and all(d.error is None for d in out)
    decoded = np.stack([np.asarray(d.tensor) for d in out])
    assert isinstance(out[0].tensor, torch.Tensor) and isinstance(out[-1].tensor, np.ndarray)  # png: reference
    std = np.asarray(card.input_spec.std)[:, None, None]
    # libjpeg-turbo decodes as PIL does, and the crop and resize are the reference's (the whole-pixel crop
    # and torch's resize had been 0.003 off on average, 0.10 at most, p_spiral up to 0.03; session 39)
    assert np.abs((decoded - reference) * std).max() < 1e-5
    session = backends.load("onnxruntime", model_dir, card, backends.BackendOptions())
    assert np.abs(session.run(decoded) - session.run(reference)).max() < 1e-4
    # a crop of one value is refused by both, though the resize's taps reach past it into other values
    pixels = (np.random.default_rng(0).random((416, 416, 3)) * 255).astype(np.uint8)
    pixels[104:312, 104:312] = 40
    Image.fromarray(pixels).save(tmp_path / "flat.jpeg", quality=100, subsampling=0)
    from galaxy.errors import ImageReadError

    with pytest.raises(ImageReadError, match="blank"):
        load_input(tmp_path / "flat.jpeg", card.input_spec)
    flat = list(pipeline.decode([Item(str(tmp_path / "flat.jpeg"))]))[0]
    assert flat.tensor is None and "blank" in str(flat.error)


def _real_batch(card, n=40):
    paths = sorted(EXAMPLES.glob("*.jpeg"))[:n]
    return paths, np.stack([load_input(p, card.input_spec)[0] for p in paths])


def _against_fp32(session, card, model_dir, tensor):
    reference = backends.load("onnxruntime", model_dir, card, backends.BackendOptions()).run(tensor)
    probs = session.run(tensor)
    assert probs.shape == reference.shape
    assert (probs.argmax(1) == reference.argmax(1)).mean() >= 0.975  # fp16: at most 1 of 40 flips
    assert np.abs(probs - reference).max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sdss-xception-compact", "sdss-xception"])
def test_shipped_models_keep_their_labels_in_half_precision(name):
    """The GPU backends run fp16 (torch-cuda, TensorRT); checked here without a GPU: the shipped
    network in half precision on the CPU against fp32 on the sample cutouts, so a model whose
    activations overflow fp16 fails before it ships (the compact model became the default on
    GPUs without a GPU check of its own)."""
    from engine.artifacts import resolve_model
    from galaxy.training.model import load_network

    model_dir, card = resolve_model(name)
    x = torch.from_numpy(np.stack([load_input(p, card.input_spec)[0] for p in sorted(EXAMPLES.glob("*.jpeg"))]))
    network, _ = load_network(model_dir, card)
    with torch.inference_mode():
        full = torch.softmax(network.eval()(x), dim=1)
        half = torch.softmax(network.half()(x.half()).float(), dim=1)
    assert torch.isfinite(half).all()
    assert (full.argmax(1) == half.argmax(1)).all() and (full - half).abs().max() < 0.01


@pytest.mark.gpu
@needs_gpu
def test_torch_cuda_matches_fp32_on_real_images_numpy_and_device_inputs(default_model):
    model_dir, card = default_model
    session = backends.load("torch-cuda", model_dir, card, backends.BackendOptions(batch_size=32))
    _, tensor = _real_batch(card)
    _against_fp32(session, card, model_dir, tensor)  # 40 > 32: two graph replays, the second padded
    np.testing.assert_allclose(session.run(torch.from_numpy(tensor).cuda()), session.run(tensor), atol=1e-6)


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_gpu
@needs_tensorrt
def test_tensorrt_fp16_matches_fp32_and_is_cached(default_model):
    from engine.tensorrt_build import build_plan

    model_dir, card = default_model
    session = backends.load("tensorrt", model_dir, card, backends.BackendOptions())
    _, tensor = _real_batch(card)
    _against_fp32(session, card, model_dir, tensor)
    assert str(build_plan(model_dir, card, "fp16")) == session.path  # second call: the cached plan


@pytest.mark.gpu
@pytest.mark.dali
@needs_gpu
@pytest.mark.skipif(not dali_installed(), reason="nvidia-dali is not installed")
def test_dali_gpu_decode_matches_the_reference_reader(default_model):
    from engine.pipelines.dali_gpu import create

    _, card = default_model
    paths, reference = _real_batch(card)
    out = list(create(card.input_spec, 2, 2, batch_size=16).decode(Item(str(p)) for p in paths))
    assert [d.path for d in out] == [str(p) for p in paths]
    decoded = np.stack([d.tensor.cpu().numpy() for d in out])
    std = np.asarray(card.input_spec.std)[:, None, None]
    assert np.abs((decoded - reference) * std).max() < 2e-2  # nvJPEG's IDCT differs from libjpeg-turbo's


@pytest.mark.gpu
@needs_gpu
def test_nvjpeg_decode_gives_the_same_labels_as_the_reference_reader(default_model):
    from engine.pipelines.nvjpeg import create

    model_dir, card = default_model
    paths, reference = _real_batch(card)
    out = list(create(card.input_spec, 2, 2, batch_size=16).decode(Item(str(p)) for p in paths))
    decoded = torch.stack([d.tensor for d in out]).cpu().numpy()
    std = np.asarray(card.input_spec.std)[:, None, None]
    assert np.abs((decoded - reference) * std).mean() < 1e-2
    session = backends.load("onnxruntime", model_dir, card, backends.BackendOptions())
    assert (session.run(decoded).argmax(1) == session.run(reference).argmax(1)).mean() >= 0.975


def test_tensorrt_on_a_machine_without_a_gpu_says_so_first(default_model):
    """It said "TensorRT is not installed ... or use --backend torch-cuda": neither helps without a GPU."""
    from engine.backends.torch_cuda import cuda_available
    from galaxy.errors import BackendUnavailable

    if cuda_available():
        pytest.skip("a GPU is visible here")
    with pytest.raises(BackendUnavailable, match="TensorRT runs on an NVIDIA GPU, and none is visible here"):
        backends.load_named("tensorrt", default_model[0], default_model[1], backends.BackendOptions())


@pytest.mark.gpu
@needs_gpu
def test_training_runs_on_the_gpu_with_every_part_of_the_recipe(tmp_path):
    """What benchmarks/gpu_train.sh runs, tiny: a teacher, then a student with its soft targets on
    unlabelled images, every augmentation, FITS views and the scale-consistency view, on CUDA (the
    caches and augmentation live on the GPU there). Run by gpu_check.sh, so that a training bug that
    only a GPU shows is found in the check, not in the scarce training session (a review's advice)."""
    import json
    import shutil

    from click.testing import CliRunner

    from galaxy.card import SAMPLES_DIR
    from galaxy.cli import cli

    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for path in SAMPLES_DIR.glob("*.jpeg"):  # none of them is among the examples
        shutil.copy(path, unlabelled / path.name)
    common = ["--size", "32", "--arch", "xception_compact_w25_d2", "--batch-size", "8", "--epochs", "1",
              "--workers", "2", "-q", "--augment", "all"]
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    for out, extra in ((teacher, []), (student, ["--teacher", str(teacher), "--unlabeled", str(unlabelled),
                                                 "--fits-views", "1", "--scale-consistency", "0.5"])):
        result = CliRunner().invoke(cli, ["train", str(EXAMPLES / "labels.csv"), "-o", str(out), *common, *extra])
        assert result.exit_code == 0, result.output
    card = json.loads((student / "card.json").read_text())
    assert card["training"]["teacher"]["teachers"][0]["name"] == "teacher"
    assert card["training"]["device"].startswith("cuda")  # trained where the test means it to
