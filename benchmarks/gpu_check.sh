#!/usr/bin/env bash
# One-shot GPU check: environment, the GPU tests, and the GPU benchmarks, in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with a GPU
#
# Installs nothing from the network. Python packages the project needs but the machine lacks
# (astropy, click, pyarrow, ...) are installed only from a local wheel folder when one is given
# as $GALAXY_WHEELHOUSE (pip install --no-index --find-links; benchmarks/wheelhouse.sh makes it). DALI and TensorRT are used where
# importable; the report says plainly what was skipped because it is absent.
# Writes benchmarks/gpu-results/ (and copies it to $OUT when set) and prints a table.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=benchmarks/gpu-results
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export GALAXY_CACHE="${GALAXY_CACHE:-$PWD/$RESULTS/cache}"
PY="${PYTHON:-python3}"
started=$(date +%s)

need="numpy torch torchvision timm onnx onnxruntime astropy click pyarrow PIL tqdm safetensors matplotlib"
missing=$($PY - $need <<'PYEOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ] && [ -n "${GALAXY_WHEELHOUSE:-}" ]; then
  echo "installing from $GALAXY_WHEELHOUSE (no network): $missing"
  # the project itself runs from this checkout (PYTHONPATH): only its dependencies are installed
  $PY -m pip install -q --no-index --find-links "$GALAXY_WHEELHOUSE" \
    astropy click pyarrow pandas pillow tqdm matplotlib safetensors pyyaml hypothesis pytest
  missing=$($PY - $need <<'PYEOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PYEOF
)
fi
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python packages: $missing (give a wheel folder as GALAXY_WHEELHOUSE)" | tee "$RESULTS/env.txt"
  exit 2
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(hostname) ($(nproc) cpus)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null \
    | sed 's/^/gpu (nvidia-smi): /' || echo "gpu: nvidia-smi not found"
  $PY - <<'PYEOF'
import importlib.util, json
from engine.benchmark import versions
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
PYEOF
} | tee "$RESULTS/env.txt"

echo "== GPU tests (pytest -m 'gpu or tensorrt') =="
timeout 200 $PY -m pytest -q -rs -p no:cacheprovider -m "gpu or tensorrt" tests/engine/test_gpu_path.py \
  2>&1 | tee "$RESULTS/pytest.txt" | tail -15
tests_rc=${PIPESTATUS[0]}

echo "== GPU benchmarks =="
: > "$RESULTS/bench.jsonl"
: > "$RESULTS/bench.txt"
for size in default 299; do
  args=(--gpu --images 20000 --batch 256)
  [ "$size" = 299 ] && args+=(--size 299 --images 10000)
  timeout 150 $PY bench.py "${args[@]}" >> "$RESULTS/bench.jsonl" 2>> "$RESULTS/bench.txt"
  echo "bench.py ${args[*]}: exit $?" >> "$RESULTS/bench.txt"
done
grep -v '^INFO\|^WARNING\|%|' "$RESULTS/bench.txt" | tail -30

echo "== summary: tests exit $tests_rc, $(( $(date +%s) - started )) s in all; results in $RESULTS =="
if [ -n "${OUT:-}" ]; then cp -r "$RESULTS"/*.txt "$RESULTS"/*.jsonl "$OUT"/ 2>/dev/null; fi
exit "$tests_rc"
