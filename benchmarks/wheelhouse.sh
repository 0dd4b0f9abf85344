#!/usr/bin/env bash
# Wheels that benchmarks/gpu_check.sh needs on a GPU machine without network access whose image
# already has torch, torchvision, timm, onnx and onnxruntime (the project's lent H100 image).
# Run where the package index is reachable, for the GPU machine's Python version:
#
#   bash benchmarks/wheelhouse.sh 3.11 .wheels/      # ~120 MB for 3.11: carry it in two parts
#                                                    # (two ignored folders, one per call), then
#                                                    # move both into one folder on the GPU machine
#   GALAXY_WHEELHOUSE=.wheels bash benchmarks/gpu_check.sh      # on the GPU machine
#
# DALI (nvidia-dali-cuda130, ~200 MB) is optional: add --dali to fetch it too (split the wheel
# with `split -b 60m` to carry it, join with cat before installing).
set -euo pipefail
PYVER="${1:?python version of the GPU machine, e.g. 3.11}"
DEST="${2:-.wheels}"
mkdir -p "$DEST"
pkgs=(astropy click pyarrow pandas tqdm matplotlib pytest hypothesis pillow safetensors pyyaml)
[ "${3:-}" = "--dali" ] && pkgs+=(nvidia-dali-cuda130)
python3 -m pip download -q --only-binary=:all: --python-version "$PYVER" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --implementation cp -d "$DEST" "${pkgs[@]}"
du -sh "$DEST"
