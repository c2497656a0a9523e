#!/usr/bin/env bash
# coordinator_bench end to end at a tiny size (every phase, a restart in a
# fresh process), and its flags by class: out of range, unknown calls, and
# phases with nothing to work on (GetJob with no job, a restart with an
# empty store). Each ends within a timeout with a status below 128 and, for
# the refused ones, a message naming the flag.
set -uo pipefail

BENCH="${TEST_SRCDIR:-$PWD}/${TEST_WORKSPACE:-mpt}/server/coordinator_bench"
D=$(mktemp -d "${TEST_TMPDIR:-/tmp}/coordinator_bench.XXXXXX")
trap 'rm -rf "$D"' EXIT
export MPT_LOG_LEVEL=WARNING
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# check NAME WANT_RC "substring1|substring2..." -- flags...
check() {
  local name=$1 want=$2 wants=$3
  shift 4
  local log="$D/$name.log"
  TMPDIR="$D" timeout -s KILL 120 "$BENCH" "$@" >"$log" 2>&1 </dev/null
  local rc=$?
  if [ "$rc" -ne "$want" ]; then
    fail "$name: exit $rc, want $want"; tail -8 "$log" >&2; return
  fi
  local IFS='|' w
  for w in $wants; do
    if ! grep -qF -- "$w" "$log"; then
      fail "$name: the output lacks \"$w\""; tail -8 "$log" >&2; return
    fi
  done
  echo "ok: $name (exit $rc)"
}

check tiny 0 "SubmitJob         6        0|GetJob            6        0|2 saw their final event|recovery with 26 unfinished jobs" -- \
  --clients=2 --requests=3 --watchers=2 --recovery_jobs=26 --recovery_runs=1
check no_clients 2 "--clients must be at least 1" -- --clients=0
check negative_requests 2 "--requests and --watchers at least 0" -- --requests=-1
check unknown_call 2 "--calls: submit, get or list, got \"gets\"" -- --calls=submit,gets
check unknown_list_view 2 "--list_view: full or basic, got \"short\"" -- --list_view=short
check get_without_jobs 2 "--calls: get needs jobs to ask for" -- --calls=get --watchers=0
check get_after_no_submits 2 "--calls: get needs jobs to ask for" -- --calls=submit,get --requests=0 --watchers=0
check empty_store 0 "restart not timed: the store holds no job" -- \
  --clients=1 --requests=0 --watchers=0 --calls=list --recovery_jobs=0
check restart_from_filled_store_only 0 "recovery with 5 unfinished jobs" -- \
  --clients=1 --requests=0 --watchers=0 --calls=list --recovery_jobs=5 --recovery_runs=1

[ "$failures" -eq 0 ] || { echo "$failures failure(s)" >&2; exit 1; }
echo "all passed"
