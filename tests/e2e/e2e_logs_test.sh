#!/usr/bin/env bash
# End to end: stage logs. A small job runs on a real coordinator and worker;
# `mptctl logs --follow` started with it prints its stage's lines (the
# worker's own log lines and its training progress) and ends by itself when
# the job ends; `mptctl logs` reads them afterwards. A stage whose data file
# is malformed at a line only the worker reads fails, and its log shows the
# worker's error naming the file and the line. Bad stage names are refused
# naming the field. `mptctl download` of the adapter never deletes what the
# user did not ask to replace (a folder with other files, a file, the
# current folder are refused and left as they were). `logs --follow` rides
# out a graceful coordinator restart (SIGTERM, as systemd and Kubernetes
# stop it) as watch does: each line once, none lost.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

e2e_start_coordinator
port="$COORD_PORT"
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

# ---- A download never deletes what the user did not ask to replace ------------
artifact=$(e2e_stage_field "$job" source/first artifact)
[ -n "$artifact" ] || e2e_fail "source/first has no artefact"
keep="$E2E_DIR/keep"
mkdir -p "$keep/adapters/old_run" "$keep/job/source/first"
echo important > "$keep/adapters/old_run/adapter_model.safetensors"
echo notes > "$keep/adapters/README.txt"
echo "user data" > "$keep/myfile.txt"
echo '{}' > "$keep/job/source/first/train.jsonl"
snapshot() { (cd "$keep" && find . | sort && find . -type f -exec sha256sum {} + | sort); }
before=$(snapshot)
# refused CODE TEXT ARGS...: mptctl ARGS exits CODE saying TEXT.
refused() {
  local want="$1" text="$2" rc=0
  shift 2
  mptctl "$@" > /dev/null 2> "$E2E_DIR/logs/refused.err" || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$E2E_DIR/logs/refused.err" >&2; e2e_fail "mptctl $* exited $rc (want $want)"; }
  grep -qF -- "$text" "$E2E_DIR/logs/refused.err" ||
    e2e_fail "mptctl $* did not say '$text': $(cat "$E2E_DIR/logs/refused.err")"
}
refused 6 "--out: $keep/adapters is not empty and is not an adapter folder (it holds README.txt, old_run/); give a new or empty folder" \
  download "$artifact" --out="$keep/adapters"
refused 6 "--out: $keep/myfile.txt is a file, not a folder" download "$artifact" --out="$keep/myfile.txt"
refused 6 "which is a file, not a folder" download "$job" --out="$keep/myfile.txt"
refused 6 "--out: $keep/job/source/first is not empty" download "$job" --out="$keep/job"
(cd "$keep/adapters" && refused 6 "--out: . is or contains the current working folder" \
  download "$artifact" --out=.)
(cd "$keep/adapters" && refused 6 "is or contains the current working folder" \
  download "$artifact" --out="$keep")
[ "$(snapshot)" = "$before" ] || e2e_fail "a refused download changed $keep"
# A new folder, then again over that earlier download: replaced.
mptctl download "$artifact" --out="$keep/new" > /dev/null || e2e_fail "download into a new folder"
echo edited > "$keep/new/adapter_config.json"
mptctl download "$artifact" --out="$keep/new" > /dev/null || e2e_fail "download over an earlier one"
[ "$(ls -A "$keep/new" | tr '\n' ' ')" = "adapter_config.json adapter_model.safetensors " ] ||
  e2e_fail "the re-download left $(ls -A "$keep/new")"
grep -q edited "$keep/new/adapter_config.json" && e2e_fail "the earlier download was not replaced"
[ "$(ls -A "$keep" | tr '\n' ' ')" = "adapters job myfile.txt new " ] ||
  e2e_fail "downloads left $(ls -A "$keep") in $keep"
e2e_log "downloads refused a folder with other files, a file and the current folder"

# ---- logs --follow across a graceful coordinator restart -----------------------
long=$(SOURCE_TASKS="first" SOURCE_STEPS=100000 e2e_write_spec "$E2E_DIR/long.textproto")
long_job=$(mptctl submit --spec "$long" --kind=source)
"$MPTCTL_BIN" --coordinator="$COORD_ADDR" logs "$long_job" --follow --poll_seconds=0.2 \
  > "$E2E_DIR/logs/restart.out" 2> "$E2E_DIR/logs/restart.err" &
follow_pid=$!
e2e_wait_for 60 "training lines of $long_job" grep -q ' STEP ' "$E2E_DIR/logs/restart.out"
e2e_kill coordinator TERM
kill -0 "$follow_pid" 2>/dev/null || {
  cat "$E2E_DIR/logs/restart.err" >&2
  e2e_fail "logs --follow ended when the coordinator shut down"
}
sleep 2
e2e_start_coordinator --port "$port"
e2e_wait_for 60 "logs --follow to reconnect" grep -q "reconnected" "$E2E_DIR/logs/restart.err"
lines_then=$(wc -l < "$E2E_DIR/logs/restart.out")
e2e_wait_for 60 "new lines after the restart" \
  bash -c "[ \$(wc -l < '$E2E_DIR/logs/restart.out') -gt $lines_then ]"
mptctl cancel "$long_job" > /dev/null
follow_rc=0
timeout 60 tail --pid="$follow_pid" -f /dev/null || true
wait "$follow_pid" || follow_rc=$?
cat "$E2E_DIR/logs/restart.err" >&2
[ "$follow_rc" -eq 0 ] || e2e_fail "logs --follow across a SIGTERM restart exited $follow_rc"
grep -q "lost the coordinator at $COORD_ADDR" "$E2E_DIR/logs/restart.err" ||
  e2e_fail "logs --follow did not say it lost the coordinator"
# What it printed is what a later read prints (the cancelled worker may add
# its last lines after that): nothing lost or repeated across the restart.
mptctl logs "$long_job" > "$E2E_DIR/logs/restart.after"
head -n "$(wc -l < "$E2E_DIR/logs/restart.out")" "$E2E_DIR/logs/restart.after" |
  diff "$E2E_DIR/logs/restart.out" - >&2 ||
  e2e_fail "logs --follow across the restart differs from a later read (lines lost or repeated)"
e2e_log "logs --follow rode out a SIGTERM restart: $(wc -l < "$E2E_DIR/logs/restart.out") lines, each once"

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
