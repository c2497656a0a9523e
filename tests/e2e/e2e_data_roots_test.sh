#!/usr/bin/env bash
# End to end: a worker started with --data_roots reads only the files a job
# names below those folders. A job naming /etc/passwd, a path that climbs
# out with "..", or a link inside a root that points outside fails on its
# first attempt with the field named, and nothing of the file comes back;
# a job whose files are inside runs to SUCCEEDED.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

# Real files (the runfiles are links out of the data folder).
ROOT="$E2E_DIR/data"
mkdir -p "$ROOT"
cp -rL "$E2E_MODEL" "$ROOT/model"
cp -rL "$E2E_TASKS" "$ROOT/tasks"
ln -s /etc/passwd "$ROOT/tasks/link.jsonl"
E2E_MODEL="$ROOT/model"
E2E_TASKS="$ROOT/tasks"

e2e_start_coordinator --max_attempts=3
e2e_start_worker w0 --data_roots="$ROOT"
grep -q "jobs' files read from $ROOT" "$E2E_DIR/logs/w0.log" ||
  e2e_fail "the worker's start-up line does not name its --data_roots"

# spec FILE EVAL_PATH: one source task whose eval file is EVAL_PATH.
spec() {
  cat >"$1" <<SPEC
base_model: "$E2E_MODEL"
prompt { num_virtual_tokens: 2 }
source {
  tasks { name: "first" train_path: "$E2E_TASKS/first.train.jsonl" eval_path: "$2" }
  train { steps: 2 batch_size: 2 max_eval_examples: 2 }
}
distillation { train { steps: 2 batch_size: 2 } world_size: 1 }
SPEC
  echo "$1"
}

climb="$ROOT/tasks/$(printf '../%.0s' $(seq 60))etc/passwd"
for case in "/etc/passwd" "$climb" "$ROOT/tasks/link.jsonl"; do
  job=$(mptctl submit --spec "$(spec "$E2E_DIR/outside.textproto" "$case")")
  e2e_wait_state "$job" FAILED 60
  json=$(e2e_job_json "$job")
  echo "$json" | grep -q "source.tasks\[0\].eval_path: .* is outside the folders this worker reads jobs' files from (--data_roots: $ROOT)" ||
    { echo "$json" >&2; e2e_fail "$case: the error does not name the field and --data_roots"; }
  echo "$json" | grep -q "root:" && e2e_fail "$case: the job shows the file's contents"
  attempts=$(e2e_stage_field "$job" source/first attempts)
  [ "$attempts" = 1 ] || e2e_fail "$case: $attempts attempts; a path outside is not retried"
  e2e_log "$case: refused on the first attempt"
done

job=$(mptctl submit --spec "$(spec "$E2E_DIR/inside.textproto" "$E2E_TASKS/first.eval.jsonl")")
e2e_wait_state "$job" SUCCEEDED 120
e2e_log "a job whose files are inside --data_roots SUCCEEDED"
