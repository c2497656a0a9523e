#!/usr/bin/env bash
# End to end: source stages of two jobs packed onto one worker. Both jobs
# are queued before the worker registers, so its first poll gets all four
# source stages (two of each job) as one pack, trained in one pass. Each
# stage keeps its own progress (mptctl watch shows every task's steps) and
# adapter, both jobs succeed, and every adapter equals the one mpt_train
# trains for that task alone on the same batches, within a relative 1e-4
# (the pack differs only in fp32 summation order). Then a second pack of two
# jobs, one of which is cancelled while the pack trains: only its stages
# stop, the other job's go on in the same pass to SUCCEEDED. Last, on a
# machine with 2 cores, a worker with 2 compute threads trains a pack side by
# side in 2 lanes (one thread each), and every adapter is bit for bit the one
# mpt_train trains alone with one thread; then that worker runs a
# distillation job alone as 2 thread ranks, which ends where mpt_train's
# single rank ends up to fp32 summation order (relative 1e-4). Last, a job
# whose spec sets `autocast: "bf16"` trains in bf16 on that worker.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

# e2e_expect_close GOT WANT WHAT REFERENCE: adapter folder GOT loads on the model and
# its tensors are within 1e-4 (relative) of folder WANT's.
e2e_expect_close() {
  "$ADAPTER_CHECK_BIN" --model="$E2E_MODEL" "$1" > /dev/null || e2e_fail "$3 does not load"
  python3 "$E2E_RUNFILES/tests/e2e/compare_adapters.py" "$1/adapter_model.safetensors" \
    "$2/adapter_model.safetensors" 1e-4 >&2 || e2e_fail "$3 differs from $4"
}

# e2e_mpt_train SPEC STAGE OUT [FLAG...]: mpt_train alone with one thread
# (its log in logs/mpt_train_<OUT's name>.log).
e2e_mpt_train() {
  local spec="$1" stage="$2" out="$3"
  shift 3
  "$E2E_RUNFILES/worker/mpt_train" --spec="$spec" --stage="$stage" --out="$out" --progress=none \
    --threads=1 "$@" > "$E2E_DIR/logs/mpt_train_$(basename "$out").log" 2>&1 ||
    e2e_fail "mpt_train on $spec failed"
}

# e2e_task_lines TASK...: a spec's `tasks` entries for the tiny tasks.
e2e_task_lines() {
  local t
  for t in "$@"; do
    echo "  tasks { name: \"$t\" train_path: \"$E2E_TASKS/$t.train.jsonl\" eval_path: \"$E2E_TASKS/$t.eval.jsonl\" }"
  done
}

