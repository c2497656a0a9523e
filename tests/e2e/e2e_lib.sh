# Helpers for the end-to-end tests: real coordinator, worker and mptctl
# processes on this machine, with every process (and namespace) cleaned up
# when the test ends, however it ends.
#
#   source tests/e2e/e2e_lib.sh
#   e2e_start_coordinator
#   e2e_start_worker w0
#   job=$(mptctl submit --spec "$(e2e_write_spec spec.textproto)")
#   e2e_wait_state "$job" SUCCEEDED 120
#
# The binaries come from the test's runfiles; logs and state go under
# $TEST_TMPDIR/e2e. On failure the tail of every log is printed.
set -euo pipefail

E2E_RUNFILES="${TEST_SRCDIR:-$PWD}/${TEST_WORKSPACE:-mpt}"
COORDINATOR_BIN="$E2E_RUNFILES/server/coordinator"
WORKER_BIN="$E2E_RUNFILES/worker/worker"
MPTCTL_BIN="$E2E_RUNFILES/cli/mptctl"
ADAPTER_CHECK_BIN="$E2E_RUNFILES/tests/e2e/adapter_check"
E2E_MODEL="$E2E_RUNFILES/tests/testdata/t5_relu"
E2E_TASKS="$E2E_RUNFILES/tests/testdata/tiny_tasks"
E2E_DIR="${TEST_TMPDIR:-$(mktemp -d)}/e2e"
rm -rf "$E2E_DIR"
mkdir -p "$E2E_DIR/logs"

# The coordinator's address for mptctl and the workers.
COORD_ADDR=""
COORD_PORT=""
# Leases are short so that a killed worker is noticed in seconds.
E2E_LEASE_SECONDS="${E2E_LEASE_SECONDS:-4}"
E2E_HEARTBEAT_SECONDS="${E2E_HEARTBEAT_SECONDS:-0.5}"

declare -A E2E_PIDS=()      # name -> pid
E2E_CLEANUP_HOOKS=()        # commands run at exit (e.g. deleting namespaces)
E2E_START=$(date +%s)

e2e_log() { echo "[e2e $(( $(date +%s) - E2E_START ))s] $*" >&2; }

e2e_fail() {
  echo "FAIL: $*" >&2
  exit 1
}

