#!/usr/bin/env bash
# stage_bench on the tiny decoder-only llama (tests/testdata/causal_lm): it
# picks the family from config.json, trains (the loss falls on its fixed
# batch), counts the FLOPs of its step by the rule torch agrees with, and
# refuses bad flags naming them.
#
# The FLOP figure: torch's FlopCounterMode counts 21,281,280 matrix-product
# FLOPs in PEFT's source step on this model at batch 3, 6 prompt + 10 input
# + 4 target positions (tools/bench/peft_bench.py --count_flops, torch 2.15,
# transformers 5.24, PEFT 0.21.2), where transformers runs the LM head
# (2075 x 32) and the last layer at all 20 positions. mpt runs the LM head
# at the 4 target-predicting positions only: 2 x (forward + backward) x 3 x
# 16 x 2075 x 32 = 12,748,800 fewer; and the last layer's queries, output
# projection and MLP there only (2 x 2 x 48 rows x (32 x 32 + 32 x 32 +
# 128 x 32 + 32 x 64) = 1,572,864 fewer) and its attention scores and
# weighted values for 4 of 20 queries (2 x 2 x 3 x 4 heads x 16 x 20 x 8,
# twice in the backward: 368,640 fewer): 6,590,976.
set -euo pipefail
root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
bench="$root/tools/bench/stage_bench"
model="$root/tests/testdata/causal_lm/model"
fail() { echo "FAIL: $*" >&2; exit 1; }

run() {  # stage [more flags]
  "$bench" --model="$model" --stage="$1" --batch_size=3 --input_length=10 --target_length=4 \
    --num_virtual_tokens=6 --num_tasks=2 --steps=3 --warmup_steps=1 --threads=1 \
    --measure_peak=false --json "${@:2}"
}

out=$(run source)
echo "$out"
python3 - "$out" <<'PY' || fail "source: see above"
import json, math, sys
j = json.loads(sys.argv[1])
assert j["family"] == "decoder-only" and j["model_type"] == "llama", j
assert j["dtype"] == "Float", j["dtype"]
assert round(j["gflop_per_step"] * 1e9) == 6590976, j["gflop_per_step"]
losses = j["losses"]
assert len(losses) == 4 and all(math.isfinite(x) for x in losses), losses
assert losses[-1] < losses[0] - 0.5, losses
assert j["cpu_ms_per_step"] > 0 and j["peak_rss_mib"] > 0, j
PY

for stage in distillation target; do
  out=$(run "$stage")
  python3 - "$out" <<'PY' || fail "$stage: $out"
import json, math, sys
j = json.loads(sys.argv[1])
assert len(j["losses"]) == 4 and all(math.isfinite(x) for x in j["losses"]), j["losses"]
PY
done

# Runs long enough for the trainer's default logging window to exceed one
# step (more than 50 steps) still time every step: the steady state of a
# teacher cache is measured after a long warm-up.
out=$(run distillation --warmup_steps=55 --steps=2 --examples_per_task=6 --teacher_cache_mib=16)
python3 - "$out" <<'PY' || fail "a 57-step run: $out"
import json, sys
j = json.loads(sys.argv[1])
assert len(j["losses"]) == 57, len(j["losses"])
assert j["teacher_cache_hit_fraction"] == 1.0 and j["teacher_cache_keeps_logits"], j
PY

# Two lanes: each runs the same stage as one lane does (the same losses),
# the machine's figures count both, and the peak is measured in both.
one=$(run source)
two=$("$bench" --model="$model" --stage=source --batch_size=3 --input_length=10 --target_length=4 \
  --num_virtual_tokens=6 --steps=3 --warmup_steps=1 --threads=2 --lanes=2 --json)
python3 - "$one" "$two" <<'PY' || fail "--lanes=2: $two"
import json, sys
one, two = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert two["lanes"] == 2 and one["lanes"] == 1, two
assert two["losses"] == one["losses"], (two["losses"], one["losses"])
assert two["gflop_per_step"] == one["gflop_per_step"], two
assert two["achieved_gflops"] > 0 and two["matmul_peak_gflops"] > 0 and 0 < two["mfu"] < 2, two
PY
if err=$("$bench" --model="$model" --lanes=0 2>&1); then fail "--lanes=0 accepted"; fi
grep -q -- "--lanes" <<<"$err" || fail "the lanes error does not name --lanes: $err"

# --trace: libtorch's profiler trace of the steps, summed per operator by
# trace_ops.py; attention's products show as mpt::BatchedMatmul where they
# take its BLAS path (a libtorch whose BLAS is not MKL inside it).
traced=$(run source --trace="$TEST_TMPDIR/trace.json") || fail "--trace run failed"
ops=$(python3 "$root/tools/bench/trace_ops.py" "$TEST_TMPDIR/trace.json" --top 100) ||
  fail "trace_ops.py failed"
echo "$ops" | head -5
grep -q "aten::mm" <<<"$ops" || fail "no aten::mm in the trace: $ops"
if python3 -c 'import json, sys; sys.exit(json.loads(sys.argv[1])["blas_threading"].startswith("inside libtorch"))' "$traced"; then
  grep -q "mpt::BatchedMatmul" <<<"$ops" || fail "no mpt::BatchedMatmul in the trace: $ops"
fi

bf16=$("$bench" --model="$model" --dtype=bfloat16 --batch_size=3 --input_length=10 \
  --target_length=4 --num_virtual_tokens=6 --steps=1 --threads=1 --measure_peak=false --json)
python3 -c 'import json, sys; j = json.loads(sys.argv[1]); assert j["dtype"] == "BFloat16", j' \
  "$bf16" || fail "--dtype=bfloat16: $bf16"

if err=$("$bench" --model="$model" --num_transformer_submodules=3 2>&1); then
  fail "--num_transformer_submodules=3 accepted"
fi
grep -q -- "--num_transformer_submodules" <<<"$err" || fail "the error does not name the flag: $err"
if err=$("$bench" --model="$model" --dtype=float64 2>&1); then fail "--dtype=float64 accepted"; fi
grep -q -- "--dtype" <<<"$err" || fail "the dtype error does not name --dtype: $err"
if err=$("$bench" --model="$TEST_TMPDIR/none" 2>&1); then fail "a missing folder accepted"; fi
grep -q "config.json" <<<"$err" || fail "the missing-folder error does not name config.json: $err"
echo PASS
