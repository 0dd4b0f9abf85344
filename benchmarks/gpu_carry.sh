#!/usr/bin/env bash
# The Python packages benchmarks/gpu_check.sh needs on a GPU machine that has no network and no
# DALI or astropy (the project's lent H100/H200 image: Python 3.12 with torch, torchvision, timm,
# onnx, onnxruntime, click, pyarrow, pandas, matplotlib, pytest), as one pruned site-packages
# tarball split into parts that each fit beside the working tree in one 64 MiB device call once
# the model weights (52 MiB of the 53.7 MiB tracked tree) are moved out of it for that call.
#
#   bash benchmarks/gpu_carry.sh 3.12 .wheels-carry 55     # here, where the package index is reachable
#   # then one device call per part, each carrying only .wheels-carry/pN, moved on the device to
#   # /tmp/pp/pN, and a last call with the weights back that runs (benchmarks/RESULTS.md, "How to run
#   # it again", spells out the calls)
#   GALAXY_SITE_PARTS=/tmp/pp bash benchmarks/gpu_check.sh
# DEST must be a folder git ignores (/.wheels*/ is): untracked files travel with every device call.
#
# Pruned: DALI and nvImageCodec extension modules for other Python versions, DALI's C++ headers,
# nvCOMP, nvJPEG2000 and nvTIFF (no operator of this project uses them; nvImageCodec logs that
# the last two are absent). DALI 2.4 + nvImageCodec + nvJPEG + astropy: 528 MB unpacked, 163 MB as xz.
set -euo pipefail
PYVER="${1:?python version of the GPU machine, e.g. 3.12}"
DEST="${2:-.wheels-carry}"
PART_MB="${3:-55}"  # 55 MiB + the weightless tree (3.6 MiB): 5 MiB under 64 for later commits
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkgs=(nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43 astunparse gast libcst makefun nvtx optree
      astropy==8.0.2 astropy-iers-data pyerfa)
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$work/wheels" "${pkgs[@]}"
mkdir -p "$work/site"
for wheel in "$work"/wheels/*.whl; do (cd "$work/site" && "${PYTHON:-python3}" -m zipfile -e "$wheel" .); done
find "$work/site" -name "*cpython-3*" | grep -v -- "cpython-${PYVER/./}-" | xargs -r rm -f
rm -rf "$work/site/nvidia/dali/include"
(cd "$work/site" && tar -cf - .) | xz -T0 -6 > "$work/site.tar.xz"
rm -rf "$DEST" && mkdir -p "$DEST"
(cd "$work" && split -b "${PART_MB}m" -d site.tar.xz part.)
k=1
for part in "$work"/part.*; do mkdir -p "$DEST/p$k" && mv "$part" "$DEST/p$k/"; k=$((k + 1)); done
du -sh "$DEST"/*
