#!/usr/bin/env bash
# Times a stage_bench step for each split of libtorch intra-op threads x
# OpenBLAS threads (set with openblas_set_num_threads(), or left to
# OPENBLAS_NUM_THREADS), best of REPS runs each, and prints wall and CPU
# milliseconds per step with the machine's load. The default split
# (worker/model/compute_threads.h) is the row "default".
#
#   tools/bench/thread_matrix.sh MODEL_DIR [STAGE_BENCH_BINARY]
#
# MODEL_DIR: e.g. the T5-small-sized model of tools/bench/make_random_t5.py.
# Env: STAGE (source), REPS (3), STEPS (3), CORES (nproc).
set -euo pipefail
cd "$(dirname "$0")/../.."
model=$1
bench=${2:-bazel-bin/tools/bench/stage_bench}
stage=${STAGE:-source}
reps=${REPS:-3}
steps=${STEPS:-3}
cores=${CORES:-$(nproc)}
shape=(--model="$model" --stage="$stage" --batch_size=4 --input_length=64 --target_length=16
       --num_virtual_tokens=100 --steps="$steps" --json)

echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; stage $stage;" \
     "best of $reps runs of $steps steps"
printf '%-34s %10s %10s %8s %s\n' "libtorch x OpenBLAS threads" "wall ms" "CPU ms" "MFU" "load (1 min) per run"
row() {  # label env-assignments... -- stage_bench flags...
  local label=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local best="" loads=""
  for _ in $(seq "$reps"); do
    loads+="$(cut -d' ' -f1 /proc/loadavg) "
    out=$(env "${envs[@]}" "$bench" "${shape[@]}" "$@")
    best=$(python3 - "$out" "$best" <<'PY'
import json, sys
a = json.loads(sys.argv[1])
b = json.loads(sys.argv[2]) if sys.argv[2] else None
print(json.dumps(a if b is None or a["step_ms"] < b["step_ms"] else b))
PY
)
  done
  python3 - "$label" "$best" "$loads" <<'PY'
import json, sys
j = json.loads(sys.argv[2])
print(f"{sys.argv[1]:34s} {j['step_ms']:10.0f} {j['cpu_ms_per_step']:10.0f} {100*j['mfu']:7.1f}% {sys.argv[3]}"
      f"(libtorch {j['intra_op_threads']}, BLAS {j['blas_threads']})")
PY
}
row "default (--threads=0)" X=1 -- --threads=0
for t in $(seq "$cores"); do
  for b in $(seq "$cores"); do
    row "libtorch $t x OpenBLAS $b (API)" X=1 -- --intra_op_threads="$t" --blas_threads="$b"
  done
done
for b in $(seq "$cores"); do
  row "libtorch 1 x OPENBLAS_NUM_THREADS=$b" OPENBLAS_NUM_THREADS="$b" -- --intra_op_threads=1 --blas_threads=-1
done
row "libtorch $cores x OPENBLAS_NUM_THREADS unset" X=1 -- --intra_op_threads="$cores" --blas_threads=-1
