#!/usr/bin/env bash
# Distillation step against a source step at one shape, with the teacher
# cache off and on (steady state: every example cached during warm-up),
# best of REPS runs each, with the machine's load. The cache is measured
# twice: holding the teachers' logits (all examples fit with them, the
# product's choice then) and holding hidden states only (32 examples in a
# 16 MiB bound: their logits would not fit, so the LM head is rerun on the
# cached states each step).
#
#   tools/bench/distill_vs_source.sh MODEL_DIR [STAGE_BENCH_BINARY]
#
# Env: REPS (3), STEPS (3), THREADS (0: every usable core).
set -euo pipefail
cd "$(dirname "$0")/../.."
model=$1
bench=${2:-bazel-bin/tools/bench/stage_bench}
reps=${REPS:-3}
steps=${STEPS:-3}
shape=(--model="$model" --batch_size=4 --input_length=64 --target_length=16
       --num_virtual_tokens=100 --steps="$steps" --threads="${THREADS:-0}" --json)
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), $(nproc) cores; best of $reps runs of $steps steps"
best() {  # label flags...
  local label=$1; shift
  local best="" loads=""
  for _ in $(seq "$reps"); do
    loads+="$(cut -d' ' -f1 /proc/loadavg) "
    out=$("$bench" "${shape[@]}" "$@")
    best=$(python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]) if sys.argv[2] else None; print(json.dumps(a if b is None or a["step_ms"]<b["step_ms"] else b))' "$out" "$best")
  done
  echo "$best" > "/tmp/distill_vs_source.$label.json"
  python3 - "$label" "$best" "$loads" <<'PY'
import json, sys
j = json.loads(sys.argv[2])
print(f"{sys.argv[1]:16s} wall {j['step_ms']:8.0f} ms  CPU {j['cpu_ms_per_step']:8.0f} ms  "
      f"{j['gflop_per_step']:6.1f} GFLOP  teacher rows cached {100 * j['teacher_cache_hit_fraction']:3.0f}%  "
      f"load {sys.argv[3]}")
PY
}
best source --stage=source
best distill_nocache --stage=distillation --num_tasks=4 --examples_per_task=1 --warmup_steps=3 --teacher_cache_mib=0
best distill_cache --stage=distillation --num_tasks=4 --examples_per_task=1 --warmup_steps=3
best distill_hidden --stage=distillation --num_tasks=4 --examples_per_task=8 --warmup_steps=40 \
  --teacher_cache_mib=16
python3 - <<'PY'
import json
s, n, c, h = (json.load(open(f"/tmp/distill_vs_source.{k}.json"))
              for k in ("source", "distill_nocache", "distill_cache", "distill_hidden"))
for k, j in (("without cache", n), ("with cache (logits)", c), ("with cache (hidden states)", h)):
    print(f"distillation / source, {k}: wall {j['step_ms'] / s['step_ms']:.2f}x, CPU {j['cpu_ms_per_step'] / s['cpu_ms_per_step']:.2f}x")
PY
