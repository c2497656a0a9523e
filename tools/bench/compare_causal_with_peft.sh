#!/usr/bin/env bash
# Times a stage's training step on a decoder-only model with mpt
# (stage_bench) and with PEFT + transformers (peft_bench.py, task_type
# CAUSAL_LM, eager attention, no dropout) on the same shapes, the same
# number of threads and the same weight dtypes, runs interleaved, and prints
# them side by side: wall and CPU milliseconds per step, tokens per second,
# matrix-product FLOPs per step, peak resident memory, and the load average
# before each run (figures from a loaded machine are marked by it).
#
#   tools/bench/compare_causal_with_peft.sh [MODEL_FOLDER]
#
# MODEL_FOLDER defaults to $MPT_BENCH_DIR/qwen2-0.5b-shaped (MPT_BENCH_DIR
# defaults to /tmp/mpt-bench), a random checkpoint of Qwen2.5-0.5B's shape
# (494M parameters, bf16, about 1 GB) written on first use by
# tests/testdata/make_llama_goldens.py --qwen2_05b_shaped. Needs $PYTHON
# (default python3) with torch, transformers and peft; the mpt side is
# bazel-bin/tools/bench/stage_bench (or $STAGE_BENCH).
#
# Env (defaults): THREADS (nproc), STAGE (source), BATCH (2), INPUT (64),
# TARGET (16), PROMPT (20), STEPS (2), WARMUP (1), DTYPES ("float32
# bfloat16"), ROUNDS (1): each round runs mpt then PEFT for every dtype.
# COUNT_FLOPS=1 (default) has PEFT's first run count its step's FLOPs with
# torch's FlopCounterMode (one extra step); mpt's figure is stage_bench's
# count of its own step (the LM head at the target-predicting positions
# only, where transformers computes it at every position).
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
bench=${STAGE_BENCH:-bazel-bin/tools/bench/stage_bench}
dir=${MPT_BENCH_DIR:-/tmp/mpt-bench}
model=${1:-$dir/qwen2-0.5b-shaped}
threads=${THREADS:-$(nproc)}
stage=${STAGE:-source}
batch=${BATCH:-2} input=${INPUT:-64} target=${TARGET:-16} prompt=${PROMPT:-20}
steps=${STEPS:-2} warmup=${WARMUP:-1} rounds=${ROUNDS:-1}
dtypes=${DTYPES:-float32 bfloat16}
count_flops=${COUNT_FLOPS:-1}

if [ ! -f "$model/config.json" ]; then
  "$python" tests/testdata/make_llama_goldens.py --qwen2_05b_shaped "$model"
fi

echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores"
echo "PEFT: torch $("$python" -c 'import torch; print(torch.__version__)'); mpt: $bench"
printf '%s: stage %s, batch %s, input %s + target %s tokens, %s prompt tokens, %s threads, ' \
  "$model" "$stage" "$batch" "$input" "$target" "$prompt" "$threads"
printf '%s steps after %s warm-up\n' "$steps" "$warmup"
printf '  %-5s %-8s %-9s %10s %10s %9s %9s %8s %-16s %s\n' round impl dtype "wall ms" "CPU ms" \
  "tok/s" "GFLOP" "RSS MiB" "load (1/5/15)" "losses (warm-up first)"

args=(--model="$model" --stage="$stage" --batch_size="$batch" --input_length="$input"
      --target_length="$target" --num_virtual_tokens="$prompt" --steps="$steps"
      --warmup_steps="$warmup" --threads="$threads")
results=$(mktemp)
trap 'rm -f "$results"' EXIT
report() {  # round impl load json
  python3 - "$@" <<'PY' | tee -a "$results"
import json, sys
rnd, impl, load, j = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
dtype = {"Float": "float32", "BFloat16": "bfloat16", "Half": "float16"}.get(j["dtype"], j["dtype"])
gflop = j.get("gflop_per_step", 0)
losses = " ".join(f"{x:.3f}" for x in j.get("losses", []))
print(f"  {rnd:<5s} {impl:<8s} {dtype:<9s} {j['step_ms']:10.0f} {j['cpu_ms_per_step']:10.0f} "
      f"{j['tokens_per_second']:9.1f} {gflop if gflop else float('nan'):9.4g} "
      f"{j['peak_rss_mib']:8.0f} {load:<16s} {losses}")
PY
}
counted=0
for r in $(seq 1 "$rounds"); do
  for dtype in $dtypes; do
    load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)
    ours=$("$bench" "${args[@]}" --dtype="$dtype" --json)
    report "$r" mpt "$load" "$ours"
    extra=()
    if [ "$count_flops" = 1 ] && [ "$counted" = 0 ]; then extra=(--count_flops); counted=1; fi
    load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)
    theirs=$("$python" tools/bench/peft_bench.py "${args[@]}" --dtype="$dtype" "${extra[@]}" \
             --json 2>/dev/null)
    report "$r" peft "$load" "$theirs"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for dtype in dict.fromkeys(r[2] for r in rows):
    def med(impl, col):
        return statistics.median(float(r[col]) for r in rows if r[1] == impl and r[2] == dtype)
    print(f"  {dtype}: PEFT / mpt per step: wall {med('peft', 3) / med('mpt', 3):.2f}x, "
          f"CPU {med('peft', 4) / med('mpt', 4):.2f}x (medians over rounds)")
PY
