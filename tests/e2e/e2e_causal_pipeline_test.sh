#!/usr/bin/env bash
# End to end on a decoder-only model: a coordinator and two workers on
# loopback run source -> distillation (two ranks over Gloo) -> target on the
# tiny llama of tests/testdata/causal_lm (its config.json says model_type
# llama; the workers pick the family from it). The spec is the same kind as
# for T5; every adapter that comes out is a PEFT CAUSAL_LM adapter that fits
# the model, and the service's source prompts are mpt_train's bit for bit.
#
# Another decoder-only folder with the same shape (hidden size 32, the tiny
# llama's tokenizer) can stand in for it by hand:
#   bazel test //tests/e2e:e2e_causal_pipeline_test \
#     --test_env=E2E_CAUSAL_MODEL=/abs/folder --test_env=E2E_CAUSAL_FAMILY=gemma3_text
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

E2E_MODEL="${E2E_CAUSAL_MODEL:-$E2E_RUNFILES/tests/testdata/causal_lm/model}"
family="${E2E_CAUSAL_FAMILY:-llama}"

e2e_start_coordinator
e2e_start_worker w0
e2e_start_worker w1

spec=$(SOURCE_TASKS="first count" TARGET_TASKS="echo:echo" SOURCE_STEPS=8 DISTILL_STEPS=8 \
       TARGET_STEPS=6 CHECKPOINT_EVERY=4 WORLD_SIZE=2 e2e_write_spec "$E2E_DIR/causal.textproto")
job=$(mptctl submit --spec "$spec" --name=e2e-causal)
e2e_log "submitted $job"

watch_rc=0
timeout 240 "$MPTCTL_BIN" --coordinator="$COORD_ADDR" watch "$job" > "$E2E_DIR/logs/watch.log" 2>&1 ||
  watch_rc=$?
[ "$watch_rc" -eq 0 ] || e2e_fail "mptctl watch exited with $watch_rc"
[ "$(e2e_job_field "$job" state)" = SUCCEEDED ] || e2e_fail "job not SUCCEEDED"
for stage in source/first source/count distillation target/echo; do
  [ "$(e2e_stage_field "$job" "$stage" state)" = SUCCEEDED ] || e2e_fail "$stage did not succeed"
done

# The workers loaded the decoder-only family; the distillation was a gang.
grep -q "($family) on cpu" "$E2E_DIR"/logs/w*.log || e2e_fail "no worker loaded the $family model"
grep -q "rank 1 of 2 over gloo" "$E2E_DIR"/logs/w*.log || e2e_fail "no rank 1 over gloo"

out="$E2E_DIR/adapters"
mptctl download "$job" --out="$out" > "$E2E_DIR/logs/download.log"
"$ADAPTER_CHECK_BIN" --model="$E2E_MODEL" \
  "$out/source/first" "$out/source/count" "$out/distillation" "$out/target/echo" \
  > "$E2E_DIR/logs/adapters.log"
cat "$E2E_DIR/logs/adapters.log" >&2
grep -q "source/first PROMPT_TUNING tokens=4 dim=32 tasks=1 names=first task_type=CAUSAL_LM" \
  "$E2E_DIR/logs/adapters.log" || e2e_fail "source adapter is not a CAUSAL_LM PROMPT_TUNING adapter"
grep -q "distillation MULTITASK_PROMPT_TUNING tokens=4 dim=32 tasks=2 names=first,count task_type=CAUSAL_LM" \
  "$E2E_DIR/logs/adapters.log" || e2e_fail "distillation adapter is not a 2-task CAUSAL_LM adapter"
grep -q "target/echo MULTITASK_PROMPT_TUNING tokens=4 dim=32 tasks=1 names=echo task_type=CAUSAL_LM" \
  "$E2E_DIR/logs/adapters.log" || e2e_fail "target adapter is not a CAUSAL_LM multitask adapter"
grep -q '"num_transformer_submodules": 1' "$out/distillation/adapter_config.json" ||
  e2e_fail "the distillation adapter does not say one submodule"

"$E2E_RUNFILES/worker/mpt_train" --spec="$spec" --stage=source --out="$E2E_DIR/local" \
  --progress=none --threads=1 > "$E2E_DIR/logs/mpt_train.log" 2>&1 || e2e_fail "mpt_train failed"
for t in first count; do
  cmp -s "$out/source/$t/adapter_model.safetensors" "$E2E_DIR/local/source/$t/adapter_model.safetensors" ||
    e2e_fail "source/$t differs from mpt_train's"
done
