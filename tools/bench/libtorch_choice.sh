#!/usr/bin/env bash
# Compares two stage_bench binaries (two builds: say Debian's libtorch with
# OpenBLAS against a torch wheel's libtorch with its MKL) on the same step,
# to choose the default build by measurement (docs/MEASUREMENTS.md, "Which libtorch").
#
#   tools/bench/libtorch_choice.sh A_STAGE_BENCH B_STAGE_BENCH [MODEL_DIR]
#
# Runs alternate, A B A B ..., REPS times at every thread count of THREADS
# (`--threads=N`: the worker's own split, worker/model/compute_threads.h),
# so that a change of the machine's load hits both alike, and prints per
# binary and thread count the median wall and CPU milliseconds per step
# (CPU: user + system of every thread, less disturbed by other load than
# wall time), the median MFU and the B/A ratios, then every run with the
# 1-minute load average when it started. With PEFT_PYTHON set (a Python with
# torch, transformers and peft) PEFT's step (tools/bench/peft_bench.py) is
# run once per thread count for reference. Every run's JSON goes to
# $OUT_DIR/runs.jsonl when OUT_DIR is set.
#
# MODEL_DIR defaults to the T5-small-sized random model of
# tools/bench/make_random_t5.py in $MPT_BENCH_DIR/t5-small (made with
# PEFT_PYTHON when missing). Env: STAGE (source), REPS (3), STEPS (4),
# THREADS ("1 <nproc>"), BATCH (4), INPUT (64), TARGET (16), PROMPT (100),
# NICE (0: the niceness the runs get).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 2 ]; then
  sed -n '2,24p' "$0" >&2
  exit 2
fi
a=$1
b=$2
model=${3:-${MPT_BENCH_DIR:-/tmp/mpt-bench}/t5-small}
for bin in "$a" "$b"; do
  [ -x "$bin" ] || { echo "libtorch_choice: $bin is not an executable" >&2; exit 2; }
done
if [ ! -f "$model/config.json" ]; then
  if [ -n "${PEFT_PYTHON:-}" ] && [ -z "${3:-}" ]; then
    "$PEFT_PYTHON" tools/bench/make_random_t5.py --out "$model" >/dev/null
  else
    echo "libtorch_choice: $model/config.json is missing (tools/bench/make_random_t5.py makes one)" >&2
    exit 2
  fi
fi
stage=${STAGE:-source}
reps=${REPS:-3}
steps=${STEPS:-4}
threads=${THREADS:-"1 $(nproc)"}
niceness=${NICE:-0}
shape=(--model="$model" --stage="$stage" --batch_size="${BATCH:-4}" --input_length="${INPUT:-64}"
       --target_length="${TARGET:-16}" --num_virtual_tokens="${PROMPT:-100}" --steps="$steps")
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT

lscpu | sed -n 's/^Model name: *//p; s/^CPU family: *//p; s/^Model: *//p' | paste -sd' ' |
  sed 's/^/CPU: /'
echo "$(nproc) cores; stage $stage; $reps runs of $steps steps per binary and thread count, alternating"
echo "A: $a"
echo "B: $b"

run() {  # label threads binary
  local load out
  load=$(cut -d' ' -f1 /proc/loadavg)
  if ! out=$(nice -n "$niceness" "$3" "${shape[@]}" --threads="$2" --json 2>/dev/null); then
    echo "libtorch_choice: $3 failed (run it by hand to see why)" >&2
    exit 1
  fi
  python3 -c 'import json, sys; j = json.loads(sys.argv[1]); j.update(label=sys.argv[2], load1=float(sys.argv[3])); print(json.dumps(j))' \
    "$out" "$1" "$load" >> "$runs"
  printf '.' >&2
}

for rep in $(seq "$reps"); do
  for t in $threads; do
    # Alternate which binary goes first, so neither always follows the other.
    if [ $((rep % 2)) -eq 1 ]; then
      run A "$t" "$a"; run B "$t" "$b"
    else
      run B "$t" "$b"; run A "$t" "$a"
    fi
  done
done
if [ -n "${PEFT_PYTHON:-}" ]; then
  for t in $threads; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    out=$(nice -n "$niceness" "$PEFT_PYTHON" tools/bench/peft_bench.py "${shape[@]}" \
          --threads="$t" --json 2>/dev/null)
    python3 -c 'import json, sys; j = json.loads(sys.argv[1]); j.update(label="PEFT", load1=float(sys.argv[2]), threads=int(sys.argv[3])); print(json.dumps(j))' \
      "$out" "$load" "$t" >> "$runs"
    printf '.' >&2
  done
fi
echo >&2
[ -z "${OUT_DIR:-}" ] || { mkdir -p "$OUT_DIR"; cp "$runs" "$OUT_DIR/runs.jsonl"; }

python3 - "$runs" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(xs):
    return statistics.median(xs) if xs else float("nan")
def what(j):
    if j["label"] == "PEFT":
        return f"PEFT + transformers, torch {j.get('torch', '?')}"
    blas = j.get("blas") or j.get("blas_library") or "unknown BLAS"
    return (f"libtorch {j.get('libtorch_version', '?')}, {blas.split(' for ')[0]} "
            f"({j.get('blas_threading', '?')}), OMP_WAIT_POLICY {j.get('omp_wait_policy') or 'unset'}")
for label in ["A", "B", "PEFT"]:
    some = [j for j in runs if j["label"] == label]
    if some:
        print(f"{label}: {what(some[0])}")
print()
print(f"{'threads':>7} {'build':5} {'runs':>4} {'wall ms':>9} {'CPU ms':>9} {'MFU':>6}   split (libtorch x BLAS)")
table = {}
for t in sorted({j["threads"] for j in runs}):
    for label in ["A", "B", "PEFT"]:
        some = [j for j in runs if j["label"] == label and j["threads"] == t]
        if not some:
            continue
        wall = med([j["step_ms"] for j in some])
        cpu = med([j["cpu_ms_per_step"] for j in some])
        mfu = med([j.get("mfu", float("nan")) for j in some])
        table[(t, label)] = (wall, cpu)
        split = (f"{some[0]['intra_op_threads']} x {some[0]['blas_threads']}"
                 if "intra_op_threads" in some[0] else f"torch.set_num_threads({t})")
        print(f"{t:7d} {label:5} {len(some):4d} {wall:9.1f} {cpu:9.1f} {100 * mfu:5.1f}%   {split}")
    if (t, "A") in table and (t, "B") in table:
        (wa, ca), (wb, cb) = table[(t, "A")], table[(t, "B")]
        print(f"{t:7d} B/A   {'':4} {wb / wa:9.2f} {cb / ca:9.2f}")
print()
print("every run (order of running): build threads wall_ms cpu_ms load1")
for j in runs:
    print(f"  {j['label']:4} {j['threads']:2d} {j['step_ms']:9.1f} {j.get('cpu_ms_per_step', float('nan')):9.1f} {j['load1']:6.2f}")
PY
