#!/usr/bin/env bash
# Makespan of a whole MPT pipeline through the service against the same
# work run one stage after another in one process.
#
#   tools/bench/makespan_bench.sh [--out DIR] [--bin BAZEL_BIN]
#
# The work: the demo model (demo/model) and the eight demo tasks as source
# tasks, their distillation (world_size 2), and four target tasks (the demo
# tasks min, food, topic and max again: a makespan
# benchmark, not a quality one), with small step counts.
#
#   service   a coordinator and two workers on this machine (one compute
#             thread each), the job submitted once both are registered;
#             wall time from the job's submission to its end, as the
#             coordinator recorded them
#   alone     mpt_train --stage=all on the same spec in one process, once
#             per thread setting in ALONE_THREADS (default "0 1": its
#             default, every usable core, and one thread)
#
# Then, from the coordinator's events (every stage attempt's start, on which
# workers, and its end): each worker's busy fraction, the time it held at
# least one assignment over the job's wall time, and its idle gaps.
#
# Env: SOURCE_STEPS (40), DISTILL_STEPS (40), TARGET_STEPS (20), BATCH (16),
# PACK (the workers' --max_pack_size, 1; -1: the worker's default, one per
# lane on a CPU), POLL (worker --poll_seconds, 10), WORKERS (2),
# WORKER_THREADS (each worker's --threads, 1), DISTILL_RANKS (the
# distillation's world_size, 2, at most WORKERS). One worker with every
# core: WORKERS=1 WORKER_THREADS=0 DISTILL_RANKS=1 PACK=-1.
# Needs bazel-bin/{server/coordinator,worker/worker,worker/mpt_train,cli/mptctl}
# (bazel build //server:coordinator //worker:worker //worker:mpt_train //cli:mptctl).
# Not a test: figures depend on the machine and its load (the script prints
# the load average before and after).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
out=out/makespan
bin=bazel-bin
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "makespan_bench: unknown option $1" >&2; exit 2 ;;
  esac
done
for b in server/coordinator worker/worker worker/mpt_train cli/mptctl; do
  [ -x "$bin/$b" ] || { echo "makespan_bench: $bin/$b is not built" >&2; exit 2; }
done
[ -f demo/model/config.json ] || { echo "makespan_bench: demo/model is missing (demo/README.md)" >&2; exit 2; }
rm -rf "$out"
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
bin=$(cd "$bin" && pwd)

# --- The spec -------------------------------------------------------------
spec="$out/makespan.textproto"
train() {  # steps
  echo "  train { steps: $1 batch_size: ${BATCH:-16} checkpoint_every: 1000 eval_every: 1000"
  echo "          optimizer { learning_rate: 0.3 schedule: \"constant\" }"
  echo "          max_input_length: 64 max_target_length: 24 max_eval_examples: 32 }"
}
task() {  # name data
  echo "  tasks { name: \"$1\" train_path: \"$repo/demo/data/$2/train.jsonl\" eval_path: \"$repo/demo/data/$2/eval.jsonl\" }"
}
{
  echo "base_model: \"$repo/demo/model\""
  echo "prompt { num_virtual_tokens: 20 }"
  echo "source {"
  for t in max animal sentiment antonym colour min food topic; do task "$t" "$t"; done
  train "${SOURCE_STEPS:-40}"
  echo "}"
  echo "distillation {"
  echo "  world_size: ${DISTILL_RANKS:-2}"
  train "${DISTILL_STEPS:-40}"
  echo "}"
  echo "target {"
  for t in min food topic max; do task "$t" "$t"; done
  train "${TARGET_STEPS:-20}"
  echo "}"
} > "$spec"

echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
workers=()
for i in $(seq 0 $(( ${WORKERS:-2} - 1 ))); do workers+=("w$i"); done

# --- Through the service --------------------------------------------------
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
"$bin/server/coordinator" --listen=127.0.0.1:0 --db="$out/coordinator/jobs.db" \
  --artifacts="$out/coordinator/artifacts" > "$out/logs/coordinator.log" 2>&1 &
pids+=($!)
port=""
for _ in $(seq 300); do
  port=$(grep -o 'listening on .*(port [0-9]*' "$out/logs/coordinator.log" | grep -o '[0-9]*$' || true)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "makespan_bench: the coordinator did not start" >&2; exit 1; }
addr=127.0.0.1:$port
for w in "${workers[@]}"; do
  "$bin/worker/worker" --coordinator="$addr" --work_dir="$out/$w" --threads="${WORKER_THREADS:-1}" \
    --models="$repo/demo/model" --max_pack_size="${PACK:-1}" --poll_seconds="${POLL:-10}" \
    --hostname="$w" > "$out/logs/$w.log" 2>&1 &
  pids+=($!)
done
for w in "${workers[@]}"; do
  for _ in $(seq 600); do grep -q "registered as" "$out/logs/$w.log" && break; sleep 0.1; done
  grep -q "registered as" "$out/logs/$w.log" || { echo "makespan_bench: worker $w did not register" >&2; exit 1; }
