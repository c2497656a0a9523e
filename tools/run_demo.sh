#!/usr/bin/env bash
# The demo, end to end, on this machine:
#
#   1. installs the Debian packages the build needs (tools/setup.sh),
#   2. builds the coordinator, the worker and mptctl with Bazel,
#   3. starts a coordinator and two workers (deploy/start_local.sh),
#   4. writes the few-shot target data and specs (tools/demo/fewshot_demo.py:
#      32 training examples per target skill and seed, 3 seeds, test sets
#      never trained on) and submits the source prompts + distillation (five
#      source skills, distillation on two data-parallel ranks over Gloo)
#      and, next to it, plain prompt tuning of the target skills per seed,
#   5. when the distillation is done, submits MPT target adaptation per
#      seed, watches every job, prints the few-shot table (mean ± std over
#      seeds) with a verdict, writes results.json, downloads the adapters,
#   6. stops the coordinator and the workers.
#
#   tools/run_demo.sh [--out DIR] [--workers N] [--no_baseline] [--autocast bf16]
#
# Everything it writes goes under --out (default out/demo): the cluster's
# state and logs, the downloaded adapters (PEFT folders), results.txt and
# results.json. --autocast bf16 has the workers train under bf16 autocast
# (the frozen model's products in bfloat16, the prompts fp32).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

out=out/demo
workers=2
baseline=1
autocast=off
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --no_baseline) baseline=0; shift ;;
    --autocast) autocast="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
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
  --models "$repo/demo/model" --autocast "$autocast" > "$out/cluster.log" 2>&1 &
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

step "Few-shot targets: data and specs"
python3 tools/demo/fewshot_demo.py prepare --out "$out/fewshot"
fs="$out/fewshot"
seeds="0 1 2"

step "Submit"
job=$("$mptctl" submit --spec "$fs/sources.json" --name="demo: source prompts + distillation" \
      --priority=1)
pt_jobs=(); random_jobs=()
if [ "$baseline" = 1 ]; then
  for s in $seeds; do
    pt_jobs+=("$("$mptctl" submit --spec "$fs/pt_s$s.json" --kind=source \
                 --name="demo baseline: plain prompt tuning, seed $s")")
    random_jobs+=("$("$mptctl" submit --spec "$fs/random_s$s.json" --kind=source \
                     --name="demo baseline: random prompt, seed $s")")
  done
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
"$mptctl" get "$job" --output=json > "$out/pipeline.json"
artifact=$(python3 tools/demo/fewshot_demo.py artifact "$out/pipeline.json")

step "Target adaptation from $artifact, one job per seed"
python3 tools/demo/fewshot_demo.py targets --out "$fs" --artifact "$artifact"
mpt_jobs=()
for s in $seeds; do
  mpt_jobs+=("$("$mptctl" submit --spec "$fs/mpt_s$s.json" --kind=target \
               --name="demo: MPT target adaptation, seed $s")")
done
# Every job of the comparison must succeed.
wait_job() {
  "$mptctl" watch "$1" > "$out/watch-${1//\//_}.log" 2>&1 || {
    cat "$out/watch-${1//\//_}.log" >&2
    echo "run_demo: $2 ($1) did not succeed" >&2
    exit 1
  }
  "$mptctl" get "$1" --output=json > "$out/${1//\//_}.json"
}
mpt_files=""; pt_files=""; random_files=""
for j in "${mpt_jobs[@]}"; do wait_job "$j" "MPT target job"; mpt_files="$mpt_files,$out/${j//\//_}.json"; done
for j in "${pt_jobs[@]}"; do wait_job "$j" "baseline job"; pt_files="$pt_files,$out/${j//\//_}.json"; done
for j in "${random_jobs[@]}"; do
  wait_job "$j" "baseline job"; random_files="$random_files,$out/${j//\//_}.json"
done

step "Download"
"$mptctl" download "$job" --out "$out/adapters"
for j in "${mpt_jobs[@]}"; do
  "$mptctl" download "$j" --out "$out/adapters/${j//\//_}" > /dev/null
done

step "Results"
{
  echo "Source skills (the teachers), eval accuracy:"
  for t in max animal sentiment antonym colour; do
    v=$(grep -o "\"$t/accuracy\": [0-9.eE+-]*" "$out/pipeline.json" | head -n 1 | awk '{print $2}')
    printf "  %-10s %s\n" "$t" "${v:+$(awk -v v="$v" 'BEGIN { printf "%.1f%%", 100 * v }')}"
  done
  echo
  if [ -n "$pt_files" ]; then
    python3 tools/demo/fewshot_demo.py report --out "$fs" --mpt "${mpt_files#,}" \
      --pt "${pt_files#,}" --random "${random_files#,}" --results "$out/results.json"
  fi
  echo
  echo "Adapters (PEFT folders) in $out/adapters; jobs $job ${mpt_jobs[*]} ${pt_jobs[*]} ${random_jobs[*]}."
  echo "Total time: $(( $(date +%s) - start ))s"
} | tee "$out/results.txt"
