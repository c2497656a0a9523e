#!/usr/bin/env bash
# Collects what the GPU checks need into one folder that can be carried to a
# machine with an NVIDIA GPU and a CUDA build of torch but without Bazel or
# Debian's libraries (tools/gpu/run_gpu_checks.sh runs there from it):
#
#   bin/       the worker, mpt_train, stage_bench and the communicator tests
#              of a CUDA build against a torch wheel (README, "GPU"), stripped
#   lib/       the shared libraries those binaries need that such a machine
#              lacks (gRPC, protobuf, Abseil, SentencePiece, Gloo, BLAS, ...),
#              found with ldd: everything but the C runtime, the C++ runtime
#              and what the machine's torch installation provides (libtorch,
#              libc10, CUDA, cuBLAS, cuDNN, NCCL, libgomp)
#   demo/      the demo model, data and pipeline (the accuracy checks)
#   tools/     run_gpu_checks.sh, compare_runs.py and the benchmark scripts
#   MANIFEST   the torch version built against, every file with its size
#              and sha256
#
#   tools/gpu/make_bundle.sh [--bin BAZEL_BIN] [--torch TORCH_FOLDER] [--out DIR]
#
# --bin is the bazel-bin folder of that build (default: the output base the
# README's command uses, ~/.cache/bazel-torch); --torch the torch/ folder it
# was built against (MPT_LIBTORCH; default $MPT_LIBTORCH), whose version the
# machine must have; --out the bundle (default .gpu_bundle, ignored by git).
# Fails when a library cannot be found or the bundle exceeds $MAX_MIB
# (default 54: it travels with the ~10 MiB working tree under a 64 MiB cap).
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=$HOME/.cache/bazel-torch/execroot/mpt/bazel-out/k8-opt/bin
torch=${MPT_LIBTORCH:-}
out=.gpu_bundle
max_mib=${MAX_MIB:-54}
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --torch) torch=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "make_bundle: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$torch" ] || [ ! -f "$torch/lib/libtorch_cuda.so" ]; then
  echo "make_bundle: --torch (or MPT_LIBTORCH) must name the CUDA torch/ folder the binaries were built against" >&2
  exit 2
fi
torch_version=$(sed -n "s/^__version__ = '\(.*\)'$/\1/p" "$torch/version.py" 2>/dev/null || true)
cuda_version=$(sed -n "s/^cuda: Optional\[str\] = '\(.*\)'$/\1/p; s/^cuda = '\(.*\)'$/\1/p" "$torch/version.py" 2>/dev/null | head -1 || true)
[ -n "$torch_version" ] || { echo "make_bundle: cannot read the torch version from $torch/version.py" >&2; exit 2; }

binaries=(worker/worker worker/mpt_train tools/bench/stage_bench
          tests/worker/collectives/nccl_communicator_test
          tests/worker/collectives/gloo_communicator_test)
for b in "${binaries[@]}"; do
  [ -x "$bin/$b" ] || { echo "make_bundle: $bin/$b is missing: build it (README, GPU)" >&2; exit 2; }
  # A binary of the CPU build has no CUDA libtorch in it.
  needed=$(readelf -d "$bin/$b")
  if [[ "$needed" != *libtorch_cuda.so* ]]; then
    echo "make_bundle: $bin/$b is not linked against libtorch_cuda.so (not a CUDA build)" >&2
    exit 2
  fi
done

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/tools"
for b in "${binaries[@]}"; do
  strip --strip-unneeded -o "$out/bin/$(basename "$b")" "$bin/$b"
done

# Provided by the GPU machine: the C and C++ runtimes (its own, newer than
# ours), and torch's and NVIDIA's libraries from its Python packages.
provided='^(linux-vdso|ld-linux|lib(c|m|dl|rt|pthread|util|resolv|stdc\+\+|gcc_s|gomp)\.so|lib(torch|c10|caffe2|shm|cuda|cudart|cublas|cudnn|cufft|cufile|curand|cusolver|cusparse|nccl|nvrtc|nvJitLink|nvToolsExt|nvshmem|nvperf|cupti|nvidia))'
# And whatever libtorch itself links: the machine's torch loads there, so
# its own dependencies are there too (a copy of ours would shadow theirs).
declare -A seen=()
for l in "$torch"/lib/libtorch_cpu.so "$torch"/lib/libtorch_cuda.so; do
  while read -r name _; do seen[$name]=torch; done < <(LD_LIBRARY_PATH="$torch/lib" ldd "$l")
done
missing=()
for b in "${binaries[@]}"; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    [[ "$name" =~ $provided ]] && continue
    [ -n "${seen[$name]:-}" ] && continue
    seen[$name]=1
    if [ "$path" = "not" ] || [ ! -f "$path" ]; then
      missing+=("$name")
      continue
    fi
    cp -L "$path" "$out/lib/$name"
  done < <(LD_LIBRARY_PATH="$torch/lib" ldd "$bin/$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make_bundle: not found here: ${missing[*]}" >&2
  exit 1
fi
strip --strip-unneeded "$out"/lib/*.so* 2>/dev/null || true

cp -r demo "$out/demo"
rm -rf "$out/demo/heldout"
cp tools/gpu/run_gpu_checks.sh tools/gpu/compare_runs.py tools/bench/peft_bench.py \
   tools/bench/make_random_t5.py "$out/tools/"

{
  echo "torch $torch_version"
  echo "cuda ${cuda_version:-unknown}"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
  echo "build machine $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
  (cd "$out" && find . -type f ! -name MANIFEST | sort | while read -r f; do
     printf '%10d %s %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" "${f#./}"
   done)
} > "$out/MANIFEST"

mib=$(du -sm "$out" | cut -f1)
echo "make_bundle: $out: ${#binaries[@]} binaries, $(ls "$out/lib" | wc -l) libraries, $mib MiB, for torch $torch_version (CUDA ${cuda_version:-?})"
if [ "$mib" -gt "$max_mib" ]; then
  echo "make_bundle: $out is $mib MiB, over the $max_mib MiB allowed" >&2
  exit 1
fi
