#!/usr/bin/env bash
# End to end: stage logs. A small job runs on a real coordinator and worker;
# `mptctl logs --follow` started with it prints its stage's lines (the
# worker's own log lines and its training progress) and ends by itself when
# the job ends; `mptctl logs` reads them afterwards. A stage whose data file
# is malformed at a line only the worker reads fails, and its log shows the
# worker's error naming the file and the line. Bad stage names are refused
# naming the field.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

e2e_start_coordinator
e2e_start_worker w0

# ---- A job that succeeds, followed while it runs -----------------------------
good=$(SOURCE_TASKS="first" SOURCE_STEPS=10 e2e_write_spec "$E2E_DIR/good.textproto")
job=$(mptctl submit --spec "$good" --kind=source)
follow_rc=0
timeout -s KILL 90 "$MPTCTL_BIN" --coordinator="$COORD_ADDR" logs "$job" --follow \
  --poll_seconds=0.3 > "$E2E_DIR/logs/follow.out" 2> "$E2E_DIR/logs/follow.err" || follow_rc=$?
[ "$follow_rc" -eq 0 ] || { cat "$E2E_DIR/logs/follow.err" >&2; e2e_fail "logs --follow exited $follow_rc"; }
e2e_log "logs --follow ended with the job"
[ "$(e2e_job_field "$job" state)" = SUCCEEDED ] || e2e_fail "$job did not succeed"
follow="$E2E_DIR/logs/follow.out"
grep -q '^\[source/first\] ' "$follow" || e2e_fail "no line prefixed with its stage: $(head -3 "$follow")"
grep -q 'INFO worker_daemon.cc:[0-9]*\] assignment .*: stage source/first' "$follow" ||
  e2e_fail "the worker's start line is missing from the log"
grep -q '^\[source/first\] [0-9:.]* INFO STEP 10/10 ' "$follow" ||
  e2e_fail "the last training step is missing"
grep -q '^\[source/first\] [0-9:.]* INFO FINISHED ' "$follow" ||
  e2e_fail "the FINISHED progress line is missing"
grep -q 'uploaded jobs/' "$follow" || e2e_fail "the adapter upload line is missing"
# Every line once, in order: the same lines as a plain read afterwards.
mptctl logs "$job" > "$E2E_DIR/logs/after.out"
diff "$follow" "$E2E_DIR/logs/after.out" >&2 || e2e_fail "follow and a later read differ"
[ "$(sort "$follow" | uniq -d | wc -l)" -eq 0 ] || e2e_fail "a line was shown twice"
e2e_log "job $job: $(wc -l < "$follow") log lines:"
cat "$follow" >&2
# JSON Lines for scripts.
mptctl logs "$job" --stage=source/first --output=json > "$E2E_DIR/logs/json.out"
head -n 1 "$E2E_DIR/logs/json.out" | grep -Eq '"sequence": ?"1"' ||
  e2e_fail "the JSON form lacks the first line's sequence"

# ---- A stage that fails on a line only the worker reads ------------------------
mkdir -p "$E2E_DIR/data"
bad_data="$E2E_DIR/data/bad.train.jsonl"
head -n 2 "$E2E_TASKS/first.train.jsonl" > "$bad_data"
echo '{"input": "broken line", "target": ' >> "$bad_data"
tail -n +3 "$E2E_TASKS/first.train.jsonl" >> "$bad_data"
cat > "$E2E_DIR/bad.textproto" <<SPEC
base_model: "$E2E_MODEL"
prompt { num_virtual_tokens: 4 }
source {
  tasks { name: "bad" train_path: "$bad_data" }
  train { steps: 10 batch_size: 4 }
}
SPEC
bad_job=$(mptctl submit --spec "$E2E_DIR/bad.textproto" --kind=source)
e2e_wait_state "$bad_job" FAILED 60
mptctl logs "$bad_job" --stage=source/bad > "$E2E_DIR/logs/bad.out"
grep -q '^\[source/bad\] .* ERROR .*bad.train.jsonl:3' "$E2E_DIR/logs/bad.out" || {
  cat "$E2E_DIR/logs/bad.out" >&2
  e2e_fail "the stage's log does not show the worker's error naming bad.train.jsonl:3"
}
e2e_log "the failed stage's log shows: $(grep -m1 ERROR "$E2E_DIR/logs/bad.out" | cut -c1-200)"
# --follow on a finished stage ends at once.
timeout -s KILL 20 "$MPTCTL_BIN" --coordinator="$COORD_ADDR" logs "$bad_job" --stage=source/bad \
  --follow > /dev/null || e2e_fail "logs --follow on a failed stage did not end by itself"

# ---- Bad requests ---------------------------------------------------------------
rc=0
mptctl logs "$bad_job" --stage=bogus > /dev/null 2> "$E2E_DIR/logs/bogus.err" || rc=$?
[ "$rc" -eq 2 ] || e2e_fail "a malformed stage exited $rc (want 2)"
grep -q 'stage: "bogus" is not a stage id' "$E2E_DIR/logs/bogus.err" || e2e_fail "no field named"
rc=0
mptctl logs "$bad_job" --stage=source/other > /dev/null 2> "$E2E_DIR/logs/other.err" || rc=$?
[ "$rc" -eq 3 ] || e2e_fail "an unknown stage exited $rc (want 3)"
grep -q 'stage: .* has no stage "source/other"' "$E2E_DIR/logs/other.err" || e2e_fail "no stage named"
rc=0
mptctl logs jobs/doesnotexist > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 3 ] || e2e_fail "an unknown job exited $rc (want 3)"
