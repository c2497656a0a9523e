#!/usr/bin/env bash
# The demo, end to end, on this machine:
#
#   1. installs the Debian packages the build needs (tools/setup.sh),
#   2. builds the coordinator, the worker and mptctl with Bazel,
#   3. starts a coordinator and two workers (deploy/start_local.sh),
#   4. submits the demo pipeline (demo/pipeline.textproto: five source
#      skills, distillation on two data-parallel ranks over Gloo, three
#      target skills) and, next to it, the plain prompt-tuning baseline for
#      the target skills (demo/baseline.textproto),
#   5. watches the pipeline with mptctl, prints the per-task results and the
#      comparison with the baseline, downloads every adapter,
#   6. stops the coordinator and the workers.
#
#   tools/run_demo.sh [--out DIR] [--workers N] [--no_baseline]
#
# Everything it writes goes under --out (default out/demo): the cluster's
# state and logs, the downloaded adapters (PEFT folders) and results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

out=out/demo
workers=2
baseline=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --no_baseline) baseline=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "run_demo: unknown option $1" >&2; exit 2 ;;
  esac
done
step() { echo; echo "=== $* ==="; }
start=$(date +%s)

step "Packages"
tools/setup.sh

step "Build"
bazel build //server:coordinator //worker:worker //cli:mptctl
bin=$(bazel info bazel-bin 2>/dev/null)
mptctl="$bin/cli/mptctl"

if [ ! -f demo/model/config.json ]; then
  cat >&2 <<'EOF'
run_demo: demo/model is missing. It is made by the demo-model script:
  python3 tools/demo/make_demo_model.py --out demo/model
(see demo/README.md).
EOF
  exit 1
fi

step "Cluster: a coordinator and $workers workers"
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/cluster" "$out/adapters" "$out/baseline"
deploy/start_local.sh --run_dir "$out/cluster" --workers "$workers" --bin "$bin" \
  --models "$repo/demo/model" > "$out/cluster.log" 2>&1 &
cluster=$!
stop_cluster() {
  if kill -0 "$cluster" 2>/dev/null; then
    step "Stopping the cluster"
    kill -TERM "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
    tail -n 1 "$out/cluster.log"
  fi
}
trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
for _ in $(seq 600); do
  [ -f "$out/cluster/ready" ] && break
  if ! kill -0 "$cluster" 2>/dev/null; then
    cat "$out/cluster.log" >&2
    echo "run_demo: the cluster did not start" >&2
    exit 1
  fi
  sleep 0.2
done
[ -f "$out/cluster/ready" ] || { echo "run_demo: the cluster did not start in time" >&2; exit 1; }
export MPT_COORDINATOR
MPT_COORDINATOR=$(cat "$out/cluster/coordinator.addr")
"$mptctl" workers

step "Submit"
job=$("$mptctl" submit --spec demo/pipeline.textproto --name="demo pipeline" --priority=1)
base=""
if [ "$baseline" = 1 ]; then
  base=$("$mptctl" submit --spec demo/baseline.textproto --kind=source \
         --name="demo baseline: plain prompt tuning")
fi
"$mptctl" list

step "Watch $job"
rc=0
"$mptctl" watch "$job" || rc=$?
if [ "$rc" -ne 0 ]; then
  "$mptctl" get "$job" >&2 || true
  echo "run_demo: the pipeline did not succeed (mptctl exit status $rc)" >&2
  exit 1
fi
if [ -n "$base" ]; then
  step "Waiting for the baseline $base"
  "$mptctl" watch "$base" > "$out/baseline-watch.log" 2>&1 || {
    cat "$out/baseline-watch.log" >&2
    echo "run_demo: the baseline job did not succeed" >&2
    exit 1
  }
fi

step "Download"
"$mptctl" download "$job" --out "$out/adapters"
[ -z "$base" ] || "$mptctl" download "$base" --out "$out/baseline" > /dev/null

step "Results"
"$mptctl" get "$job" --output=json > "$out/pipeline.json"
[ -z "$base" ] || "$mptctl" get "$base" --output=json > "$out/baseline.json"
# The metric "<task>/accuracy" of a job's JSON, as a percentage ("-" if none).
# With a third argument "initial", the untrained prompt's accuracy.
accuracy() {
  local file="$1" task="$2" prefix="" v
  [ "${3:-}" = initial ] && prefix="initial/"
  [ -f "$file" ] || { echo "-"; return; }
  v=$(grep -o "\"$prefix$task/accuracy\": [0-9.eE+-]*" "$file" | head -n 1 | awk '{print $2}')
  if [ -z "$v" ]; then echo "-"; else awk -v v="$v" 'BEGIN { printf "%.1f%%", 100 * v }'; fi
}
{
  echo "Target skills, accuracy on held-out examples (the same training budget for both):"
  printf "  %-10s %15s %22s %22s\n" task "random prompt" "plain prompt tuning" "MPT (this pipeline)"
  for t in min food topic; do
    printf "  %-10s %15s %22s %22s\n" "$t" "$(accuracy "$out/baseline.json" "$t" initial)" \
      "$(accuracy "$out/baseline.json" "$t")" "$(accuracy "$out/pipeline.json" "$t")"
  done
  echo
  echo "Source skills (the teachers):"
  for t in max animal sentiment antonym colour; do
    printf "  %-10s %22s\n" "$t" "$(accuracy "$out/pipeline.json" "$t")"
  done
  echo
  echo "Adapters (PEFT folders) in $out/adapters; job $job."
  echo "Total time: $(( $(date +%s) - start ))s"
} | tee "$out/results.txt"
