"""The benchmark's measurements, one function per stage: listing, decode, engine-only, end to end,
the plain-PyTorch baseline (run in a process of its own) and engine-only at several input sizes;
and the JSON row each prints (`emit`), with the fields every row of a model carries (`model_fields`)."""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.bench_inputs import ROOT
from engine.machine import GpuUtilisation, versions
from galaxy.cores import usable_cores
from galaxy.errors import GalaxyError


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(stage, backend, precision, batch, size, images, seconds, latencies_ms=(), **extra) -> dict:
    """One measurement's JSON line (printed) and row. `p50_ms` / `p95_ms` are per-batch latencies where the
    stage times batches (engine-only), else null: the whole run's time had stood there as a "latency"."""
    lat = np.asarray(latencies_ms) if len(latencies_ms) else None
    row = {"stage": stage, "backend": backend, "precision": precision, "batch": batch, "size": size,
           "images": images, "images_per_min": round(60 * images / seconds, 1),
           "p50_ms": None if lat is None else round(float(np.percentile(lat, 50)), 2),
           "p95_ms": None if lat is None else round(float(np.percentile(lat, 95)), 2),
           "peak_rss_mb": round(peak_rss_mb(), 1), "device": extra.get("provider", "cpu"), "cpu_count": usable_cores(),
           "versions": versions(), **extra}
    print(json.dumps(row), flush=True)
    return row


@functools.lru_cache(maxsize=None)
def model_fields(model_dir: str) -> dict:
    """What every row of a model carries: {"model": card name, "gflop_per_galaxy": forward GFLOP of
    one galaxy at the card's input size (FlopCounterMode)}."""
    from galaxy.training.model import load_network, network_cost

    network, card = load_network(model_dir)
    return {"model": card.name,
            "gflop_per_galaxy": network_cost(network, card.input_spec.size)["gflop_per_galaxy"]}


def bench_listing(files) -> dict:
    from engine.listing import iter_inputs

    folder = str(Path(files[0]).parent)
    start = time.perf_counter()
    n = sum(1 for _ in iter_inputs([folder]))
    return emit("listing", "-", "-", 0, 0, n, time.perf_counter() - start)


def bench_decode(files, spec, workers, decoder, batch, **extra) -> dict:
    from engine.listing import Item
    from engine.runner import open_decoder

    gpu = decoder in ("dali-gpu", "nvjpeg")
    pipeline = open_decoder(decoder, spec, workers, batch, "cuda" if gpu else "cpu")  # as the runner decodes
    list(pipeline.decode(Item(f) for f in files[:batch]))
    start = time.perf_counter()
    n = sum(1 for d in pipeline.decode(Item(f) for f in files) if d.error is None)
    _synchronize()
    return emit("decode", pipeline.name, "fp32", batch, spec.size, n, time.perf_counter() - start, workers=workers,
                provider="cuda" if gpu else "cpu", crop=spec.crop_fraction, **extra)


