"""Throughput benchmark: images per minute of galaxy classify, per stage, against targets.

Stages:
  listing     engine.listing over the inputs;
  decode      reference reader (read + stretch + crop + resize + normalise), decode workers;
  engine      backend only, on ready tensors;
  end_to_end  engine.run.classify: files on disk -> catalog file;
  baseline    plain PyTorch as a user writes it: DataLoader + PIL/torchvision transforms,
              timm model in eval/inference_mode, batch 64, fp32.
Each measurement warms up first, is timed over repeated runs, and prints one JSON object
(fixed keys); a table with ratios to the baseline and to benchmarks/targets.toml follows.
Ratios are only meaningful within one run on one machine.

  python bench.py --quick          # under a minute (or: galaxy bench --quick)
  python bench.py --images 2000    # the README's figures
  python bench.py --sizes 64,96,128 --engine-only   # speed of candidate input sizes
  python bench.py --gpu --size 299  # GPU backends and decoders, the network at 299 px
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import platform
import resource
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "gz1-sdss" / "images"
TARGETS = ROOT / "benchmarks" / "targets.toml"


@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Versions of everything that decides the speed: libraries, and the GPU when there is one."""
    import importlib.metadata

    import onnxruntime
    import torch

    out = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    for dist in ("nvidia-dali-cuda130", "nvidia-dali-cuda120", "tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        out.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(),
                   cudnn=str(torch.backends.cudnn.version()))
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(stage, backend, precision, batch, size, images, seconds, latencies_ms=(), **extra) -> dict:
    lat = np.asarray(latencies_ms if len(latencies_ms) else [seconds * 1000])
    row = {"stage": stage, "backend": backend, "precision": precision, "batch": batch, "size": size,
           "images": images, "images_per_min": round(60 * images / seconds, 1),
           "p50_ms": round(float(np.percentile(lat, 50)), 2), "p95_ms": round(float(np.percentile(lat, 95)), 2),
           "peak_rss_mb": round(peak_rss_mb(), 1), "device": extra.get("provider", "cpu"), "cpu_count": os.cpu_count(),
           "versions": versions(), **extra}
    print(json.dumps(row), flush=True)
    return row


def image_files(n: int) -> list[str]:
    """n real gz1-sdss files (repeated to n); the bundled samples when ../shared is absent."""
    source = SHARED if SHARED.is_dir() else ROOT / "examples" / "sdss"
    files = sorted(str(p) for p in source.glob("*.jpeg"))
    return [files[i % len(files)] for i in range(n)]


def bench_listing(files) -> dict:
    from engine.listing import iter_inputs

    folder = str(Path(files[0]).parent)
    start = time.perf_counter()
    n = sum(1 for _ in iter_inputs([folder]))
    return emit("listing", "-", "-", 0, 0, n, time.perf_counter() - start)


def bench_decode(files, spec, workers, decoder, batch) -> dict:
    from engine.listing import Item
    from engine.pipelines import open_pipeline

    gpu = decoder in ("dali-gpu", "nvjpeg")
    pipeline = open_pipeline(decoder, spec, workers, 4 * batch, batch_size=batch, device="cuda" if gpu else "cpu")
    list(pipeline.decode(Item(f) for f in files[:batch]))
    start = time.perf_counter()
    n = sum(1 for d in pipeline.decode(Item(f) for f in files) if d.error is None)
    _synchronize()
    return emit("decode", pipeline.name, "fp32", batch, spec.size, n, time.perf_counter() - start, workers=workers,
                provider="cuda" if gpu else "cpu")