# e2e_source_spec FILE TASK...: a source-only spec over the tiny tasks
# (STEPS steps, 12 by default).
e2e_source_spec() {
  local file="$1"
  shift
  {
    echo "base_model: \"$E2E_MODEL\""
    echo "prompt { num_virtual_tokens: 4 }"
    echo "source {"
    e2e_task_lines "$@"
    echo "  train { steps: ${STEPS:-12} batch_size: 4 checkpoint_every: 5 eval_every: 6 max_eval_examples: 4 }"
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
  e2e_mpt_train "$spec" source "$E2E_DIR/alone_$tag"
  for t in $tasks; do
    e2e_expect_close "$E2E_DIR/packed_$tag/source/$t" "$E2E_DIR/alone_$tag/source/$t" \
      "source/$t of $job" "its separate run"
  done
done
[ "$(mptctl workers --output=json | grep -c '"state": "idle"')" -eq 1 ] ||
  e2e_fail "the worker is not idle at the end"

# A cancel inside a pack. The worker goes (and is declared lost, holding
# nothing), two longer jobs queue, a new worker packs all four stages.
e2e_kill w0
e2e_wait_for 20 "w0 to be declared lost" sh -c \
  "'$MPTCTL_BIN' --coordinator='$COORD_ADDR' workers --output=json | grep -q '\"state\": \"lost\"'"
spec_c=$(STEPS=3000 e2e_source_spec "$E2E_DIR/c.textproto" first last)
spec_d=$(STEPS=150 e2e_source_spec "$E2E_DIR/d.textproto" count echo)
job_c=$(mptctl submit --spec "$spec_c" --kind=source --name=pack-c)
job_d=$(mptctl submit --spec "$spec_d" --kind=source --name=pack-d)
e2e_start_worker w1 --max_pack_size=4
e2e_wait_for 60 "job D's stages to step" sh -c \
  "'$MPTCTL_BIN' --coordinator='$COORD_ADDR' get '$job_d' --output=json | grep -q '\"step\": \"[1-9]'"
[ "$(grep -c "training 4 source stages in one pass" "$E2E_DIR/logs/w1.log")" -eq 1 ] ||
  e2e_fail "w1 did not train the four stages in one pass"
mptctl cancel "$job_c" > /dev/null || e2e_fail "cancel $job_c"
e2e_wait_state "$job_c" CANCELLED 30
e2e_wait_state "$job_d" SUCCEEDED 120
# Job C's stages left the pass before job D's ended in it.
for t in first last; do
  left=$(grep -n "source $t: cancelled at step [0-9]*; leaves the pack" "$E2E_DIR/logs/w1.log" |
         head -n 1 | cut -d: -f1)
  [ -n "$left" ] || e2e_fail "source/$t did not leave the pack on its own"
  for d in count echo; do
    done_line=$(grep -n "stages/source/$d/attempts/1/ranks/0: done" "$E2E_DIR/logs/w1.log" |
                head -n 1 | cut -d: -f1)
    [ -n "$done_line" ] && [ "$left" -lt "$done_line" ] ||
      e2e_fail "source/$t left the pack after source/$d of job D ended"
  done
done
# ... and job C was completed (CANCELLED) while job D still trained.
cancelled_line=$(grep -n "$job_c/stages/source/first/attempts/1/ranks/0: failed: cancelled" \
                   "$E2E_DIR/logs/w1.log" | head -n 1 | cut -d: -f1)
d_done=$(grep -n "$job_d/stages/source/count/attempts/1/ranks/0: done" "$E2E_DIR/logs/w1.log" |
         head -n 1 | cut -d: -f1)
[ -n "$cancelled_line" ] && [ -n "$d_done" ] && [ "$cancelled_line" -lt "$d_done" ] ||
  e2e_fail "job C's stages were not reported before job D's pack ended"
grep "leaves the pack" "$E2E_DIR/logs/w1.log" >&2
[ "$(grep -c "training 4 source stages in one pass" "$E2E_DIR/logs/w1.log")" -eq 1 ] ||
  e2e_fail "job D's stages did not stay in the same pass"
for t in count echo; do
  [ "$(e2e_stage_field "$job_d" "source/$t" state)" = SUCCEEDED ] || e2e_fail "source/$t of D"
  [ "$(e2e_stage_field "$job_d" "source/$t" step)" = 150 ] || e2e_fail "source/$t of D did not finish"
done

# Lanes: a CPU worker with 2 compute threads packs 2 stages by default
# (--max_pack_size -1: one per lane) and trains them side by side.
if [ "$(nproc)" -lt 2 ]; then
  e2e_log "one core: the lanes part needs 2"
  exit 0
fi
e2e_kill w1
e2e_wait_for 20 "w1 to be declared lost" sh -c \
  "[ \$('$MPTCTL_BIN' --coordinator='$COORD_ADDR' workers --output=json | grep -c '\"state\": \"lost\"') -ge 2 ]"
job_e=$(mptctl submit --spec "$spec_a" --kind=source --name=lanes-a)
job_f=$(mptctl submit --spec "$spec_b" --kind=source --name=lanes-b)
e2e_start_worker w2 --threads=2
e2e_wait_state "$job_e" SUCCEEDED 90
e2e_wait_state "$job_f" SUCCEEDED 90
grep -q "packs of up to 2 source stages, lanes 2" "$E2E_DIR/logs/w2.log" ||
  e2e_fail "w2's start line does not state 2 lanes and packs of 2"
[ "$(grep -c "training 2 source stages in one pass, side by side in up to 2 lanes" \
      "$E2E_DIR/logs/w2.log")" -eq 2 ] || e2e_fail "w2 did not train two packs of 2 in lanes"
for pair in "e:$job_e:a:first last" "f:$job_f:b:count echo"; do
  IFS=: read -r tag job alone tasks <<< "$pair"
  mptctl download "$job" --out="$E2E_DIR/lanes_$tag" > /dev/null || e2e_fail "download $job"
  for t in $tasks; do
    cmp "$E2E_DIR/lanes_$tag/source/$t/adapter_model.safetensors" \
      "$E2E_DIR/alone_$alone/source/$t/adapter_model.safetensors" ||
      e2e_fail "source/$t of $job (lanes) differs from its separate run"
  done
done

# A stage alone on the 2-thread worker: split into 2 thread ranks.
# e2e_distill_spec FILE TEACHER...: a distillation of the four tasks.
e2e_distill_spec() {
  local file="$1"
  shift
  {
    echo "base_model: \"$E2E_MODEL\""
    echo "prompt { num_virtual_tokens: 4 }"
    echo "distillation {"
    e2e_task_lines first last count echo
    echo "  train { steps: 12 batch_size: 4 eval_every: 6 max_eval_examples: 4 }"
    local t
    for t in "$@"; do echo "  teacher_adapters: \"$t\""; done
    echo "}"
  } > "$file"
  echo "$file"
}
spec_g=$(e2e_distill_spec "$E2E_DIR/g.textproto" \
  "$(e2e_stage_field "$job_e" source/first artifact)" "$(e2e_stage_field "$job_e" source/last artifact)" \
  "$(e2e_stage_field "$job_f" source/count artifact)" "$(e2e_stage_field "$job_f" source/echo artifact)")
local_g=$(e2e_distill_spec "$E2E_DIR/g_local.textproto" "$E2E_DIR/lanes_e/source/first" \
  "$E2E_DIR/lanes_e/source/last" "$E2E_DIR/lanes_f/source/count" "$E2E_DIR/lanes_f/source/echo")
job_g=$(mptctl submit --spec "$spec_g" --kind=distillation --name=ranks-g)
e2e_wait_state "$job_g" SUCCEEDED 90
grep -q "distillation: 2 thread ranks, one compute thread each" "$E2E_DIR/logs/w2.log" ||
  e2e_fail "w2 did not split the distillation into 2 thread ranks"
mptctl download "$job_g" --out="$E2E_DIR/ranks_g" > /dev/null || e2e_fail "download $job_g"
e2e_mpt_train "$local_g" distillation "$E2E_DIR/alone_g"
e2e_expect_close "$E2E_DIR/ranks_g/distillation" "$E2E_DIR/alone_g/distillation" \
  "the thread ranks' distillation" "one rank's"

# A job's precision is its spec's: `autocast: "bf16"` trains in bf16 on this
# worker started without --autocast, exactly as mpt_train does with the same
# spec, which gives what its --autocast=bf16 flag gives; fp32's adapters differ.
# The worker logs that the spec set it.
spec_h="$E2E_DIR/h.textproto"
{ cat "$spec_a"; echo 'autocast: "bf16"'; } > "$spec_h"
job_h=$(mptctl submit --spec "$spec_h" --kind=source --name=bf16-h)
e2e_wait_state "$job_h" SUCCEEDED 90
grep -q "autocast bf16, as the job" "$E2E_DIR/logs/w2.log" ||
  e2e_fail "w2 does not log that the spec set bf16"
mptctl download "$job_h" --out="$E2E_DIR/bf16_h" > /dev/null || e2e_fail "download $job_h"
e2e_mpt_train "$spec_h" source "$E2E_DIR/alone_h"
grep -q "autocast bf16" "$E2E_DIR/logs/mpt_train_alone_h.log" ||
  e2e_fail "mpt_train did not take bf16 from the spec"
e2e_mpt_train "$spec_a" source "$E2E_DIR/flag_h" --autocast=bf16
for t in first last; do
  cmp "$E2E_DIR/alone_h/source/$t/adapter_model.safetensors" \
    "$E2E_DIR/flag_h/source/$t/adapter_model.safetensors" ||
    e2e_fail "source/$t: the spec's bf16 differs from the flag's"
  cmp "$E2E_DIR/bf16_h/source/$t/adapter_model.safetensors" \
    "$E2E_DIR/alone_h/source/$t/adapter_model.safetensors" ||
    e2e_fail "source/$t of $job_h (bf16 on the worker) differs from mpt_train's bf16 run"
  ! cmp -s "$E2E_DIR/bf16_h/source/$t/adapter_model.safetensors" \
    "$E2E_DIR/alone_a/source/$t/adapter_model.safetensors" ||
    e2e_fail "source/$t of $job_h equals the fp32 run: bf16 was not applied"
done
