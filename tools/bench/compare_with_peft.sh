#!/usr/bin/env bash
# Times every stage's training step with mpt (stage_bench) and with PEFT +
# transformers (peft_bench.py) on the same shapes and the same number of
# threads, and prints them side by side.
#
#   tools/bench/compare_with_peft.sh [STAGE_BENCH_BINARY]
#
# Without an argument it compares the default build (bazel-bin, Debian's
# libtorch and the system's libblas.so.3) with its default thread split
# (--threads=$THREADS: total compute threads, worker/model/compute_threads.h)
# against PEFT on the torch wheel at torch.set_num_threads($THREADS). With
# TORCH_BUILD=1 it uses the binary built against the torch wheel that python
# imports (see README: "Building against another libtorch"), so both sides
# run the same libtorch (pass TORCH_BUILD=1 too for such a binary given as
# the argument); or pass any other binary. Needs $PYTHON (default
# python3) with torch, transformers and peft. Writes the T5-small-sized
# random model to $MPT_BENCH_DIR (default /tmp/mpt-bench). Env: THREADS
# (default: nproc), STEPS (5).
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
if [ -n "${1:-}" ]; then
  bench=$1
elif [ -n "${TORCH_BUILD:-}" ]; then
  bench=$HOME/.cache/bazel-torch/execroot/mpt/bazel-out/k8-opt/bin/tools/bench/stage_bench
else
  bench=bazel-bin/tools/bench/stage_bench
fi
dir=${MPT_BENCH_DIR:-/tmp/mpt-bench}
threads=${THREADS:-$(nproc)}
steps=${STEPS:-5}
if [ -n "${TORCH_BUILD:-}" ]; then
  # The binary built against the wheel finds the wheel's libraries (not set
  # for other binaries: the wheel's libgomp would replace the system's).
  torch_dir=$("$python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
  nvidia=$(ls -d "$torch_dir"/../nvidia/*/lib 2>/dev/null | tr '\n' ':' || true)
  export LD_LIBRARY_PATH="$torch_dir/lib:$nvidia${LD_LIBRARY_PATH:-}"
fi

[ -f "$dir/t5-small/config.json" ] || "$python" tools/bench/make_random_t5.py --out "$dir/t5-small" >/dev/null

run() {  # model batch input target prompt
  local model=$1 batch=$2 input=$3 target=$4 prompt=$5
  printf '\n%s: batch %s, input %s + target %s tokens, %s prompt tokens, %s threads, %s steps\n' \
    "$model" "$batch" "$input" "$target" "$prompt" "$threads" "$steps"
  printf '  %-13s %12s %12s %10s %12s %12s %10s %8s %6s\n' stage "mpt ms" "peft ms" "speed-up" \
    "mpt tok/s" "peft tok/s" "mpt MiB" "peft MiB" "load"
  for stage in source distillation target; do
    local args=(--model="$model" --stage=$stage --batch_size=$batch --input_length=$input
                --target_length=$target --num_virtual_tokens=$prompt --steps=$steps
                --threads=$threads)
    local ours theirs load
    load=$(cut -d' ' -f1 /proc/loadavg)
    ours=$("$bench" "${args[@]}" --json)
    theirs=$("$python" tools/bench/peft_bench.py "${args[@]}" --json 2>/dev/null)
    python3 - "$stage" "$ours" "$theirs" "$load" <<'PY'
import json, sys
stage, a, b, load = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
print(f"  {stage:13s} {a['step_ms']:12.1f} {b['step_ms']:12.1f} {b['step_ms'] / a['step_ms']:9.2f}x "
      f"{a['tokens_per_second']:12.0f} {b['tokens_per_second']:12.0f} "
      f"{a['peak_rss_mib']:10.0f} {b['peak_rss_mib']:8.0f} {load:>6s}")
PY
  done
}

echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "PEFT: torch $("$python" -c 'import torch; print(torch.__version__)'); mpt: $bench"
"$bench" --model=demo/model --steps=1 --warmup_steps=0 --threads="$threads" --measure_peak=false |
  sed -n 2p
run demo/model 16 32 8 20
run "$dir/t5-small" 4 64 16 100