def _synchronize():
    """Wait for queued GPU work, so a timing covers it (a no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_engine(session, spec, batch, repeats) -> dict:
    x = np.random.default_rng(0).normal(size=(batch, 3, spec.size, spec.size)).astype(np.float32)
    if getattr(session, "accepts_device_tensors", False):  # engine only: the batch is already on the GPU
        import torch

        x = torch.from_numpy(x).cuda()
    for _ in range(2):
        session.run(x)
    lat = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(x)
        lat.append((time.perf_counter() - t) * 1000)
    return emit("engine", session.name, session.precision, batch, spec.size, batch * repeats, sum(lat) / 1000,
                lat, provider=session.device)


def bench_end_to_end(files, model_dir, backend, batch, decoder) -> dict:
    from engine.run import classify
    from galaxy.config import ClassifyConfig

    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "inputs.csv"
        catalog.write_text("file\n" + "\n".join(files) + "\n")
        warm = Path(tmp) / "warm.csv"
        warm.write_text("file\n" + "\n".join(files[:batch]) + "\n")
        classify(ClassifyConfig((), str(Path(tmp) / "w.csv"), model_dir, str(warm), backend=backend,
                                decoder=decoder, batch_size=batch, progress=False))
        summary = classify(ClassifyConfig((), str(Path(tmp) / "out.csv"), model_dir, str(catalog),
                                          backend=backend, decoder=decoder, batch_size=batch, progress=False))
    from engine.artifacts import resolve_model

    size = resolve_model(model_dir)[1].input_spec.size
    name, precision = summary.backend.split()
    return emit("end_to_end", name, precision, batch, size, summary.classified, summary.seconds,
                provider=summary.device, decoder=summary.decoder)


def bench_baseline(files, model_dir) -> dict:
    """Plain PyTorch, the way a user would write it: fp32, batch 64, DataLoader + PIL."""
    import torch
    from PIL import Image
    from torchvision import transforms

    from galaxy.card import default_model_dir
    from galaxy.training.model import load_network

    network, card = load_network(model_dir or default_model_dir())
    spec = card.input_spec
    crop = int(round(423 * spec.crop_fraction))
    tf = transforms.Compose([transforms.CenterCrop(crop), transforms.Resize(spec.size), transforms.ToTensor(),
                             transforms.Normalize(spec.mean, spec.std)])

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return tf(Image.open(files[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Files(), batch_size=64, num_workers=os.cpu_count())
    with torch.inference_mode():
        network(torch.zeros(2, 3, spec.size, spec.size))
        start, n = time.perf_counter(), 0
        for x in loader:
            torch.softmax(network(x), dim=1)
            n += len(x)
    return emit("baseline", "torch-dataloader", "fp32", 64, spec.size, n, time.perf_counter() - start)


def table(rows, targets) -> str:
    base = next((r for r in rows if r["stage"] == "baseline"), None)
    engine = {(r["backend"], r["size"]): r for r in rows if r["stage"] == "engine"}
    lines = [f"{'stage':<11} {'backend':<17} {'prec':<5} {'size':>4} {'batch':>5} {'images/min':>11} "
             f"{'x baseline':>10}  note", "-" * 96]
    for r in rows:
        ratio = f"{r['images_per_min'] / base['images_per_min']:.2f}" if base else "-"
        note = ""
        if r["stage"] == "end_to_end" and targets and str(r["device"]).startswith("cuda"):
            key = "xception_299_images_per_min" if r["size"] == 299 else "default_size_images_per_min"
            target = targets["gpu"][key]
            note = f"GPU target {target:,}: {'met' if r['images_per_min'] >= target else 'NOT met'}; {r['decoder']} decode"
        elif r["stage"] == "end_to_end" and targets:
            target = targets["cpu"]["end_to_end_images_per_min"]
            note = f"target {target:,}: {'met' if r['images_per_min'] >= target else 'NOT met'}"
            if base:
                wanted = targets["cpu"]["speedup_over_baseline"]
                note += f"; x{wanted:g} baseline: {'met' if r['images_per_min'] >= wanted * base['images_per_min'] else 'NOT met'}"
            key = (r["backend"], r["size"])
            if key in engine:
                share = r["images_per_min"] / engine[key]["images_per_min"]
                wanted = targets["cpu"]["end_to_end_over_engine"]
                note += f"; {share:.2f} of engine-only ({'met' if share >= wanted else 'NOT met'})"
            note = note + f"; {r['decoder']} decode"
        elif r["stage"] == "decode":
            note = f"{r['workers']} workers"
        lines.append(f"{r['stage']:<11} {r['backend']:<17} {r['precision']:<5} {r['size']:>4} {r['batch']:>5} "
                     f"{r['images_per_min']:>11,.0f} {ratio:>10}  {note}")
    return "\n".join(lines)


def main(argv=None):
    """Run the benchmark; `argv` as on the command line (None: sys.argv)."""
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small run, under a minute.")
    parser.add_argument("--images", type=int, default=2000, help="Images for decode/end-to-end/baseline.")
    parser.add_argument("--model", help="Model directory (default: the shipped model).")
    parser.add_argument("--backends", default="onnxruntime,torch,onnxruntime-int8",
                        help="Comma-separated backends; those that cannot load here are reported and skipped.")
    parser.add_argument("--decoders", default="reference,dali", help="Comma-separated decode pipelines.")
    parser.add_argument("--gpu", action="store_true",
                        help="GPU figures: backends tensorrt,torch-cuda and decoders dali-gpu,nvjpeg (where present).")
    parser.add_argument("--size", type=int,
                        help="Run the model's weights at this input size instead (e.g. 299, Xception's own).")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", help="Comma-separated input sizes for engine-only figures (random weights).")
    parser.add_argument("--engine-only", action="store_true")
    args = parser.parse_args(argv)
    n = 200 if args.quick else args.images
    repeats = 5 if args.quick else 20
    targets = tomllib.loads(TARGETS.read_text()) if TARGETS.is_file() else None
    if targets is None:
        print(f"no targets file at {TARGETS}: ratios to targets are left out", file=sys.stderr)

    from engine import backends
    from engine.artifacts import resolve_model

    from engine.pipelines import dali_installed
    from galaxy.errors import GalaxyError

    rows = []
    model_dir, card = resolve_model(args.model)
    if args.gpu:
        args.backends, args.decoders = "tensorrt,torch-cuda", "nvjpeg,dali-gpu"
    if args.size:
        model_dir, card = resized_model(model_dir, card, args.size)
        args.model = str(model_dir)
    options = backends.BackendOptions(batch_size=args.batch)
    names = [b for b in args.backends.split(",") if b]
    decoders = [d for d in args.decoders.split(",") if d and (d != "dali" or dali_installed())]
    if args.sizes:
        rows += bench_sizes([int(s) for s in args.sizes.split(",")], card, args.batch, repeats)
    else:
        for name in list(names):
            try:
                session = backends.load(name, model_dir, card, options)
            except GalaxyError as exc:
                print(f"skipping backend {name}: {exc}", file=sys.stderr)
                names.remove(name)
                continue
            rows.append(bench_engine(session, card.input_spec, args.batch, repeats))
    if not args.engine_only:
        files = image_files(n)
        rows.append(bench_listing(files))
        for decoder in decoders:
            try:
                rows.append(bench_decode(files, card.input_spec, os.cpu_count(), decoder, args.batch))
            except GalaxyError as exc:
                print(f"skipping decoder {decoder}: {exc}", file=sys.stderr)
        for name in names:
            rows.append(bench_end_to_end(files, args.model, name, args.batch, "auto" if args.gpu else decoders[-1]))
        if not args.gpu:
            rows.append(bench_baseline(files, args.model))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
          f"model {card.name} ({card.input_spec.size} px)", file=sys.stderr)
    print(table(rows, targets), file=sys.stderr)


def resized_model(model_dir, card, size: int):
    """The same weights with input size `size`, in a temporary model directory.

    Convolutional networks with global pooling run at any size: this measures the speed
    of the architecture at e.g. 299 px (Xception's own) with trained weights.
    """
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix=f"galaxy-{size}px-"))
    for name in ("model.safetensors", "val_ids.txt"):
        if (Path(model_dir) / name).is_file():
            shutil.copy(Path(model_dir) / name, tmp / name)
    card = copy.deepcopy(card)
    card.input_spec = card.input_spec.replace(size=size)
    card.name, card.export = f"{card.name}-at-{size}px", {}
    card.save(tmp)
    return tmp, card


def bench_sizes(sizes, card, batch, repeats) -> list[dict]:
    """Engine-only ONNX Runtime fp32 speed of the architecture at several input sizes."""
    import onnxruntime as ort
    import torch

    from galaxy.training.model import create_network
    from galaxy.spec import INPUT_NAME, OUTPUT_NAME

    rows = []
    network = create_network(card.architecture, len(card.classes)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"m{size}.onnx"
            torch.onnx.export(network, (torch.zeros(1, 3, size, size),), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "b"}}, opset_version=17,
                              dynamo=False)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

            class Bare:
                name, precision, device = "onnxruntime", "fp32", "CPUExecutionProvider"
                run = staticmethod(lambda x: session.run(None, {INPUT_NAME: x})[0])

            rows.append(bench_engine(Bare, card.input_spec.replace(size=size), batch, repeats))
    return rows


if __name__ == "__main__":
    main()
