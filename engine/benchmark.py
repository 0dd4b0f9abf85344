"""Throughput benchmark: images per minute of galaxy classify, per stage, against targets.

Stages:
  listing     engine.listing over the inputs;
  decode      each decode pipeline (read + stretch + crop + resize + normalise), decode workers,
              at each model's input size;
  engine      backend only, on ready tensors, run as classify runs it (one single-threaded batch per
              core on a CPU for ONNX Runtime fp32 and torch; spin-waiting on, the engine alone);
  end_to_end  engine.run.classify: files on disk -> catalog file, per backend; and once more as
              `galaxy classify DIR` runs here with no options (the default model, `--backend auto`
              picking by measuring this machine): the row the targets are read from;
  baseline    plain PyTorch as a user writes it: DataLoader + PIL/torchvision transforms,
              timm model in eval/inference_mode, batch 64, fp32, in a Python process of its own.
Each measurement warms up first, is timed over repeated runs, and prints one JSON object
(fixed keys); a table with ratios to the baseline and to benchmarks/targets.toml follows.
Every shipped model is measured in the same run (or those of --models); each row names its
model's GFLOP per galaxy and, for fp32 and bf16 engines, the fraction of this machine's dense
GEMM speed (its attainable peak, measured in every round, the fastest kept) that the network
reaches; a CPU end-to-end row also says what the decode and engine rows give back to back on
the same cores (`engine.bench_table.serial_share`). Decode, engine-only, end to end and the baseline are measured
--rounds times, interleaved,
and the best round of each is reported: on a shared 2-core VM one round can lose half or more
to a neighbour. Ratios are only meaningful within one run on one machine.

  python bench.py --quick          # about a minute (or: galaxy bench --quick)
  python bench.py --models sdss-xception-compact   # one model only
  python bench.py --images 1000    # the README's figures
  python bench.py --sizes 64,96,128 --engine-only   # speed of candidate input sizes
  python bench.py --gpu --size 299  # GPU backends and decoders, the network at 299 px
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from engine.bench_inputs import ROOT, image_files, resized_model
from engine.bench_stages import (bench_baseline_apart, bench_decode, bench_end_to_end, bench_engine, bench_listing,
                                 bench_sizes, model_fields)
from engine.bench_table import table
from engine.machine import cpu_flags, cpu_name, gemm_gflops, gpu_gemm_gflops, versions
from galaxy.cores import usable_cores
from galaxy.errors import GalaxyError

TARGETS = ROOT / "benchmarks" / "targets.toml"


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _sizes(text: str) -> list[int]:
    """argparse type: comma-separated input sizes of at least 8 pixels."""
    sizes = [_positive(part) for part in text.split(",") if part]
    if not sizes or min(sizes) < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: give sizes of at least 8 pixels, e.g. 64,96,299")
    return sizes


def main(argv=None, prog: str = "bench.py"):
    """Run the benchmark; `argv` as on the command line (None: sys.argv), `prog` as the user typed it."""
    from engine.allocator import tune_allocator

    tune_allocator()  # as the `galaxy` program runs (the baseline runs apart, with glibc's own: bench_baseline_apart)
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="Small run, about a minute: 300 images (unless --images) and 5 engine repeats instead of "
                             "10; a check, not a figure to quote (on idle machines it read within ~3-10%% of a "
                             "1,000-image run; on a busy one two runs an hour apart gave 3.0x and 1.85x).")
    parser.add_argument("--images", type=_positive, help="Images for decode/end-to-end/baseline (default 2000; "
                                                          "--quick: 300).")
    parser.add_argument("--models", "--model", dest="models",
                        help="Comma-separated model names or folders (default: every shipped model).")
    parser.add_argument("--baseline-model", default="sdss-xception",
                        help="The model of the plain-PyTorch baseline row (name or folder).")
    parser.add_argument("--backends", help="Comma-separated backends (default onnxruntime,torch,onnxruntime-int8; "
                        "with --gpu tensorrt,torch-cuda); those that cannot load here are reported and skipped.")
    parser.add_argument("--decoders", help="Comma-separated decode pipelines (default reference,dali; "
                             "with --gpu dali-gpu,nvjpeg,reference).")
    parser.add_argument("--gpu", action="store_true",
                        help="GPU figures: backends tensorrt,torch-cuda x decoders dali-gpu,nvjpeg,reference "
                             "(where present), each end to end; peak fraction against the GPU's fp16 GEMM.")
    parser.add_argument("--size", type=lambda text: _sizes(text)[0],
                        help="Run the models' weights at this input size instead (e.g. 299, Xception's own).")
    parser.add_argument("--batch", type=_positive, default=32,
                        help="Images a batch holds (at most 256; default 32, as classify runs; the default row "
                             "runs at classify's own).")
    parser.add_argument("--rounds", type=_positive, help="Rounds of decode, engine-only, end-to-end and baseline "
                        "measurements, interleaved; the best of each is reported (default 3).")
    parser.add_argument("--sizes", type=_sizes,
                        help="Comma-separated input sizes for engine-only figures (random weights; implies "
                             "--engine-only).")
    parser.add_argument("--engine-only", action="store_true",
                        help="Engine rows only: no listing, decode, end-to-end or baseline measurements.")
    args = parser.parse_args(argv)
    from engine import backends
    from engine.pipelines import PIPELINES
    from galaxy.spec import MAX_BATCH

    if args.batch > MAX_BATCH:  # the runner's batches hold at most that: a row would say one batch and run another
        parser.error(f"--batch {args.batch}: batches hold at most {MAX_BATCH} images")
    for option, given, known in (("--backends", args.backends, backends.BACKENDS),
                                 ("--decoders", args.decoders, PIPELINES)):
        unknown = [name for name in (given or "").split(",") if name and name not in known]
        if unknown:  # a typo had run the whole benchmark, then said "not measured: backend bogus"
            parser.error(f"{option}: unknown {unknown[0]!r}; choose from {', '.join(known)}")
    if args.sizes:  # random weights at other sizes: engine-only figures (an end-to-end row ran at the model's size,
        args.engine_only = True  # and a 32 px engine was put against a 96 px baseline)
    n = args.images or (300 if args.quick else 2000)
    repeats = 5 if args.quick else 10
    rounds = args.rounds or 3
    targets = tomllib.loads(TARGETS.read_text()) if TARGETS.is_file() else None
    if targets is None:
        print(f"no targets file at {TARGETS}: ratios to targets are left out", file=sys.stderr)

    from engine.artifacts import resolve_model
    from engine.pipelines import dali_installed
    from galaxy.card import default_model_dir, shipped_model_dirs

    rows = []
    try:
        models = [resolve_model(m) for m in (args.models.split(",") if args.models else shipped_model_dirs())]
        base_dir, base_card = resolve_model(args.baseline_model)
    except GalaxyError as exc:
        parser.error(str(exc))
    args.backends = args.backends or ("tensorrt,torch-cuda" if args.gpu else "onnxruntime,torch,onnxruntime-int8")
    args.decoders = args.decoders or ("dali-gpu,nvjpeg,reference" if args.gpu else "reference,dali")
    if args.size:  # the baseline too: a ratio is of one network at one size (a 32 px run was put against 96 px)
        models = [resized_model(model_dir, card, args.size) for model_dir, card in models]
        base_dir, base_card = resized_model(base_dir, base_card, args.size)
    options = backends.BackendOptions(batch_size=args.batch)
    options = backends.per_core(options)  # as the runner runs them (GPU backends take no streams: options_for)
    names = [b for b in args.backends.split(",") if b]
    skipped: dict[str, str] = {}  # what was asked for and not measured, with why: said once, and recorded

    def skip(what: str, reason) -> None:
        if what not in skipped:
            skipped[what] = str(reason)
            print(f"skipping {what}: {reason}", file=sys.stderr)

    asked = [d for d in args.decoders.split(",") if d]
    for decoder in asked:
        if decoder in ("dali", "dali-gpu") and not dali_installed():
            skip(f"decoder {decoder}", "nvidia-dali is not installed")
    decoders = [d for d in asked if d not in ("dali", "dali-gpu") or dali_installed()]
    peak: dict = {}
    sessions = {}
    if args.sizes:
        rows += bench_sizes(args.sizes, models[0][1], args.batch, repeats)
    else:
        for model_dir, card in models:
            for name in names:
                try:
                    sessions[str(model_dir), name] = backends.load(name, model_dir, card,
                                                                   backends.options_for(name, options))
                except GalaxyError as exc:
                    skip(f"backend {name} for {card.name}", exc)
    files = image_files(n)
    if not args.engine_only:
        rows.append(bench_listing(files))
    # every input spec of the models (a decode at 64 px is not one at 96), each decoder, every round
    specs = list({(c.input_spec.size, c.input_spec.crop_fraction): c.input_spec for _, c in models}.values())
    # the model and backend `galaxy classify` takes here without --model/--backend: an end-to-end row
    # of its own, `auto` picking by measuring this machine as it does for a user
    default = None if args.gpu or args.engine_only or args.sizes or not decoders else default_model_dir().resolve()
    from galaxy.config import ClassifyConfig

    classify_batch = ClassifyConfig.__dataclass_fields__["batch_size"].default  # what classify runs, not --batch
    for i in range(rounds):  # interleaved, so a slow spell of the machine hits every measurement alike
        if not args.sizes:
            roof = gpu_gemm_gflops() if args.gpu else gemm_gflops()
            # one JSON row per measurement on stdout, the benchmark's (the library measures, returns)
            print(json.dumps({"stage": "gemm_peak", "gflops": roof, **({"gpu": versions().get("gpu")} if args.gpu
                                                                        else {"cpu_count": usable_cores()})}),
                  flush=True)
            peak = {k: max(v, peak.get(k, 0.0)) for k, v in roof.items()}
        for decoder in decoders if not args.engine_only else ():
            for spec in specs:
                try:
                    rows.append(bench_decode(files, spec, usable_cores(), decoder, args.batch, round=i))
                except GalaxyError as exc:
                    skip(f"decoder {decoder}", exc)
        for model_dir, card in models:
            for name in names:
                session = sessions.get((str(model_dir), name))
                if session is not None:
                    rows.append(bench_engine(session, card.input_spec, args.batch, repeats, round=i,
                                             streams=backends.options_for(name, options).streams,
                                             **model_fields(str(model_dir))))
                if not args.engine_only and (args.sizes or session is not None):
                    for decoder in decoders if args.gpu else decoders[-1:]:  # GPU: every decoder x backend
                        try:
                            rows.append(bench_end_to_end(files, model_dir, name, args.batch, decoder, round=i,
                                                         **model_fields(str(model_dir))))
                        except GalaxyError as exc:
                            skip(f"{name} + {decoder}", exc)
            if default == Path(model_dir).resolve():  # what `galaxy classify DIR` does here, options left out
                try:
                    rows.append(bench_end_to_end(files, model_dir, "auto", classify_batch, "auto", round=i, auto=True,
                                                 **model_fields(str(model_dir))))
                except GalaxyError as exc:
                    skip("the default run", exc)
        if not args.engine_only and not args.gpu:
            rows.append(bench_baseline_apart(files, base_dir, round=i, **model_fields(str(base_dir))))
    gpu = f"GPU {versions()['gpu']}, " if "gpu" in versions() else ""
    print(f"\nmachine: {gpu}{cpu_name()}, {usable_cores()} cpus, {cpu_flags()}; dense GEMM here {peak} GFLOP/s; "
          f"models {', '.join(f'{c.name} ({c.input_spec.size} px)' for _, c in models)}", file=sys.stderr)
    print(table(rows, targets, peak), file=sys.stderr)
    for what, reason in skipped.items():  # in the data and under the table too, not only scrolled past on stderr
        print(json.dumps({"stage": "skipped", "what": what, "reason": reason}), flush=True)
        print(f"not measured: {what} ({reason})", file=sys.stderr)


if __name__ == "__main__":
    main()
