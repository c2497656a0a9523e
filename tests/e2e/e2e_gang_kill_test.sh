#!/usr/bin/env bash
# End to end: a member of a 2-worker Gloo gang (distillation, three workers
# up) is killed with SIGKILL three times in a row. Each time its peer's
# collective fails at once and the peer reports a peer failure; the
# coordinator blames the killed worker as soon as it misses its heartbeats
# (1 s here) instead of waiting out its 20 s lease, requeues the gang, and
# does not count the attempt: the job SUCCEEDS after four attempts although
# a stage gets three failed attempts (--max_attempts=3).
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

E2E_LEASE_SECONDS=20
e2e_start_coordinator --max_attempts=3
e2e_start_worker w0
e2e_start_worker w1
e2e_start_worker w2

spec=$(SOURCE_TASKS="first" SOURCE_STEPS=10 DISTILL_STEPS=400 CHECKPOINT_EVERY=10 WORLD_SIZE=2 \
       TARGET_TASKS="" e2e_write_spec "$E2E_DIR/pipeline.textproto")
job=$(mptctl submit --spec "$spec")

attempt_of() { e2e_stage_field "$job" distillation attempts; }
running_step_of_attempt() {
  [ "$(e2e_stage_field "$job" distillation state)" = RUNNING ] &&
    [ "$(attempt_of)" = "$1" ] && [ "$(e2e_stage_field "$job" distillation step)" -gt 0 ] 2>/dev/null
}
attempt_above() { [ "$(attempt_of)" -gt "$1" ] 2>/dev/null; }
local_name_of() {
  local w
  for w in "${!E2E_PIDS[@]}"; do
    [ "$w" = coordinator ] && continue
    [ "$(e2e_worker_name "$w")" = "$1" ] && echo "$w" && return 0
  done
  return 1
}

next=3
for kill_no in 1 2 3; do
  e2e_wait_for 90 "attempt $kill_no of the distillation to train" running_step_of_attempt "$kill_no"
  gang=$(e2e_stage_json "$job" distillation | grep -o 'workers/[0-9a-zA-Z_-]*' | sort -u)
  [ "$(echo "$gang" | wc -l)" -eq 2 ] || e2e_fail "attempt $kill_no: expected a gang of 2, got: $gang"
  victim=$(local_name_of "$(echo "$gang" | tail -n 1)") || e2e_fail "no local worker for $gang"
  step=$(e2e_stage_field "$job" distillation step)
  e2e_log "kill $kill_no: SIGKILL to $victim at step $step of attempt $kill_no"
  t0=$(date +%s.%N)
  e2e_kill "$victim" KILL
  e2e_wait_for 15 "attempt $((kill_no + 1)) to start" attempt_above "$kill_no"
  t1=$(date +%s.%N)
  requeue=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  e2e_log "kill $kill_no: the gang was requeued and attempt $((kill_no + 1)) started ${requeue}s after the kill (lease ${E2E_LEASE_SECONDS}s)"
  echo "GANG_KILL_REQUEUE_SECONDS[$kill_no]=$requeue" >&2
  # Three workers stay available.
  e2e_start_worker "w$next"
  next=$((next + 1))
done

e2e_wait_state "$job" SUCCEEDED 120
attempts=$(attempt_of)
[ "${attempts:-0}" -eq 4 ] || e2e_fail "distillation ran $attempts times; expected 4"
grep -q "reported a collective failure" "$E2E_DIR/logs/coordinator.log" ||
  e2e_fail "the coordinator did not blame the killed peers on a peer's report"
e2e_log "SUCCEEDED after 3 killed gang members"
