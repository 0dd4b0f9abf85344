"""`galaxy compile`: TensorRT engines (plans) built from the ONNX export, cached per GPU.

A plan is only valid for the GPU model, compute capability and TensorRT version that built
it, so the cache key holds all of them plus the card's engine key (weights, temperature)
and the precision:

  $GALAXY_CACHE/tensorrt/<engine_key>-<precision>-<gpu>-sm<cc>-trt<version>.plan (+ .json)

The JSON beside each plan records what it was built for and the plan's sha256; loading a plan checks
it against the running GPU and TensorRT and refuses a mismatch with a message naming both, and checks
the bytes it deserializes against the sha256 (a damaged plan is built again, or refused: TensorRT
may crash on one rather than refuse it). The
optimization profile's batch range comes from `galaxy.spec` (MIN/OPT/MAX_BATCH), the same
constants the export and the runtime use. FP16 always; INT8 adds an entropy calibrator fed
with real training images (never the validation split). A timing cache per GPU and TensorRT
version makes rebuilds fast. `tensorrt` is imported lazily: a CPU install never needs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.artifacts import cache_dir, onnx_model
from galaxy.errors import BackendUnavailable, ModelError, UsageError
from galaxy.files import write_atomically
from galaxy.spec import INPUT_NAME, MAX_BATCH, MIN_BATCH, OPT_BATCH

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8")
WORKSPACE_BYTES = 4 << 30
INSTALL_HINT = ("TensorRT is not installed. Install it from NVIDIA's index, matching your CUDA: "
                "pip install tensorrt-cu12 (or tensorrt-cu13) --extra-index-url https://pypi.nvidia.com; "
                "or use --backend torch-cuda, which needs only PyTorch with CUDA")


def import_tensorrt():
    """The tensorrt module, or BackendUnavailable saying how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(INSTALL_HINT) from None
    return tensorrt


@dataclass(frozen=True)
class Target:
    """What a plan is built for: the GPU and TensorRT version it can only run on."""

    gpu: str
    compute_capability: str
    tensorrt: str

    def slug(self) -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu).strip("-").lower()
        return f"{gpu}-sm{self.compute_capability.replace('.', '')}-trt{self.tensorrt}"


def current_target(device: int = 0) -> Target:
    """The GPU and TensorRT of this process (needs CUDA and tensorrt)."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs an NVIDIA GPU with CUDA; none is visible to PyTorch here")
    trt = import_tensorrt()
    major, minor = torch.cuda.get_device_capability(device)
    return Target(torch.cuda.get_device_name(device), f"{major}.{minor}", trt.__version__)


def plan_path(card, precision: str, target: Target) -> Path:
    if precision not in PRECISIONS:
        raise UsageError(f"TensorRT precision {precision!r}: choose from {list(PRECISIONS)}")
    return cache_dir() / "tensorrt" / f"{card.engine_key}-{precision}-{target.slug()}.plan"


def plan_record(card, precision: str, target: Target, onnx_sha256: str, calibration_images: int, seconds: float,
                plan: bytes) -> dict:
    return {"engine_key": card.engine_key, "model": card.name, "precision": precision, "gpu": target.gpu,
            "compute_capability": target.compute_capability, "tensorrt": target.tensorrt, "onnx_sha256": onnx_sha256,
            "plan_sha256": hashlib.sha256(plan).hexdigest(),
            "profile": {"input": INPUT_NAME, "min": MIN_BATCH, "opt": OPT_BATCH, "max": MAX_BATCH},
            "calibration_images": calibration_images, "seconds": round(seconds, 1)}


def plan_intact(record: dict, plan: bytes) -> bool:
    """Whether a plan's bytes are those its record says were built (a record from before plans' sha256
    were kept: taken as it is)."""
    recorded = record.get("plan_sha256")
    return recorded is None or hashlib.sha256(plan).hexdigest() == recorded


def read_plan(path: Path, tries: int = 3, wait: float = 0.5) -> tuple[dict, bytes | None]:
    """(record, plan bytes) of a cached plan, read again while they do not match: another process building the
    same plan (a job array on a fresh cache) renames its plan, then its record, into place between our two
    reads, and either plan is good. (record, None) when they still differ: the plan is damaged.

    Raises:
        OSError, ValueError: the record (or the plan) cannot be read.
    """
    for attempt in range(tries):
        if attempt:
            time.sleep(wait)
        record = json.loads(path.with_suffix(".json").read_text())
        plan = path.read_bytes()
        if plan_intact(record, plan):
            return record, plan
    return record, None


def check_plan(record: dict, card, target: Target, path) -> None:
    """Refuse a plan built for another model, GPU or TensorRT version, naming the difference.

    Raises:
        ModelError: the plan's record does not match this model and machine.
    """
    if record.get("engine_key") != card.engine_key:
        raise ModelError(f"TensorRT plan {path} was built from other weights or calibration "
                         f"({record.get('engine_key')} vs {card.engine_key}); delete it to rebuild")
    built = (record.get("gpu"), record.get("compute_capability"), record.get("tensorrt"))
    here = (target.gpu, target.compute_capability, target.tensorrt)
    if built != here:
        raise ModelError(f"TensorRT plan {path} was built for {built[0]} (sm {built[1]}, TensorRT {built[2]}) and "
                         f"cannot run on {here[0]} (sm {here[1]}, TensorRT {here[2]}); rebuild it with galaxy compile")


def calibration_batches(tensors: np.ndarray, batch: int):
    """Full batches of `batch` float32 (N, C, H, W) tensors for the INT8 calibrator.

    TensorRT's calibrator wants a fixed batch size: a short last batch is dropped rather
    than padded with zeros (zeros would skew the activation histograms).
    """
    if len(tensors) < batch:
        raise UsageError(f"INT8 calibration needs at least {batch} images, got {len(tensors)}")
    for start in range(0, len(tensors) - batch + 1, batch):
        yield np.ascontiguousarray(tensors[start:start + batch], dtype=np.float32)


def _entropy_calibrator(trt, batches, batch: int, cache_file: Path):
    """An IInt8EntropyCalibrator2 copying each host batch into one device buffer (torch)."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches, self._device = iter(batches), None

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            host = next(self._batches, None)
            if host is None:
                return None
            self._device = torch.from_numpy(host).cuda()
            return [int(self._device.data_ptr())]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            write_atomically(cache_file, lambda tmp: tmp.write_bytes(bytes(cache)))

    return Calibrator()


