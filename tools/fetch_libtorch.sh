#!/usr/bin/env bash
# Puts the libtorch of PyPI's torch 2.11.0 wheel on this machine for a CPU
# build against it (third_party/libtorch.bzl with MPT_LIBTORCH_CUDA=0):
#
#   <dest>/torch/include, torch/lib (libtorch_cpu.so, libc10.so, libgomp.so.1),
#         torch/share/cmake, torch/version.py
#   <dest>/nvidia/cu13/lib/libcudart.so.13, libcupti.so.13
#
# The layout is a Python site-packages folder's, so libtorch_cpu.so finds
# the two CUDA libraries through its own run path ($ORIGIN/../../nvidia/
# cu13/lib). PyPI's Linux wheel of torch is a CUDA build; its libtorch_cpu.so
# needs the CUDA runtime and CUPTI (for the profiler) even when no GPU is
# used, hence the two small nvidia wheels. Nothing else of CUDA is unpacked
# and nothing of it is loaded.
#
#   tools/fetch_libtorch.sh [--dest DIR] [--wheels DIR]
#
# --dest: where to unpack (default ~/.cache/mpt-libtorch/torch-2.11.0-cpu);
# --wheels: a folder that already holds the three wheels (no download).
# Otherwise `pip download` fetches them from PyPI (530 MB + 13 MB) into a
# temporary folder, which is removed after unpacking. Every wheel's sha256
# is checked against the pins below. Idempotent: returns at once when <dest>
# holds the pinned version (a stamp file records it).
set -euo pipefail

TORCH_VERSION=2.11.0
# PyPI's files (pip download --no-deps, cp312 manylinux_2_28 x86_64).
TORCH_WHEEL=torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl
TORCH_SHA256=0f68f4ac6d95d12e896c3b7a912b5871619542ec54d3649cf48cc1edd4dd2756
CUDART_REQ=nvidia-cuda-runtime==13.0.96
CUDART_WHEEL=nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
CUDART_SHA256=7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548
CUPTI_REQ=nvidia-cuda-cupti==13.0.85
CUPTI_WHEEL=nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl
CUPTI_SHA256=4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8
STAMP="torch $TORCH_VERSION $TORCH_SHA256 $CUDART_SHA256 $CUPTI_SHA256"

dest=${MPT_LIBTORCH_DEST:-$HOME/.cache/mpt-libtorch/torch-$TORCH_VERSION-cpu}
wheels=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) dest=$2; shift 2 ;;
    --wheels) wheels=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "fetch_libtorch: unknown option $1" >&2; exit 2 ;;
  esac
done

if [ -f "$dest/STAMP" ] && [ "$(cat "$dest/STAMP")" = "$STAMP" ]; then
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch-libtorch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [ -z "$wheels" ]; then
  command -v pip3 >/dev/null || { echo "fetch_libtorch: pip3 is missing (apt-get install python3-pip)" >&2; exit 1; }
  echo "fetch_libtorch: downloading torch $TORCH_VERSION (530 MB) and the CUDA runtime and CUPTI wheels (13 MB) from PyPI" >&2
  # The wheel's libtorch does not depend on the Python version; cp312 is the
  # file pinned here, whatever python3 this machine has.
  pip3 download -q --disable-pip-version-check --no-cache-dir --no-deps --only-binary=:all: \
      --python-version 3.12 --platform manylinux_2_28_x86_64 -d "$tmp" "torch==$TORCH_VERSION"
  pip3 download -q --disable-pip-version-check --no-cache-dir --no-deps --only-binary=:all: \
      -d "$tmp" "$CUDART_REQ" "$CUPTI_REQ"
  wheels=$tmp
fi

for pair in "$TORCH_WHEEL:$TORCH_SHA256" "$CUDART_WHEEL:$CUDART_SHA256" "$CUPTI_WHEEL:$CUPTI_SHA256"; do
  file=${pair%%:*}
  want=${pair##*:}
  [ -f "$wheels/$file" ] || { echo "fetch_libtorch: $wheels/$file is missing" >&2; exit 1; }
  got=$(sha256sum "$wheels/$file" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    echo "fetch_libtorch: $wheels/$file has sha256 $got, expected $want" >&2
    exit 1
  fi
done

# Unpack next to the destination, then swap it in, so that an interrupted
# run never leaves a half-unpacked tree behind a stamp.
mkdir -p "$(dirname "$dest")"
stage=$(mktemp -d "$(dirname "$dest")/.unpack.XXXXXX")
trap 'rm -rf "$tmp" "$stage"' EXIT
unzip -q -o "$wheels/$TORCH_WHEEL" -d "$stage" \
    'torch/include/*' 'torch/share/cmake/*' 'torch/version.py' \
    torch/lib/libtorch_cpu.so torch/lib/libc10.so torch/lib/libgomp.so.1
unzip -q -o "$wheels/$CUDART_WHEEL" -d "$stage" nvidia/cu13/lib/libcudart.so.13
unzip -q -o "$wheels/$CUPTI_WHEEL" -d "$stage" nvidia/cu13/lib/libcupti.so.13
echo "$STAMP" > "$stage/STAMP"
rm -rf "$dest"
mv "$stage" "$dest"
echo "fetch_libtorch: libtorch $TORCH_VERSION (CPU use) in $dest" >&2
