#!/usr/bin/env bash
# One-shot GPU check: environment, the GPU tests, and the GPU benchmarks, in at most 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with a GPU
#
# Installs nothing from the network. Python packages the project needs but the machine lacks come
# from carried files: $GALAXY_SITE_PARTS, a folder of site-packages tarball parts made by
# benchmarks/gpu_carry.sh (DALI, nvImageCodec, nvJPEG, astropy; unpacked into this Python's
# site-packages), or $GALAXY_WHEELHOUSE, a wheel folder made by benchmarks/wheelhouse.sh (pip
# install --no-index). DALI and TensorRT are used where importable; the report says plainly what
# was skipped because it is absent. Every step has its own time limit, so one that hangs or fails
# leaves the others' results. Writes benchmarks/gpu-results/ (copied to $OUT after each step when
# $OUT is set) and prints the tables.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=benchmarks/gpu-results
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GALAXY_CACHE="${GALAXY_CACHE:-$PWD/$RESULTS/cache}"
PY="${PYTHON:-python3}"
started=$(date +%s)
save() { if [ -n "${OUT:-}" ]; then cp "$RESULTS"/*.txt "$RESULTS"/*.jsonl "$OUT"/ 2>/dev/null; fi; true; }

if [ -n "${GALAXY_SITE_PARTS:-}" ]; then
  # the parts in numeric order (p10 after p9); a set cut short (the machine went back between the
  # carrying calls) is a warning: the run goes on without DALI/astropy, the GPU figures need neither
  site=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  parts=$(ls -v "$GALAXY_SITE_PARTS"/*/part.* 2>/dev/null)
  echo "unpacking $(echo "$parts" | grep -c .) carried parts into $site"
  if [ -z "$parts" ] || ! cat $parts | $PY -c 'import sys, tarfile
tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz").extractall(sys.argv[1], filter="tar")' "$site"; then
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
if [ -n "$missing" ] && [ -n "${GALAXY_WHEELHOUSE:-}" ]; then
  echo "installing from $GALAXY_WHEELHOUSE (no network): $missing"
  # the project itself runs from this checkout (PYTHONPATH): only its dependencies are installed
  $PY -m pip install -q --no-index --find-links "$GALAXY_WHEELHOUSE" \
    astropy click pyarrow pandas pillow tqdm matplotlib safetensors pyyaml hypothesis pytest
  missing=$(missing_packages)
fi
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python packages: $missing (give GALAXY_SITE_PARTS or a wheel folder as GALAXY_WHEELHOUSE)" | tee -a "$RESULTS/env.txt"
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
    try:
        present = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        present = False
    print(f"{name}: {'present' if present else 'ABSENT: its tests and benchmarks are skipped'}")
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
} | tee "$RESULTS/env.txt"
save

echo "== GPU path tests (the gpu/tensorrt/dali-marked ones: the CPU ones run in CI) =="
timeout 180 $PY -m pytest -q -rs -p no:cacheprovider -m "gpu or tensorrt or dali" tests/engine/test_gpu_path.py \
  tests/engine/test_dali.py 2>&1 | tee "$RESULTS/pytest.txt" | tail -25
tests_rc=${PIPESTATUS[0]}
save

echo "== GPU benchmarks =="
: > "$RESULTS/bench.jsonl"
: > "$RESULTS/bench.txt"
# default size: every shipped model; 299 px: the full Xception only (the compact student is a 64 px
# model). The GPU decoders on 40,000 / 20,000 files; the CPU-bound reference reader on 4,000 (it
# runs ~30,000 images/min on 16 cores: more would only spend GPU time waiting).
# Limits: with the tests' 180 s, 480 s in all, inside a device command's 600 with the unpacking.
runs=("--decoders dali-gpu,nvjpeg --images 40000|120"
      "--decoders reference --images 4000|45"
      "--decoders dali-gpu,nvjpeg --images 20000 --models sdss-xception --size 299|90"
      "--decoders reference --images 4000 --models sdss-xception --size 299|45")
for run in "${runs[@]}"; do
  read -r -a args <<< "--gpu --batch 256 --rounds 1 ${run%|*}"
  timeout "${run#*|}" $PY bench.py "${args[@]}" >> "$RESULTS/bench.jsonl" 2>> "$RESULTS/bench.txt"
  echo "bench.py ${args[*]}: exit $?" >> "$RESULTS/bench.txt"
  save
done
grep -v '^INFO\|^WARNING\|%|\|nvjpeg2k\|nvTIFF\|nvtiff\|nvJPEG2000' "$RESULTS/bench.txt" | tail -40

echo "== summary: tests exit $tests_rc, $(( $(date +%s) - started )) s in all; results in $RESULTS =="
save
exit "$tests_rc"