def build_plan(model_dir, card, precision: str = "fp16", calibration_tensors: np.ndarray | None = None,
               calibration_batch: int = OPT_BATCH, force: bool = False) -> Path:
    """Build (or find) the TensorRT plan of a model for this GPU; return its path.

    Args:
        model_dir, card: the model.
        precision: "fp16", or "int8" (INT8 with FP16 fallback; needs calibration_tensors).
        calibration_tensors: preprocessed real training images, float32 (N, C, H, W).
        force: rebuild even when a matching plan is cached.
    """
    trt = import_tensorrt()
    target = current_target()
    path = plan_path(card, precision, target)
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and not force:
        try:
            record, plan = read_plan(path)
        except (OSError, ValueError) as exc:  # written whole since; one torn before: built again, said
            log.warning("the record of the TensorRT plan %s cannot be read (%s): building the plan again", path, exc)
        else:
            check_plan(record, card, target, path)
            if plan is not None:
                return path
            log.warning("the TensorRT plan %s is not the file that was built (its sha256 is not the one %s "
                        "records): building it again", path, meta.name)
    if precision == "int8" and calibration_tensors is None:
        raise UsageError("an INT8 engine needs real calibration images: galaxy compile --precision int8 --calibration DATA")
    onnx_file = onnx_model(Path(model_dir), card)
    started = time.time()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_file.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT could not parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.set_flag(trt.BuilderFlag.FP16)
    spec = card.input_spec
    shape = lambda n: (n, spec.channels, spec.size, spec.size)  # noqa: E731
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, shape(MIN_BATCH), shape(OPT_BATCH), shape(MAX_BATCH))
    config.add_optimization_profile(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if force:  # the scales of another calibration set (or --images) were reused, the record saying the new one's
            path.with_suffix(".calib").unlink(missing_ok=True)
        config.int8_calibrator = _entropy_calibrator(
            trt, calibration_batches(calibration_tensors, calibration_batch), calibration_batch,
            path.with_suffix(".calib"))
        config.set_calibration_profile(profile)
    timing_file = path.parent / f"timing-{target.slug()}.cache"
    timing = config.create_timing_cache(timing_file.read_bytes() if timing_file.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"TensorRT failed to build a {precision} engine from {onnx_file} (see its log above)")
    plan = bytes(plan)  # the plan, then its record, each by rename: a reader between the two reads again (`read_plan`)
    write_atomically(path, lambda tmp: tmp.write_bytes(plan))
    serialized = bytes(config.get_timing_cache().serialize())  # atomic: two builders had torn it
    write_atomically(timing_file, lambda tmp: tmp.write_bytes(serialized))
    from galaxy.card import file_sha256

    n_calib = 0 if calibration_tensors is None else len(calibration_tensors) // calibration_batch * calibration_batch
    record = plan_record(card, precision, target, file_sha256(onnx_file), n_calib, time.time() - started, plan)
    write_atomically(meta, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))
    log.info("built TensorRT %s engine %s in %.0f s", precision, path, record["seconds"])
    return path


def compile_model(config) -> Path:
    """`galaxy compile` (a CompileConfig): build the plan, calibrating INT8 on training images."""
    from engine.artifacts import resolve_model

    model_dir, card = resolve_model(config.model_dir)
    import_tensorrt()  # say how to install it before any work
    tensors = None
    if config.precision == "int8":
        if not config.calibration:
            raise UsageError("--precision int8 needs --calibration DATA (labelled training images)")
        from engine.quantize import calibration_tensors, training_paths

        paths = training_paths(model_dir, card, config.calibration, config.label_column, config.path_column,
                               config.images)
        tensors = calibration_tensors(paths, card.input_spec)
    return build_plan(model_dir, card, config.precision, tensors, force=config.force)
