#!/usr/bin/env bash
# End to end (c): a worker killed with SIGKILL in the middle of a stage. Its
# lease runs out, the stage goes back to the queue and resumes on the other
# worker from its last uploaded checkpoint; the job still succeeds.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

e2e_start_coordinator
e2e_start_worker w0
e2e_start_worker w1

spec=$(SOURCE_TASKS="first last" SOURCE_STEPS=1000 CHECKPOINT_EVERY=20 WORLD_SIZE=1 \
       DISTILL_STEPS=20 TARGET_TASKS="echo:echo" TARGET_STEPS=20 \
       e2e_write_spec "$E2E_DIR/pipeline.textproto")
job=$(mptctl submit --spec "$spec")

e2e_wait_for 60 "a checkpoint of source/first" e2e_has_checkpoint "$job" source/first
victim_name=$(e2e_stage_json "$job" source/first | grep -o 'workers/[0-9a-zA-Z_-]*' | head -n 1)
[ -n "$victim_name" ] || e2e_fail "source/first has no worker"
victim=""
for w in w0 w1; do
  [ "$(e2e_worker_name "$w")" = "$victim_name" ] && victim=$w
done
[ -n "$victim" ] || e2e_fail "no local worker is $victim_name"
step=$(e2e_stage_field "$job" source/first step)
e2e_log "killing $victim ($victim_name) at step ${step:-?} of source/first"
e2e_kill "$victim" KILL

e2e_wait_state "$job" SUCCEEDED 240
attempts=$(e2e_stage_field "$job" source/first attempts)
[ "${attempts:-0}" -ge 2 ] || e2e_fail "source/first ran $attempts time(s); expected a second attempt"
survivor=w0
[ "$victim" = w0 ] && survivor=w1
grep -q "source/first.*resuming from the fetched checkpoint" "$E2E_DIR/logs/$survivor.log" ||
  e2e_fail "the second attempt did not start from the checkpoint"
grep -Eq "resuming at step [1-9][0-9]*" "$E2E_DIR/logs/$survivor.log" ||
  e2e_fail "the trainer did not resume at a step > 0"
mptctl download "$job" --out="$E2E_DIR/adapters" > /dev/null
"$ADAPTER_CHECK_BIN" --model="$E2E_MODEL" "$E2E_DIR/adapters/source/first" \
  "$E2E_DIR/adapters/distillation" "$E2E_DIR/adapters/target/echo" >&2
