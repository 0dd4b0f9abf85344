"""What the machine is and what it can do, for the benchmark: library and GPU versions, the CPU's
name and vector features, its dense GEMM speed (the roof a network's speed is measured against),
the GPU's fp16 GEMM speed, and the GPU's busy share while something runs (NVML).

Measured, not derived from clock and vector width, which a VM often hides.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from galaxy.cores import cpu_description, cpu_info


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Versions of everything that decides the speed: libraries, and the GPU when there is one."""
    import onnxruntime
    import torch

    out = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    for dist in ("torchvision", "timm", "nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-nvimgcodec-cu13",
                 "tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        out.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(),
                   cudnn=str(torch.backends.cudnn.version()))
    return out


def installed_versions() -> dict:
    """The installed versions of the libraries that compute a catalog's rows, from the package metadata
    alone: importing torch to ask it would cost a classify that never uses it ~1 s (`versions` imports)."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "onnxruntime", "onnxruntime-gpu", "torchvision", "timm", "nvidia-dali-cuda130",
                 "nvidia-dali-cuda120", "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "numpy", "astropy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def installed_version(package: str) -> str:
    """An installed distribution's version without importing it (importing torch costs seconds a run);
    "absent" when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 bf16 or AMX), from /proc/cpuinfo's flags where
    there are any (importing torch to ask it costs seconds a run), else torch's own check."""
    _, flags = cpu_info()
    if flags:
        return bool({"avx512_bf16", "amx_tile"} & flags)
    import torch

    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def nvidia_driver_absent() -> bool:
    """True where no NVIDIA driver can be loaded (Linux without /dev/nvidia*, /proc/driver/nvidia or
    WSL's /dev/dxg): CUDA cannot be there, and torch need not be imported (seconds) to learn it."""
    if not sys.platform.startswith("linux"):
        return False
    return not (any(Path("/dev").glob("nvidia*")) or Path("/proc/driver/nvidia").exists() or Path("/dev/dxg").exists())


# How ONNX Runtime multiplies a uint8 activation by an int8 weight on each kind of CPU, which decides whether an
# int8 check holds on another machine: with VNNI or AMX four products are summed into int32, exactly; without
# them (AVX2, AVX-512 without VNNI) pairs of products are summed into int16 first (VPMADDUBSW), which
# saturates, so the same model gives other outputs there. A check holds on CPUs of the arithmetic it ran on.
INT8_EXACT = "vnni"
UNKNOWN_ARITHMETIC = "other"  # no x86 flags read (ARM, macOS, Windows): not known to be any one arithmetic


def int8_arithmetic() -> str:
    """This CPU's int8 arithmetic: "vnni" (VNNI or AMX: exact int32 sums), "avx512" (AVX-512 without VNNI),
    "avx2", or "other" (none of those found: no check holds there, `engine.backends.check_record`)."""
    return arithmetic_of(cpu_description()["flags"])


def arithmetic_of(flags) -> str:
    """The int8 arithmetic of a CPU with vector features `flags` (see `int8_arithmetic`)."""
    flags = set(flags)
    if {"avx512_vnni", "avx_vnni", "amx_int8"} & flags:
        return INT8_EXACT
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else UNKNOWN_ARITHMETIC


def machine_int8_arithmetic(machine: str) -> str | None:
    """The int8 arithmetic of a machine as `check-backends` names it ("NAME (flags), N cores"), or None
    where the name does not say."""
    found = re.search(r"\(([^()]*)\), \d+ cores$", machine or "")
    return arithmetic_of(found.group(1).split()) if found else None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform says."""
    return cpu_description()["cpu"]


def cpu_flags() -> str:
    """The vector features that decide the speed (`SPEED_FLAGS`): AVX2/FMA, AVX-512, VNNI, bf16, AMX."""
    return " ".join(cpu_description()["flags"]) or "none of AVX2/AVX-512/AMX found in /proc/cpuinfo"


def _best_seconds(call, passes: int = 5, calls: int = 4) -> float:
    """Seconds of one `call()`: the best of `passes` timings of `calls` calls, after 2 warm-up calls."""
    for _ in range(2):
        call()
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


GEMM_SIDE = 1024


def gemm_gflops() -> dict:
    """This machine's attainable dense speed, GFLOP/s by precision: a 1024 x 1024 matrix product
    (`_best_seconds`) in ONNX Runtime (fp32, MLAS: what the fp32 engine runs on; on AMD CPUs
    torch's fp32 GEMM can be far below the machine's roof) and in torch on its default threads
    (fp32, bf16), the faster per precision.

    A network's engine can approach this roof but not pass it (its convolutions are GEMMs or
    less regular); the peak fraction of a row is images/s x GFLOP per galaxy / this. It is
    measured rather than derived from clock and vector width, which a VM often hides; main()
    measures it in every round and keeps the fastest.
    """
    import torch

    flop = 2 * GEMM_SIDE ** 3
    out = {"fp32": round(flop / _onnxruntime_gemm_seconds() / 1e9, 1)}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(GEMM_SIDE, GEMM_SIDE).to(dtype) for _ in range(2))
        out[name] = max(out.get(name, 0.0), round(flop / _best_seconds(lambda: a @ b) / 1e9, 1))
    return out


def gpu_gemm_gflops() -> dict:
    """The GPU's attainable dense fp16 speed, GFLOP/s: an 8192 x 8192 half-precision matrix product
    in torch (`_best_seconds`, synchronised), as {"cuda-fp16": ...}; {} without CUDA. GPU rows'
    peak fraction is images/s x GFLOP per galaxy / this."""
    import torch

    if not torch.cuda.is_available():
        return {}
    side = 8192
    a, b = (torch.randn(side, side, device="cuda", dtype=torch.float16) for _ in range(2))

    def product():
        a @ b
        torch.cuda.synchronize()

    return {"cuda-fp16": round(2 * side ** 3 / _best_seconds(product) / 1e9, 1)}


class GpuUtilisation:
    """Mean GPU utilisation (%, NVML's busy-time share) over a `with` block, sampled every 50 ms
    in a thread; `mean` stays None where NVML (nvidia-ml-py) or a GPU is absent."""

    def __init__(self):
        self.mean, self._samples, self._stop = None, [], None

    def __enter__(self):
        import threading

        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001 - NVML missing or no GPU: no utilisation figure
            return self
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.05):
                self._samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._stop is not None:
            self._stop.set()
            self._thread.join()
            if self._samples:
                self.mean = round(float(np.mean(self._samples)), 1)


def _onnxruntime_gemm_seconds() -> float:
    """Seconds of one GEMM_SIDE x GEMM_SIDE fp32 MatMul in ONNX Runtime on the CPU (`_best_seconds`)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    n = GEMM_SIDE
    b = numpy_helper.from_array(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32), "b")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).normal(size=(n, n)).astype(np.float32)
    return _best_seconds(lambda: session.run(None, {"a": a}))


def peak_fraction(row, peak: dict) -> float | None:
    """images/s x GFLOP per galaxy over the machine's GEMM speed at the row's precision (a GPU
    row's over the GPU's fp16 GEMM); None for precisions without a measured roof (int8)."""
    if not row.get("gflop_per_galaxy"):
        return None
    if str(row["device"]).startswith("cuda"):
        roof = peak.get(f"cuda-{row['precision']}")
    elif row["device"] in ("cpu", "CPUExecutionProvider"):
        roof = peak.get(row["precision"])
    else:
        return None
    return row["images_per_min"] / 60 * row["gflop_per_galaxy"] / roof if roof else None
