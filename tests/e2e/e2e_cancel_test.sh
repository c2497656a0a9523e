#!/usr/bin/env bash
# End to end (b): a job cancelled in the middle of a stage stops within
# seconds, its workers are free again, and mptctl reports it.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

e2e_start_coordinator
e2e_start_worker w0
e2e_start_worker w1

# Source stages long enough to be caught in the middle.
spec=$(SOURCE_TASKS="first last" SOURCE_STEPS=20000 CHECKPOINT_EVERY=10 WORLD_SIZE=2 \
       e2e_write_spec "$E2E_DIR/long.textproto")
job=$(mptctl submit --spec "$spec")
"$MPTCTL_BIN" --coordinator="$COORD_ADDR" watch "$job" > "$E2E_DIR/logs/watch.log" 2>&1 &
watch_pid=$!

e2e_wait_for 60 "a checkpoint of source/first" e2e_has_checkpoint "$job" source/first
[ "$(e2e_stage_field "$job" source/first state)" = RUNNING ] || e2e_fail "source/first is not running"

t0=$(date +%s%N)
mptctl cancel "$job" | grep -Eq "$job: (CANCELLING|CANCELLED)" || e2e_fail "cancel did not answer"
e2e_wait_state "$job" CANCELLED 30
elapsed_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
e2e_log "cancelled in ${elapsed_ms} ms"
[ "$elapsed_ms" -lt 10000 ] || e2e_fail "cancellation took ${elapsed_ms} ms"
step=$(e2e_stage_field "$job" source/first step)
[ "${step:-0}" -lt 20000 ] || e2e_fail "the stage ran to the end ($step steps)"

watch_rc=0
wait "$watch_pid" || watch_rc=$?
[ "$watch_rc" -eq 4 ] || e2e_fail "mptctl watch exited $watch_rc for a cancelled job (want 4)"
grep -q "$job: CANCELLED" "$E2E_DIR/logs/watch.log" || e2e_fail "watch did not say CANCELLED"
grep -q "cancelled" "$E2E_DIR/logs/w0.log" "$E2E_DIR/logs/w1.log" || e2e_fail "no worker saw the cancel"

# Cancelling again is refused; the workers take new work.
rc=0
mptctl cancel "$job" 2>/dev/null || rc=$?
[ "$rc" -eq 6 ] || e2e_fail "second cancel exited $rc (want 6, FAILED_PRECONDITION)"
e2e_wait_for 20 "both workers idle" bash -c \
  "[ \$(\"$MPTCTL_BIN\" --coordinator=$COORD_ADDR workers --output=json | grep -c '\"state\": \"idle\"') -eq 2 ]"
short=$(SOURCE_TASKS="first last" SOURCE_STEPS=10 e2e_write_spec "$E2E_DIR/short.textproto")
next=$(mptctl submit --spec "$short" --kind=source)
e2e_wait_state "$next" SUCCEEDED 60
