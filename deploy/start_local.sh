#!/usr/bin/env bash
# Starts an MPT coordinator and N workers on this machine and keeps them
# running until Ctrl-C (or SIGTERM), then stops them all.
#
#   deploy/start_local.sh                       # 2 workers, state in ./mpt-run
#   deploy/start_local.sh --workers 4 --run_dir /tmp/mpt --port 7070
#
# In another shell:
#   export MPT_COORDINATOR=$(cat ./mpt-run/coordinator.addr)
#   mptctl submit --spec demo/pipeline.textproto --watch
#
# The run folder holds everything: coordinator/ (the SQLite database and the
# artefact store, reused by the next start, so jobs survive a restart),
# workers/<i>/ (scratch), logs/*.log, coordinator.addr (host:port) and
# `ready`, which appears once the coordinator listens and every worker has
# registered. Binaries come from --bin, $MPT_BIN, or `bazel info bazel-bin`
# (build them first: bazel build //server:coordinator //worker:worker
# //cli:mptctl).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/start_local.sh [options]
  --workers N          workers to start (default 2)
  --run_dir DIR        state, logs and scratch (default ./mpt-run)
  --port P             coordinator port on 127.0.0.1 (default: a free one)
  --listen HOST        address the coordinator binds (default 127.0.0.1)
  --threads T          compute threads per worker (default: cores / workers)
  --device D           worker device: cpu, cuda, cuda:N (default cpu; with
                       cuda, worker i gets cuda:i)
  --models DIR[,DIR]   base-model folders the workers preload (default: none,
                       loaded on first use)
  --autocast MODE      the workers' --autocast: off (default) or bf16
  --lease_seconds S    coordinator lease (default 10)
  --token_file F       require this bearer token (users and, unless
                       --worker_token_file is given, workers)
  --worker_token_file F  the workers' own token: the coordinator accepts only
                       it from workers, and never from users
  --tokens             generate a user token and a separate worker token in
                       DIR/tokens/ (kept across restarts) and use them
  --bin DIR            folder with server/coordinator, worker/worker,
                       cli/mptctl (default $MPT_BIN or `bazel info bazel-bin`)
  --fresh              delete the run folder's state first
EOF
}

workers=2
run_dir=./mpt-run
port=""
listen=127.0.0.1
threads=""
device=cpu
models=""
autocast=off
lease=10
token_file=""
worker_token_file=""
tokens=0
bin="${MPT_BIN:-}"
fresh=0
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --run_dir) run_dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --listen) listen="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --autocast) autocast="$2"; shift 2 ;;
    --lease_seconds) lease="$2"; shift 2 ;;
    --token_file) token_file="$2"; shift 2 ;;
    --worker_token_file) worker_token_file="$2"; shift 2 ;;
    --tokens) tokens=1; shift ;;
    --bin) bin="$2"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start_local: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ -z "$bin" ]; then
  bin=$(cd "$(dirname "$0")/.." && bazel info bazel-bin 2>/dev/null) || {
    echo "start_local: cannot find the binaries; pass --bin or set MPT_BIN" >&2
    exit 2
  }
fi
for b in server/coordinator worker/worker; do
  if [ ! -x "$bin/$b" ]; then
    echo "start_local: $bin/$b is missing; run: bazel build //server:coordinator //worker:worker //cli:mptctl" >&2
    exit 2
  fi
done
if [ -z "$threads" ]; then
  cores=$(nproc 2>/dev/null || echo 2)
  threads=$(( cores / workers ))
  [ "$threads" -ge 1 ] || threads=1
fi

mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)
if [ "$fresh" = 1 ]; then rm -rf "$run_dir/coordinator" "$run_dir/workers"; fi
mkdir -p "$run_dir/logs" "$run_dir/coordinator" "$run_dir/workers"
rm -f "$run_dir/ready" "$run_dir/coordinator.addr"