done
mptctl() { "$bin/cli/mptctl" --coordinator="$addr" "$@"; }
job=$(mptctl submit --spec "$spec" --name=makespan)
mptctl watch "$job" > "$out/logs/watch.log" 2>&1 || true
mptctl get "$job" --output=json > "$out/job.json"
mptctl watch "$job" --output=json > "$out/events.jsonl" 2>/dev/null || true
state=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["state"])' "$out/job.json")
[ "$state" = SUCCEEDED ] || { echo "makespan_bench: the job ended $state" >&2; tail "$out/logs/watch.log" >&2; exit 1; }
cleanup
pids=()

# --- One process, one stage after another ---------------------------------
: > "$out/alone.txt"
for threads in ${ALONE_THREADS-0 1}; do
  rm -rf "$out/alone" "$out/alone_work"
  alone_start=$(date +%s.%N)
  "$bin/worker/mpt_train" --spec="$spec" --out="$out/alone" --work_dir="$out/alone_work" \
    --progress=none --threads="$threads" > "$out/logs/mpt_train_$threads.log" 2>&1 ||
    { echo "makespan_bench: mpt_train failed" >&2; tail "$out/logs/mpt_train_$threads.log" >&2; exit 1; }
  alone_end=$(date +%s.%N)
  echo "$threads $alone_start $alone_end" >> "$out/alone.txt"
done

# --- Figures ----------------------------------------------------------------
python3 - "$out/job.json" "$out/events.jsonl" "$out/alone.txt" "${PACK:-1}" "${#workers[@]}" \
  "${WORKER_THREADS:-1}" <<'PY'
import datetime, json, re, sys

def ts(text):
    # RFC 3339 with Z; fractional seconds of any length.
    m = re.match(r"(\d+-\d+-\d+T\d+:\d+:\d+)(\.\d+)?Z", text)
    base = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    return base + (float(m.group(2)) if m.group(2) else 0.0)

job = json.load(open(sys.argv[1]))
events = [json.loads(l) for l in open(sys.argv[2]) if l.strip().startswith("{")]
wall = ts(job["endTime"] if "endTime" in job else job["end_time"]) - ts(
    job["createTime"] if "createTime" in job else job["create_time"])
alone = {}
for line in open(sys.argv[3]):
    threads, start, end = line.split()
    alone[threads] = float(end) - float(start)
# Per stage: start (time, workers) and end; per worker: its intervals.
open_attempts = {}
intervals = {}
stage_seconds = {}
for e in events:
    stage, msg, t = e.get("stage", ""), e.get("message", ""), ts(e["time"])
    m = re.match(r"started attempt \d+ on ([^ (,]+(?:, [^ (,]+)*)", msg)
    if stage and m:
        open_attempts[stage] = (t, m.group(1).split(", "))
    elif stage in open_attempts and (msg.startswith("stage succeeded") or "requeued" in msg
                                      or "failed" in msg or msg.startswith("attempt ")):
        start, workers = open_attempts.pop(stage)
        stage_seconds[stage] = t - start
        for w in workers:
            intervals.setdefault(w, []).append((start, t))
job_start = ts(job.get("createTime", job.get("create_time")))
job_end = job_start + wall
pack = "the worker's default" if sys.argv[4] == "-1" else sys.argv[4]
threads = "every core" if sys.argv[6] == "0" else f"{sys.argv[6]} thread(s)"
print(f"service ({sys.argv[5]} worker(s), {threads} each, packs of up to {pack}): wall {wall:.1f} s")
for threads, seconds in alone.items():
    label = "default threads" if threads == "0" else f"--threads={threads}"
    print(f"one process (mpt_train --stage=all, {label}): wall {seconds:.1f} s; "
          f"service speed-up {seconds / wall:.2f}x")
for w, spans in sorted(intervals.items()):
    spans.sort()
    busy, gaps, cur_start, cur_end = 0.0, [], None, None
    for s, e in spans:
        if cur_end is None or s > cur_end:
            if cur_end is not None:
                busy += cur_end - cur_start
                gaps.append(s - cur_end)
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    busy += cur_end - cur_start
    lead, tail = spans[0][0] - job_start, job_end - cur_end
    print(f"  {w}: busy {busy:.1f} s of {wall:.1f} s = {100 * busy / wall:.1f}%; "
          f"{len(spans)} stage attempts; idle before the first {lead:.2f} s, "
          f"between stages {sum(gaps):.2f} s (largest {max(gaps, default=0):.2f} s), "
          f"after the last {tail:.2f} s")
kinds = {}
for stage, sec in stage_seconds.items():
    kinds.setdefault(stage.split("/")[0], []).append(sec)
for kind, secs in kinds.items():
    print(f"  {kind}: {len(secs)} stages, {sum(secs):.1f} s in all "
          f"(shortest {min(secs):.1f} s, longest {max(secs):.1f} s)")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
