#!/usr/bin/env bash
# End to end (a): a coordinator and two workers on loopback run a whole
# pipeline: three source tasks, distillation on two ranks over Gloo, two
# target tasks. mptctl watches it, downloads every adapter, and the adapters
# load with ReadAdapter and fit the model.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

e2e_start_coordinator
e2e_start_worker w0
e2e_start_worker w1

spec=$(SOURCE_TASKS="first last count" TARGET_TASKS="echo:echo count2:count" WORLD_SIZE=2 \
       e2e_write_spec "$E2E_DIR/pipeline.textproto")
job=$(mptctl submit --spec "$spec" --name=e2e-pipeline)
e2e_log "submitted $job"

# Watch it to the end as a user would (plain lines: not a terminal).
watch_rc=0
timeout 240 "$MPTCTL_BIN" --coordinator="$COORD_ADDR" watch "$job" > "$E2E_DIR/logs/watch.log" 2>&1 ||
  watch_rc=$?
[ "$watch_rc" -eq 0 ] || e2e_fail "mptctl watch exited with $watch_rc"
grep -q "$job: SUCCEEDED" "$E2E_DIR/logs/watch.log" || e2e_fail "watch did not report success"
[ "$(e2e_job_field "$job" state)" = SUCCEEDED ] || e2e_fail "job not SUCCEEDED"

# Every stage ran once and produced an adapter.
for stage in source/first source/last source/count distillation target/echo target/count2; do
  [ "$(e2e_stage_field "$job" "$stage" state)" = SUCCEEDED ] || e2e_fail "$stage did not succeed"
  [ -n "$(e2e_stage_field "$job" "$stage" artifact)" ] || e2e_fail "$stage has no artifact"
done

# The distillation ran as a gang of two over Gloo, one rank per worker.
grep -q "rank 0 of 2 over gloo" "$E2E_DIR"/logs/w*.log || e2e_fail "no rank 0 over gloo"
grep -q "rank 1 of 2 over gloo" "$E2E_DIR"/logs/w*.log || e2e_fail "no rank 1 over gloo"
[ "$(grep -l "joined gang" "$E2E_DIR"/logs/w0.log "$E2E_DIR"/logs/w1.log | wc -l)" -eq 2 ] ||
  e2e_fail "the gang did not span both workers"

# Download everything and load it.
out="$E2E_DIR/adapters"
mptctl download "$job" --out="$out" > "$E2E_DIR/logs/download.log"
"$ADAPTER_CHECK_BIN" --model="$E2E_MODEL" \
  "$out/source/first" "$out/source/last" "$out/source/count" "$out/distillation" \
  "$out/target/echo" "$out/target/count2" > "$E2E_DIR/logs/adapters.log"
cat "$E2E_DIR/logs/adapters.log" >&2
grep -q "source/first PROMPT_TUNING tokens=4" "$E2E_DIR/logs/adapters.log" ||
  e2e_fail "source adapter is not a 4-token PROMPT_TUNING adapter"
grep -q "distillation MULTITASK_PROMPT_TUNING tokens=4 dim=[0-9]* tasks=3 names=first,last,count" \
  "$E2E_DIR/logs/adapters.log" || e2e_fail "distillation adapter is not a 3-task multitask adapter"
grep -q "target/echo MULTITASK_PROMPT_TUNING tokens=4 dim=[0-9]* tasks=1 names=echo" \
  "$E2E_DIR/logs/adapters.log" || e2e_fail "target adapter is not a 1-task multitask adapter"

# The service trains exactly what the single-process trainer trains: the
# source prompts (one task per worker) are bit for bit mpt_train's.
"$E2E_RUNFILES/worker/mpt_train" --spec="$spec" --stage=source --out="$E2E_DIR/local" \
  --progress=none --threads=1 > "$E2E_DIR/logs/mpt_train.log" 2>&1 || e2e_fail "mpt_train failed"
for t in first last count; do
  cmp -s "$out/source/$t/adapter_model.safetensors" "$E2E_DIR/local/source/$t/adapter_model.safetensors" ||
    e2e_fail "source/$t differs from mpt_train's"
done

# A single artefact by name, and JSON output for scripts.
artifact=$(e2e_stage_field "$job" distillation artifact)
mptctl download "$artifact" --out="$E2E_DIR/one" --output=json | grep -q '"stage":""' ||
  e2e_fail "download --output=json"
"$ADAPTER_CHECK_BIN" "$E2E_DIR/one" > /dev/null || e2e_fail "single download does not load"
mptctl list --state=succeeded | grep -q "$job" || e2e_fail "list --state=succeeded misses the job"
[ "$(mptctl workers --output=json | grep -c '"state": "idle"')" -eq 2 ] ||
  e2e_fail "workers are not idle at the end"
