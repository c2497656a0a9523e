#!/usr/bin/env bash
# End to end (d): the coordinator killed with SIGKILL in the middle of a
# pipeline and started again on the same database and artefact folder. The
# workers reconnect, mptctl watch resumes its stream, the job succeeds and
# every artefact stored before the crash is still there, byte for byte.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

e2e_start_coordinator
port="$COORD_PORT"
e2e_start_worker w0
e2e_start_worker w1

spec=$(SOURCE_TASKS="first last count" SOURCE_STEPS=150 CHECKPOINT_EVERY=10 WORLD_SIZE=2 \
       DISTILL_STEPS=60 TARGET_STEPS=30 e2e_write_spec "$E2E_DIR/pipeline.textproto")
job=$(mptctl submit --spec "$spec")
"$MPTCTL_BIN" --coordinator="$COORD_ADDR" watch "$job" > "$E2E_DIR/logs/watch.log" 2>&1 &
watch_pid=$!

# Wait until one source stage is done and another has a checkpoint.
some_source_done() {
  local s
  for s in first last count; do
    [ "$(e2e_stage_field "$job" "source/$s" state)" = SUCCEEDED ] && return 0
  done
  return 1
}
e2e_wait_for 120 "a finished source stage" some_source_done
e2e_job_json "$job" > "$E2E_DIR/before.json"
# name and sha256 of every artefact stored so far.
sed -n 's/^   "\(name\|sha256\)": "\(.*\)",\{0,1\}$/\2/p' "$E2E_DIR/before.json" |
  grep -A1 '/artifacts/' | grep -v '^--$' | paste - - > "$E2E_DIR/before.artifacts"
[ -s "$E2E_DIR/before.artifacts" ] || e2e_fail "no artefacts before the crash"
e2e_log "artefacts before the crash: $(wc -l < "$E2E_DIR/before.artifacts")"

e2e_kill coordinator KILL
sleep 2
e2e_start_coordinator --port "$port"

e2e_wait_state "$job" SUCCEEDED 240
watch_rc=0
timeout 60 tail --pid="$watch_pid" -f /dev/null || true
wait "$watch_pid" || watch_rc=$?
[ "$watch_rc" -eq 0 ] || e2e_fail "mptctl watch exited $watch_rc"
grep -q "reconnect" "$E2E_DIR/logs/watch.log" || e2e_fail "watch did not reconnect"

# Every adapter and checkpoint stored before the crash that the job still
# lists has the same hash; every stage result downloads and loads.
e2e_job_json "$job" > "$E2E_DIR/after.json"
while read -r name sha; do
  case "$name" in
    *checkpoint*) grep -q "\"$name\"" "$E2E_DIR/after.json" || continue ;;  # replaced by newer
  esac
  grep -q "\"$name\"" "$E2E_DIR/after.json" || e2e_fail "artefact $name is gone"
  grep -A4 "\"name\": \"$name\"" "$E2E_DIR/after.json" | grep -q "\"sha256\": \"$sha\"" ||
    e2e_fail "artefact $name changed"
  mptctl download "$name" --out="$E2E_DIR/check/$(basename "$name")" > /dev/null ||
    e2e_fail "artefact $name does not download"
done < "$E2E_DIR/before.artifacts"
mptctl download "$job" --out="$E2E_DIR/adapters" > /dev/null
"$ADAPTER_CHECK_BIN" --model="$E2E_MODEL" "$E2E_DIR/adapters/source/first" \
  "$E2E_DIR/adapters/source/last" "$E2E_DIR/adapters/source/count" \
  "$E2E_DIR/adapters/distillation" "$E2E_DIR/adapters/target/echo" \
  "$E2E_DIR/adapters/target/count2" >&2

# The stage logs rode out the crash: every assignment's lines are stored
# once each, numbered 1, 2, 3, ... without a gap (lines sent again to the
# restarted coordinator were not stored twice, none were lost), and every
# stage has some.
mptctl logs "$job" --output=json > "$E2E_DIR/logs.jsonl"
python3 - "$E2E_DIR/logs.jsonl" source/first source/last source/count distillation \
    target/echo target/count2 <<'PY' || e2e_fail "the stage logs are not whole after the crash"
import collections, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
by_assignment = collections.defaultdict(list)
for l in lines:
    by_assignment[l["assignment"]].append(int(l["sequence"]))
for assignment, seqs in sorted(by_assignment.items()):
    if seqs != list(range(1, len(seqs) + 1)):
        sys.exit("%s: sequences %s" % (assignment, seqs))
stages = {l["stage"] for l in lines}
missing = [s for s in sys.argv[2:] if s not in stages]
if missing:
    sys.exit("no log lines for %s" % missing)
print("%d log lines from %d assignments, each once" % (len(lines), len(by_assignment)),
      file=sys.stderr)
PY