if [ "$tokens" = 1 ]; then
  if [ -n "$token_file" ] || [ -n "$worker_token_file" ]; then
    echo "start_local: --tokens generates the tokens; do not pass token files as well" >&2
    exit 2
  fi
  mkdir -p "$run_dir/tokens"
  chmod 700 "$run_dir/tokens"
  for t in user worker; do
    if [ ! -s "$run_dir/tokens/$t" ]; then
      (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$run_dir/tokens/$t")
    fi
  done
  token_file="$run_dir/tokens/user"
  worker_token_file="$run_dir/tokens/worker"
fi
if [ -n "$worker_token_file" ] && [ -z "$token_file" ]; then
  echo "start_local: --worker_token_file needs --token_file (the users' token)" >&2
  exit 2
fi
# What the workers send: their own token, else the shared one.
auth_flags=()
if [ -n "$worker_token_file" ]; then
  auth_flags=(--token_file="$worker_token_file")
elif [ -n "$token_file" ]; then
  auth_flags=(--token_file="$token_file")
fi

pids=()
stop_all() {
  trap - EXIT INT TERM
  rm -f "$run_dir/ready"
  # Workers first (their running stages are requeued from the last
  # checkpoint), then the coordinator.
  local p
  for p in "${pids[@]:1}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]:1}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ "${#pids[@]}" -gt 0 ]; then
    p="${pids[0]}"
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  echo "start_local: stopped (state kept in $run_dir)" >&2
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- coordinator ------------------------------------------------------------
coord_log="$run_dir/logs/coordinator.log"
coord_flags=(--listen="$listen:${port:-0}" --db="$run_dir/coordinator/jobs.db"
             --artifacts="$run_dir/coordinator/artifacts" --lease_seconds="$lease"
             --check_spec_files)
if [ -n "$token_file" ]; then coord_flags+=(--auth_token_file="$token_file"); fi
if [ -n "$worker_token_file" ]; then coord_flags+=(--worker_token_file="$worker_token_file"); fi
"$bin/server/coordinator" "${coord_flags[@]}" >>"$coord_log" 2>&1 &
pids+=($!)
actual_port=""
for _ in $(seq 100); do
  actual_port=$(grep -o 'listening on .*(port [0-9]*' "$coord_log" 2>/dev/null | tail -n 1 |
                grep -o '[0-9]*$' || true)
  [ -n "$actual_port" ] && break
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "start_local: the coordinator exited; see $coord_log:" >&2
    tail -n 20 "$coord_log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$actual_port" ]; then
  echo "start_local: the coordinator did not start listening; see $coord_log" >&2
  exit 1
fi
connect_host="$listen"
if [ "$listen" = 0.0.0.0 ] || [ "$listen" = "[::]" ]; then connect_host=127.0.0.1; fi
address="$connect_host:$actual_port"
echo "$address" > "$run_dir/coordinator.addr"

# --- workers ----------------------------------------------------------------
for i in $(seq 0 $(( workers - 1 ))); do
  dev="$device"
  if [ "$device" = cuda ]; then dev="cuda:$i"; fi
  log="$run_dir/logs/worker-$i.log"
  : > "$log"
  worker_flags=(--coordinator="$address" --work_dir="$run_dir/workers/$i" --device="$dev"
                --threads="$threads" --autocast="$autocast" --gloo_bind=127.0.0.1
                --hostname="$(hostname)-w$i"
                "${auth_flags[@]}")
  if [ -n "$models" ]; then worker_flags+=(--models="$models"); fi
  "$bin/worker/worker" "${worker_flags[@]}" >>"$log" 2>&1 &
  pids+=($!)
done

# Ready once every worker has registered.
for _ in $(seq 600); do
  registered=0
  for i in $(seq 0 $(( workers - 1 ))); do
    if grep -q "registered as" "$run_dir/logs/worker-$i.log" 2>/dev/null; then
      registered=$(( registered + 1 ))
    fi
  done
  [ "$registered" -eq "$workers" ] && break
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "start_local: a process exited during start-up; logs in $run_dir/logs" >&2
      exit 1
    fi
  done
  sleep 0.1
done
if [ "$registered" -ne "$workers" ]; then
  echo "start_local: only $registered of $workers workers registered; logs in $run_dir/logs" >&2
  exit 1
fi
touch "$run_dir/ready"
token_hint=""
if [ -n "$token_file" ]; then token_hint="  export MPT_TOKEN=\$(cat $token_file)
"; fi
cat >&2 <<EOF
start_local: coordinator at $address with $workers worker(s); logs in $run_dir/logs
  export MPT_COORDINATOR=$address
${token_hint}  $bin/cli/mptctl workers
Press Ctrl-C to stop them all.
EOF

# Wait until a signal comes, or report a process that dies.
while true; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "start_local: process $p exited; see $run_dir/logs (the others keep running)" >&2
      new=()
      for q in "${pids[@]}"; do [ "$q" = "$p" ] || new+=("$q"); done
      if [ "$p" = "${pids[0]}" ]; then
        echo "start_local: the coordinator is gone; stopping" >&2
        exit 1
      fi
      pids=("${new[@]}")
    fi
  done
  sleep 1 &
  wait $! 2>/dev/null || true
done
