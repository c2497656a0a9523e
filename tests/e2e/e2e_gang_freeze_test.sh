#!/usr/bin/env bash
# End to end: a member of a 2-worker Gloo gang (distillation, three workers
# up) is frozen with SIGSTOP. Its peer blocks in the all-reduce (the
# collective timeout is 600 s here); the frozen worker's lease (4 s) runs
# out, the coordinator requeues the gang and cancels the peer's assignment,
# and the peer's worker aborts its collective at once. The gang re-forms on
# the two live workers and the job SUCCEEDS while the frozen one is still
# stopped; after SIGCONT it learns it was declared lost and registers again.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

e2e_start_coordinator --max_attempts=1
for w in w0 w1 w2; do e2e_start_worker "$w" --collective_timeout_seconds=600; done

spec=$(SOURCE_TASKS="first" SOURCE_STEPS=10 DISTILL_STEPS=300 CHECKPOINT_EVERY=10 WORLD_SIZE=2 \
       TARGET_TASKS="" e2e_write_spec "$E2E_DIR/pipeline.textproto")
job=$(mptctl submit --spec "$spec")

attempt_of() { e2e_stage_field "$job" distillation attempts; }
attempt_above() { [ "$(attempt_of)" -gt "$1" ] 2>/dev/null; }
training() {
  [ "$(e2e_stage_field "$job" distillation state)" = RUNNING ] &&
    [ "$(e2e_stage_field "$job" distillation step)" -gt 0 ] 2>/dev/null
}
local_name_of() {
  local w
  for w in w0 w1 w2; do
    [ "$(e2e_worker_name "$w")" = "$1" ] && echo "$w" && return 0
  done
  return 1
}

e2e_wait_for 90 "the distillation to train" training
gang=$(e2e_stage_json "$job" distillation | grep -o 'workers/[0-9a-zA-Z_-]*' | sort -u)
[ "$(echo "$gang" | wc -l)" -eq 2 ] || e2e_fail "expected a gang of 2, got: $gang"
victim=$(local_name_of "$(echo "$gang" | tail -n 1)") || e2e_fail "no local worker for $gang"
peer=$(local_name_of "$(echo "$gang" | head -n 1)") || e2e_fail "no local worker for $gang"
# The peer leaves its blocked collective when its assignment is cancelled:
# because the coordinator requeued the gang after the frozen rank's lease
# ran out ("failed: cancelled"), or, on a machine so loaded that the peer's
# own heartbeats fell behind its lease too, because the coordinator
# declared the peer lost as well. Either way it must not stay blocked.
left_pattern="failed: cancelled|cancelling .*: the coordinator declared this worker lost"
aborted_before=$(grep -cE "$left_pattern" "$E2E_DIR/logs/$peer.log" || true)
peer_aborted() {
  [ "$(grep -cE "$left_pattern" "$E2E_DIR/logs/$peer.log" || true)" -gt "$aborted_before" ]
}

e2e_log "SIGSTOP to $victim at step $(e2e_stage_field "$job" distillation step); its peer is $peer"
t0=$(date +%s.%N)
kill -STOP "${E2E_PIDS[$victim]}"
e2e_wait_for 20 "$peer to leave its collective" peer_aborted
t1=$(date +%s.%N)
e2e_wait_for 20 "attempt 2 to start" attempt_above 1
t2=$(date +%s.%N)
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
e2e_log "the peer left its blocked collective $(secs "$t0" "$t1")s after SIGSTOP (lease ${E2E_LEASE_SECONDS}s, collective timeout 600s); attempt 2 started after $(secs "$t0" "$t2")s"
echo "GANG_FREEZE_ABORT_SECONDS=$(secs "$t0" "$t1") GANG_FREEZE_REQUEUE_SECONDS=$(secs "$t0" "$t2")" >&2

e2e_wait_state "$job" SUCCEEDED 120

kill -CONT "${E2E_PIDS[$victim]}"
e2e_wait_for 20 "$victim to register again" \
  grep -q "the coordinator no longer knows" "$E2E_DIR/logs/$victim.log"
e2e_log "SUCCEEDED with $victim frozen; it re-registered after SIGCONT"
