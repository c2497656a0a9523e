#!/usr/bin/env bash
# Throughput of source training with K prompts in one pass (K = 1, 2, 4, 8
# by default) against one prompt at a time, and the real-token fraction
# with and without length bucketing, at one shape.
#
#   tools/bench/pack_bench.sh MODEL_DIR [STAGE_BENCH_BINARY]
#
# Env: KS ("1 2 4 8"), STEPS (3), WARMUP (1), THREADS (0: every usable
# core), BATCH (4), INPUT (64), TARGET (16), PROMPT (100), SPREAD (1; 0
# skips the padding rows).
# Prints the CPU, the load before each run, wall tokens/s and tokens per
# CPU-second (the figure that other load on the machine disturbs least).
set -euo pipefail
cd "$(dirname "$0")/../.."
model=$1
bench=${2:-bazel-bin/tools/bench/stage_bench}
shape=(--model="$model" --stage=source --batch_size="${BATCH:-4}" --input_length="${INPUT:-64}"
       --target_length="${TARGET:-16}" --num_virtual_tokens="${PROMPT:-100}"
       --steps="${STEPS:-3}" --warmup_steps="${WARMUP:-1}" --threads="${THREADS:-0}"
       --measure_peak=false --json)
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
row() {  # label flags...
  local label=$1; shift
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  "$bench" "${shape[@]}" "$@" | python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
print("%-22s step %8.0f ms  CPU %8.0f ms  %7.0f tokens/s  %7.0f per CPU-s  real tokens %5.1f%%  load %s"
      % (sys.argv[1], j["step_ms"], j["cpu_ms_per_step"], j["tokens_per_second"],
         j["tokens_per_cpu_second"], 100 * j["real_token_fraction"], sys.argv[2]))' "$label" "$load"
}
row "one prompt" --pack=0
for k in ${KS:-1 2 4 8}; do row "pack K=$k" --pack="$k"; done
[ "${SPREAD:-1}" = 0 ] && exit 0
# Padding: lengths spread over [0.3, 1] x the stated lengths, 64 examples a
# task, without and with buckets of 8 batches.
row "spread, no buckets" --pack=0 --length_spread=0.7 --examples_per_task=64
row "spread, buckets of 8" --pack=0 --length_spread=0.7 --examples_per_task=64 \
    --length_bucket_batches=8
row "spread, K=4" --pack=4 --length_spread=0.7 --examples_per_task=64
row "spread, K=4, buckets" --pack=4 --length_spread=0.7 --examples_per_task=64 \
    --length_bucket_batches=8
