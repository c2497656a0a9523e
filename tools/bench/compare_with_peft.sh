#!/usr/bin/env bash
# Times every stage's training step with mpt (stage_bench) and with PEFT +
# transformers (peft_bench.py) on the same shapes and the same torch build,
# and prints them side by side.
#
#   tools/bench/compare_with_peft.sh [STAGE_BENCH_BINARY]
#
# The binary defaults to the one built against the torch wheel that python3
# imports (see README: "Building against another libtorch"), so both sides
# run the same libtorch; pass another to compare another build. Needs
# python3 with torch, transformers and peft. Writes the T5-small-sized
# random model to $MPT_BENCH_DIR (default /tmp/mpt-bench).
set -euo pipefail
cd "$(dirname "$0")/../.."
bench=${1:-$HOME/.cache/bazel-torch/execroot/mpt/bazel-out/k8-opt/bin/tools/bench/stage_bench}
dir=${MPT_BENCH_DIR:-/tmp/mpt-bench}
threads=${THREADS:-2}
steps=${STEPS:-5}
torch_dir=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
nvidia=$(ls -d "$torch_dir"/../nvidia/*/lib 2>/dev/null | tr '\n' ':' || true)
export LD_LIBRARY_PATH="$torch_dir/lib:$nvidia${LD_LIBRARY_PATH:-}"

[ -f "$dir/t5-small/config.json" ] || python3 tools/bench/make_random_t5.py --out "$dir/t5-small" >/dev/null

run() {  # model batch input target prompt
  local model=$1 batch=$2 input=$3 target=$4 prompt=$5
  printf '\n%s: batch %s, input %s + target %s tokens, %s prompt tokens, %s threads, %s steps\n' \
    "$model" "$batch" "$input" "$target" "$prompt" "$threads" "$steps"
  printf '  %-13s %12s %12s %10s %12s %12s %10s %8s\n' stage "mpt ms" "peft ms" "speed-up" \
    "mpt tok/s" "peft tok/s" "mpt MiB" "peft MiB"
  for stage in source distillation target; do
    local args=(--model="$model" --stage=$stage --batch_size=$batch --input_length=$input
                --target_length=$target --num_virtual_tokens=$prompt --steps=$steps
                --threads=$threads)
    local ours theirs
    ours=$("$bench" "${args[@]}" --json)
    theirs=$(python3 tools/bench/peft_bench.py "${args[@]}" --json 2>/dev/null)
    python3 - "$stage" "$ours" "$theirs" <<'PY'
import json, sys
stage, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"  {stage:13s} {a['step_ms']:12.1f} {b['step_ms']:12.1f} {b['step_ms'] / a['step_ms']:9.2f}x "
      f"{a['tokens_per_second']:12.0f} {b['tokens_per_second']:12.0f} "
      f"{a['peak_rss_mib']:10.0f} {b['peak_rss_mib']:8.0f}")
PY
  done
}

echo "torch $(python3 -c 'import torch; print(torch.__version__)') for both; mpt binary $bench"
run demo/model 16 32 8 20
run "$dir/t5-small" 4 64 16 100
