#!/usr/bin/env bash
# One-shot GPU check: environment, the GPU tests, and the GPU benchmarks, in at most 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with a GPU
#
# Installs nothing from the network. Python packages the project wants but the machine lacks come
# from carried files: $GALAXY_SITE_PARTS, a folder of site-packages tarball parts made by
# benchmarks/gpu_carry.sh (DALI, nvImageCodec, nvJPEG, astropy; unpacked into this Python's
# site-packages). Optional: DALI matched nvJPEG end to end on 2026-11-28 (benchmarks/RESULTS.md). DALI and TensorRT are used where importable; the report says plainly what
# was skipped because it is absent. Every step has its own time limit, so one that hangs or fails
# leaves the others' results. Writes a fresh, git-ignored benchmarks/gpu-results/latest/ (copied to
# $OUT after each step when $OUT is set; a check cut short brings back only its own files, never the
# committed results of earlier runs) and prints the tables; copy it to runN/ to commit it.
# Exit status: the GPU tests', or 1 when they passed and a benchmark failed (a timeout included).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${GALAXY_RESULTS:-benchmarks/gpu-results/latest}"
rm -rf "$RESULTS" && mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GALAXY_CACHE="${GALAXY_CACHE:-$PWD/benchmarks/gpu-results/cache}"
PY="${PYTHON:-python3}"
started=$(date +%s)
save() { if [ -n "${OUT:-}" ]; then cp "$RESULTS"/*.txt "$RESULTS"/*.jsonl "$OUT"/ 2>/dev/null; fi; true; }

if [ -n "${GALAXY_SITE_PARTS:-}" ]; then
  # the parts in numeric order (p10 after p9), unpacked into a folder of their own and merged into
  # this Python's site-packages only once whole: a set cut short (the machine went back between the
  # carrying calls) had left half a DALI there, which was found as present and failed every DALI
  # test. (Merged, not put on PYTHONPATH: the image's `nvidia` package may be a regular one, with an
  # __init__.py, and then only its own folder can hold nvidia.dali.) A warning: the run goes on
  # without DALI/astropy, the GPU figures need neither.
  site=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  unpacked=/tmp/galaxy-site-parts
  parts=$(ls -v "$GALAXY_SITE_PARTS"/*/part.* 2>/dev/null)
  echo "unpacking $(echo "$parts" | grep -c .) carried parts into $site"
  rm -rf "$unpacked" && mkdir -p "$unpacked"
  if [ -n "$parts" ] && cat $parts | $PY -c 'import sys, tarfile
tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz").extractall(sys.argv[1], filter="tar")' "$unpacked" \
     && cp -a "$unpacked"/. "$site"/; then
    rm -rf "$unpacked"
  else
    rm -rf "$unpacked"
    echo "gpu_check: WARNING: the carried parts in $GALAXY_SITE_PARTS could not be unpacked (a part missing?):" \
         "going on without them" | tee -a "$RESULTS/env.txt"
  fi
fi

# what the GPU path needs; astropy (FITS, ECSV) is not among them: its tests skip where it is absent
need="numpy torch torchvision timm onnx onnxruntime click pyarrow PIL tqdm safetensors matplotlib"
missing_packages() {  # the modules of $need this Python cannot import
  $PY - $need <<'PYEOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PYEOF
}
missing=$(missing_packages)
if [ -n "$missing" ]; then  # (the lent image has them all: measured 2026-11-28 to 11-30)
  echo "gpu_check: missing Python packages: $missing (carry them as site-packages parts, GALAXY_SITE_PARTS: benchmarks/gpu_carry.sh)" | tee -a "$RESULTS/env.txt"
  save
  exit 2
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname) ($(nproc) cpus)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null \
    | sed 's/^/gpu (nvidia-smi): /' || echo "gpu: nvidia-smi not found"
  $PY - <<'PYEOF'
import importlib.util, json
from engine.machine import versions
v = versions()
print("versions:", json.dumps(v))
for name, module in (("DALI", "nvidia.dali"), ("TensorRT", "tensorrt")):
    try:  # imported, not just found: half a package is found and fails every test that uses it
        importlib.import_module(module)
        present = "present"
    except Exception as exc:
        present = f"ABSENT ({type(exc).__name__}: {str(exc)[:120]}): its tests and benchmarks are skipped"
    print(f"{name}: {present}")
if "gpu" not in v:
    print("CUDA: NOT AVAILABLE to PyTorch: every GPU test and benchmark below is skipped")
try:  # what a plain `galaxy classify` picks here (auto rules CUDA out without torch where no driver is seen)
    from engine import backends
    from engine.artifacts import resolve_model
    from engine.backends.torch_cuda import cuda_available
    from engine.machine import nvidia_driver_absent
    model_dir, card = resolve_model(None)
    print(f"auto: nvidia_driver_absent {nvidia_driver_absent()}, cuda_available {cuda_available()}, "
          f"picks {backends.pick('auto', card, model_dir)}")
except Exception as exc:  # a report line, never the end of the check
    print(f"auto: could not be asked ({type(exc).__name__}: {exc})")
PYEOF
} | tee -a "$RESULTS/env.txt"
save

echo "== GPU path tests (the gpu/tensorrt/dali-marked ones: the CPU ones run in CI) =="
# (test_gpu_path.py includes one epoch of the training recipe on CUDA: a GPU-only training bug shows here)
timeout 150 $PY -m pytest -q -rs -p no:cacheprovider -m "gpu or tensorrt or dali" tests/engine/test_gpu_path.py \
  tests/engine/test_dali.py 2>&1 | tee "$RESULTS/pytest.txt" | tail -25
tests_rc=${PIPESTATUS[0]}
save

echo "== GPU benchmarks =="
: > "$RESULTS/bench.jsonl"
: > "$RESULTS/bench.txt"
# default size: every shipped model; 299 px: the full Xception only (the compact student is a 64 px
# model). The GPU decoders on 40,000 / 20,000 files; the CPU-bound reference reader on 4,000 (it
# runs ~30,000 images/min on 16 cores: more would only spend GPU time waiting).
# Limits: with the tests' 150 s, 495 s in all, inside a device command's 600 with the unpacking
# (the first reference run builds the ONNX engine too: 45 s cut it before its last row on 2026-11-30).
runs=("--decoders dali-gpu,nvjpeg --images 40000|120"
      "--decoders reference --images 4000|75"
      "--decoders dali-gpu,nvjpeg --images 20000 --models sdss-xception --size 299|90"
      "--decoders reference --images 4000 --models sdss-xception --size 299|60")
bench_failed=0
for run in "${runs[@]}"; do
  read -r -a args <<< "--gpu --batch 256 --rounds 1 ${run%|*}"
  timeout "${run#*|}" $PY bench.py "${args[@]}" >> "$RESULTS/bench.jsonl" 2>> "$RESULTS/bench.txt"
  rc=$?
  echo "bench.py ${args[*]}: exit $rc" >> "$RESULTS/bench.txt"
  [ "$rc" = 0 ] || bench_failed=1
  save
done
grep -v '^INFO\|^WARNING\|%|\|nvjpeg2k\|nvTIFF\|nvtiff\|nvJPEG2000' "$RESULTS/bench.txt" | tail -40

echo "== summary: tests exit $tests_rc, benchmarks $([ $bench_failed = 0 ] && echo ok || echo 'FAILED (see bench.txt)'), $(( $(date +%s) - started )) s in all; results in $RESULTS =="
save
[ "$tests_rc" = 0 ] && exit "$bench_failed"
exit "$tests_rc"
