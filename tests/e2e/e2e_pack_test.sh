#!/usr/bin/env bash
# End to end: source stages of two jobs packed onto one worker. Both jobs
# are queued before the worker registers, so its first poll gets all four
# source stages (two of each job) as one pack, trained in one pass. Each
# stage keeps its own progress (mptctl watch shows every task's steps) and
# adapter, both jobs succeed, and every adapter equals the one mpt_train
# trains for that task alone on the same batches, within a relative 1e-4
# (the pack differs only in fp32 summation order).
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

# e2e_source_spec FILE TASK...: a source-only spec over the tiny tasks.
e2e_source_spec() {
  local file="$1"
  shift
  {
    echo "base_model: \"$E2E_MODEL\""
    echo "prompt { num_virtual_tokens: 4 }"
    echo "source {"
    local t
    for t in "$@"; do
      echo "  tasks { name: \"$t\" train_path: \"$E2E_TASKS/$t.train.jsonl\" eval_path: \"$E2E_TASKS/$t.eval.jsonl\" }"
    done
    echo "  train { steps: 12 batch_size: 4 checkpoint_every: 5 eval_every: 6 max_eval_examples: 4 }"
    echo "}"
  } > "$file"
  echo "$file"
}

e2e_start_coordinator --max_pack_size=4
spec_a=$(e2e_source_spec "$E2E_DIR/a.textproto" first last)
spec_b=$(e2e_source_spec "$E2E_DIR/b.textproto" count echo)
job_a=$(mptctl submit --spec "$spec_a" --kind=source --name=pack-a)
job_b=$(mptctl submit --spec "$spec_b" --kind=source --name=pack-b)
e2e_log "submitted $job_a and $job_b"
e2e_start_worker w0 --max_pack_size=4

e2e_wait_state "$job_a" SUCCEEDED 90
e2e_wait_state "$job_b" SUCCEEDED 30

# One pass trained all four stages.
grep -q "training 4 source stages in one pass" "$E2E_DIR/logs/w0.log" ||
  e2e_fail "the worker did not train the four stages in one pass"
grep -q "packs of up to 4 source stages" "$E2E_DIR/logs/w0.log" ||
  e2e_fail "the worker's start line does not state its pack size"

# Per-stage progress and the pack note, as a user watching job B sees them.
timeout 30 "$MPTCTL_BIN" --coordinator="$COORD_ADDR" watch "$job_b" > "$E2E_DIR/logs/watch_b.log" 2>&1 ||
  e2e_fail "mptctl watch failed"
for t in count echo; do
  grep "source/$t" "$E2E_DIR/logs/watch_b.log" | grep -q "12/12" ||
    e2e_fail "watch shows no last step of source/$t"
done
grep -q "in one pass with 3 other stages" "$E2E_DIR/logs/watch_b.log" ||
  e2e_fail "watch does not say the stages ran in one pass"
mptctl logs "$job_a" --stage=source/first > "$E2E_DIR/logs/logs_a.log" ||
  e2e_fail "mptctl logs failed"
grep -q "STEP 12/12" "$E2E_DIR/logs/logs_a.log" || e2e_fail "source/first's log has no last step"

# The adapters equal separate runs (mpt_train, one task at a time).
for pair in "a:$job_a:$spec_a:first last" "b:$job_b:$spec_b:count echo"; do
  IFS=: read -r tag job spec tasks <<< "$pair"
  mptctl download "$job" --out="$E2E_DIR/packed_$tag" > /dev/null || e2e_fail "download $job"
  "$E2E_RUNFILES/worker/mpt_train" --spec="$spec" --stage=source --out="$E2E_DIR/alone_$tag" \
    --progress=none --threads=1 > "$E2E_DIR/logs/mpt_train_$tag.log" 2>&1 ||
    e2e_fail "mpt_train failed"
  for t in $tasks; do
    "$ADAPTER_CHECK_BIN" --model="$E2E_MODEL" "$E2E_DIR/packed_$tag/source/$t" > /dev/null ||
      e2e_fail "source/$t of $job does not load"
    python3 "$E2E_RUNFILES/tests/e2e/compare_adapters.py" \
      "$E2E_DIR/packed_$tag/source/$t/adapter_model.safetensors" \
      "$E2E_DIR/alone_$tag/source/$t/adapter_model.safetensors" 1e-4 >&2 ||
      e2e_fail "source/$t of $job differs from its separate run"
  done
done
[ "$(mptctl workers --output=json | grep -c '"state": "idle"')" -eq 1 ] ||
  e2e_fail "the worker is not idle at the end"