def _synchronize():
    """Wait for queued GPU work, so a timing covers it (a no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_engine(session, spec, batch, repeats, streams: int = 1, **extra) -> dict:
    """The engine alone on ready tensors, run as `classify` runs it: `streams` batches at once (one
    single-threaded batch per core on a CPU, for the backends that take streams), `repeats` each.
    (One batch on all cores had been timed, while classify ran one per core: end to end came out
    1.6-1.9x "engine-only" for torch bf16 on a busy machine, a ratio that meant nothing.)"""
    from concurrent.futures import ThreadPoolExecutor

    x = np.random.default_rng(0).normal(size=(batch, 3, spec.size, spec.size)).astype(np.float32)
    if getattr(session, "accepts_device_tensors", False):  # engine only: the batch is already on the GPU
        import torch

        x = torch.from_numpy(x).cuda()
    for _ in range(2):
        session.run(x)
    lat = []

    def stream():
        for _ in range(repeats):
            t = time.perf_counter()
            session.run(x)
            lat.append((time.perf_counter() - t) * 1000)

    with GpuUtilisation() as busy:
        started = time.perf_counter()
        if streams > 1:
            with ThreadPoolExecutor(streams) as pool:
                list(pool.map(lambda _: stream(), range(streams)))
        else:
            stream()
        seconds = time.perf_counter() - started
    if busy.mean is not None:
        extra["gpu_util_pct"] = busy.mean
    return emit("engine", session.name, session.precision, batch, spec.size, batch * repeats * streams, seconds,
                lat, provider=session.device, streams=streams, **extra)


def bench_end_to_end(files, model_dir, backend, batch, decoder, **extra) -> dict:
    from engine.run import classify
    from galaxy.config import ClassifyConfig

    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "inputs.csv"
        catalog.write_text("file\n" + "\n".join(files) + "\n", encoding="utf-8")
        warm = Path(tmp) / "warm.csv"
        warm.write_text("file\n" + "\n".join(files[:batch]) + "\n", encoding="utf-8")
        classify(ClassifyConfig((), str(Path(tmp) / "w.csv"), str(model_dir), str(warm), backend=backend,
                                decoder=decoder, batch_size=batch, progress=False))
        with GpuUtilisation() as busy:
            summary = classify(ClassifyConfig((), str(Path(tmp) / "out.csv"), str(model_dir), str(catalog),
                                              backend=backend, decoder=decoder, batch_size=batch, progress=False))
    if busy.mean is not None:
        extra["gpu_util_pct"] = busy.mean
    from engine.artifacts import resolve_model

    spec = resolve_model(model_dir)[1].input_spec
    name, precision = summary.backend.split()
    return emit("end_to_end", name, precision, batch, spec.size, summary.classified, summary.seconds,
                provider=summary.device, decoder=summary.decoder, crop=spec.crop_fraction, **extra)


def bench_baseline(files, model_dir, **extra) -> dict:
    """Plain PyTorch, the way a user would write it: fp32, batch 64, DataLoader + PIL."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from galaxy.training.model import load_network

    network, card = load_network(model_dir)
    spec = card.input_spec
    crop = int(round(423 * spec.crop_fraction))
    tf = transforms.Compose([transforms.CenterCrop(crop), transforms.Resize(spec.size), transforms.ToTensor(),
                             transforms.Normalize(spec.mean, spec.std)])

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return tf(Image.open(files[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Files(), batch_size=64, num_workers=usable_cores())  # the cores it may
    # use, as galaxy's rows are sized: the host's count oversubscribed a quota and made the baseline slow
    with torch.inference_mode():
        network(torch.zeros(2, 3, spec.size, spec.size))
        start, n = time.perf_counter(), 0
        for x in loader:
            torch.softmax(network(x), dim=1)
            n += len(x)
    return emit("baseline", "torch-dataloader", "fp32", 64, spec.size, n, time.perf_counter() - start, **extra)


def bench_baseline_apart(files, model_dir, **extra) -> dict:
    """`bench_baseline` in a fresh Python process: plain PyTorch as a user runs it, with glibc's own
    malloc, torch's default threads and the platform's DataLoader start method, not what this process
    set for galaxy's rows (with the allocator tuning of `engine.allocator` the in-process baseline ran
    26% faster: 5,756 against 4,552/min)."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    code = ("import json, sys; from engine.bench_stages import bench_baseline; a = json.load(sys.stdin); "
            "bench_baseline(a['files'], a['model_dir'], **a['extra'])")
    given = json.dumps({"files": [str(f) for f in files], "model_dir": str(model_dir), "extra": extra})
    run = subprocess.run([sys.executable, "-c", code], input=given, stdout=subprocess.PIPE, text=True, env=env)
    if run.returncode != 0:
        raise GalaxyError(f"the plain-PyTorch baseline failed in its own process (exit {run.returncode}; "
                          "its error is above)")
    row = json.loads(run.stdout.strip().splitlines()[-1])  # the row it printed, printed here in its place
    print(json.dumps(row), flush=True)
    return row


def bench_sizes(sizes, card, batch, repeats) -> list[dict]:
    """Engine-only ONNX Runtime fp32 speed of the architecture at several input sizes."""
    import onnxruntime as ort
    import torch

    from galaxy.training.export import write_onnx
    from galaxy.training.model import create_network
    from galaxy.spec import INPUT_NAME

    rows = []
    network = create_network(card.architecture, len(card.classes)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"m{size}.onnx"
            write_onnx(network, torch.zeros(1, card.input_spec.channels, size, size), path)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

            class Bare:
                name, precision, device = "onnxruntime", "fp32", "CPUExecutionProvider"
                run = staticmethod(lambda x: session.run(None, {INPUT_NAME: x})[0])

            rows.append(bench_engine(Bare, card.input_spec.replace(size=size), batch, repeats))
    return rows