e2e_cleanup() {
  local rc=$?
  trap - EXIT
  local name
  for name in "${!E2E_PIDS[@]}"; do
    kill -KILL "${E2E_PIDS[$name]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  local hook
  for hook in "${E2E_CLEANUP_HOOKS[@]}"; do eval "$hook" || true; done
  # Every process's whole log, kept by Bazel in the test's outputs.zip.
  if [ -n "${TEST_UNDECLARED_OUTPUTS_DIR:-}" ] && [ -d "$E2E_DIR/logs" ]; then
    cp "$E2E_DIR"/logs/*.log "$TEST_UNDECLARED_OUTPUTS_DIR"/ 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then
    local f
    for f in "$E2E_DIR"/logs/*.log; do
      [ -f "$f" ] || continue
      echo "----- $(basename "$f") (last 40 lines) -----" >&2
      tail -n 40 "$f" >&2
    done
    echo "e2e: FAILED after $(( $(date +%s) - E2E_START ))s (rc $rc)" >&2
  else
    echo "e2e: PASSED in $(( $(date +%s) - E2E_START ))s" >&2
  fi
  exit "$rc"
}
trap e2e_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# e2e_wait_for TIMEOUT_SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s.
e2e_wait_for() {
  local timeout="$1" what="$2"
  shift 2
  local deadline=$(( $(date +%s) + timeout ))
  while ! "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      e2e_fail "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.2
  done
}

# e2e_in NS COMMAND...: runs COMMAND inside network namespace NS, or
# directly when NS is empty.
e2e_in() {
  local ns="$1"
  shift
  if [ -n "$ns" ]; then
    ip netns exec "$ns" "$@"
  else
    "$@"
  fi
}

# e2e_spawn NS LOG COMMAND...: starts COMMAND in the background (in NS when
# given) with its output appended to LOG, and sets E2E_SPAWNED to its pid.
# The background subshell execs the program, so the pid is the program's
# own and a signal sent to it reaches the program.
e2e_spawn() {
  local ns="$1" log="$2"
  shift 2
  if [ -n "$ns" ]; then
    (exec ip netns exec "$ns" "$@" >>"$log" 2>&1) &
  else
    (exec "$@" >>"$log" 2>&1) &
  fi
  E2E_SPAWNED=$!
}

# e2e_start_coordinator [--port P] [--netns NS] [--listen HOST] [FLAGS...]
# Starts the coordinator (port 0 picks a free one) with its state under
# $E2E_DIR/coordinator, waits until it listens, sets COORD_ADDR/COORD_PORT.
# The same state folder is reused by a restart.
e2e_start_coordinator() {
  local port=0 ns="" host=127.0.0.1
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port="$2"; shift 2 ;;
      --netns) ns="$2"; shift 2 ;;
      --listen) host="$2"; shift 2 ;;
      *) break ;;
    esac
  done
  local log="$E2E_DIR/logs/coordinator.log"
  echo "===== start $(date +%T) =====" >> "$log"
  local start_line
  start_line=$(wc -l < "$log")
  e2e_spawn "$ns" "$log" "$COORDINATOR_BIN" --listen="$host:$port" \
    --db="$E2E_DIR/coordinator/jobs.db" --artifacts="$E2E_DIR/coordinator/artifacts" \
    --lease_seconds="$E2E_LEASE_SECONDS" --heartbeat_seconds="$E2E_HEARTBEAT_SECONDS" \
    --check_spec_files "$@"
  E2E_PIDS[coordinator]=$E2E_SPAWNED
  local deadline=$(( $(date +%s) + 30 )) found=""
  while [ -z "$found" ]; do
    found=$(tail -n +"$start_line" "$log" | grep -o 'listening on .*(port [0-9]*' | tail -n 1 |
            grep -o '[0-9]*$' || true)
    if [ -z "$found" ]; then
      kill -0 "${E2E_PIDS[coordinator]}" 2>/dev/null || e2e_fail "the coordinator exited at start"
      [ "$(date +%s)" -lt "$deadline" ] || e2e_fail "the coordinator did not start listening"
      sleep 0.1
    fi
  done
  COORD_PORT="$found"
  COORD_ADDR="$host:$found"
  e2e_log "coordinator listening on $COORD_ADDR (pid ${E2E_PIDS[coordinator]})"
}

# e2e_start_worker NAME [--netns NS] [FLAGS...]: starts a worker and waits
# until it has registered. Its log is $E2E_DIR/logs/NAME.log.
e2e_start_worker() {
  local name="$1"
  shift
  local ns=""
  if [ "${1:-}" = --netns ]; then ns="$2"; shift 2; fi
  local log="$E2E_DIR/logs/$name.log"
  echo "===== start $(date +%T) =====" >> "$log"
  e2e_spawn "$ns" "$log" "$WORKER_BIN" --coordinator="$COORD_ADDR" --work_dir="$E2E_DIR/$name" \
    --threads=1 --poll_seconds=2 --progress_interval_seconds=0.2 --hostname="$name" \
    --collective_timeout_seconds=60 "$@"
  E2E_PIDS[$name]=$E2E_SPAWNED
  e2e_wait_for 30 "worker $name to register" grep -q "registered as" "$log"
  e2e_log "worker $name up (pid ${E2E_PIDS[$name]}, $(e2e_worker_name "$name"))"
}

# The coordinator's name for worker NAME (its latest registration).
e2e_worker_name() {
  grep -o 'registered as workers/[^ ]*' "$E2E_DIR/logs/$1.log" | tail -n 1 | cut -d' ' -f3
}

# e2e_kill NAME [SIGNAL]: signals a process and waits for it to go.
e2e_kill() {
  local name="$1" sig="${2:-KILL}"
  local pid="${E2E_PIDS[$name]}"
  kill -"$sig" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "E2E_PIDS[$name]"
  e2e_log "stopped $name with SIG$sig"
}

# mptctl against the test's coordinator (MPTCTL_NETNS runs it in a namespace).
mptctl() {
  e2e_in "${MPTCTL_NETNS:-}" "$MPTCTL_BIN" --coordinator="$COORD_ADDR" "$@"
}

# A job's JSON; the top-level fields are the lines indented by one space.
e2e_job_json() { mptctl get "$1" --output=json; }

# e2e_job_field JOB FIELD: a top-level string field of the job ("state").
e2e_job_field() {
  e2e_job_json "$1" | sed -n "s/^ \"$2\": \"\(.*\)\",\{0,1\}$/\1/p"
}

# e2e_wait_state JOB STATE TIMEOUT: waits for the job's state; fails early
# when it reaches another final state.
e2e_wait_state() {
  local job="$1" want="$2" timeout="$3"
  local deadline=$(( $(date +%s) + timeout )) state=""
  while true; do
    state=$(e2e_job_field "$job" state 2>/dev/null || true)
    [ "$state" = "$want" ] && break
    case "$state" in
      SUCCEEDED|FAILED|CANCELLED)
        e2e_job_json "$job" >&2 || true
        e2e_fail "$job ended $state, expected $want" ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
      e2e_job_json "$job" >&2 || true
      e2e_fail "timed out after ${timeout}s waiting for $job to be $want (it is '$state')"
    fi
    sleep 0.3
  done
  e2e_log "$job is $want"
}

# e2e_stage_json JOB STAGE_ID: the JSON object of one stage (its lines).
e2e_stage_json() {
  e2e_job_json "$1" | awk -v id="\"id\": \"$2\"" '
    /^  {$/ { buf = ""; depth = 1 }
    depth > 0 { buf = buf $0 "\n" }
    depth > 0 && /^  }/ { if (index(buf, id) > 0) printf "%s", buf; depth = 0 }'
}

# e2e_stage_field JOB STAGE_ID FIELD: a string or number field of a stage
# (or of its progress, e.g. "step"); the first one found.
e2e_stage_field() {
  e2e_stage_json "$1" "$2" | sed -n "s/^ \{3,\}\"$3\": \(.*\)$/\1/p" | head -n 1 |
    sed 's/,$//; s/^"//; s/"$//'
}

# True when the job holds a checkpoint artefact of STAGE_ID.
e2e_has_checkpoint() {
  e2e_job_json "$1" | grep -A3 '"kind": "checkpoint"' | grep -q "\"stage\": \"$2\""
}

# e2e_write_spec FILE: writes a pipeline spec over the tiny tasks and the
# tiny T5. Knobs (environment): SOURCE_TASKS (names from tiny_tasks, e.g.
# "first last count"), TARGET_TASKS ("name:data" pairs, e.g. "echo:echo
# count2:count"), SOURCE_STEPS, DISTILL_STEPS, TARGET_STEPS, WORLD_SIZE,
# CHECKPOINT_EVERY.
e2e_write_spec() {
  local file="$1"
  local sources="${SOURCE_TASKS:-first last count}"
  local targets="${TARGET_TASKS:-echo:echo count2:count}"
  local ckpt="${CHECKPOINT_EVERY:-10}"
  {
    echo "base_model: \"$E2E_MODEL\""
    echo "prompt { num_virtual_tokens: 4 }"
    echo "source {"
    local t
    for t in $sources; do
      echo "  tasks { name: \"$t\" train_path: \"$E2E_TASKS/$t.train.jsonl\" eval_path: \"$E2E_TASKS/$t.eval.jsonl\" }"
    done
    echo "  train { steps: ${SOURCE_STEPS:-20} batch_size: 4 checkpoint_every: $ckpt max_eval_examples: 4 }"
    echo "}"
    echo "distillation {"
    echo "  train { steps: ${DISTILL_STEPS:-20} batch_size: 4 checkpoint_every: $ckpt max_eval_examples: 4 }"
    echo "  world_size: ${WORLD_SIZE:-2}"
    echo "}"
    if [ -n "$targets" ]; then
      echo "target {"
      local pair
      for pair in $targets; do
        echo "  tasks { name: \"${pair%%:*}\" train_path: \"$E2E_TASKS/${pair#*:}.train.jsonl\" eval_path: \"$E2E_TASKS/${pair#*:}.eval.jsonl\" }"
      done
      echo "  train { steps: ${TARGET_STEPS:-20} batch_size: 4 checkpoint_every: $ckpt max_eval_examples: 4 }"
      echo "}"
    fi
  } > "$file"
  echo "$file"
}
