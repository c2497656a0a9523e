#!/usr/bin/env bash
# Metrics, checked by the real Prometheus server (Debian's `prometheus`):
# a coordinator and a worker serve /metrics; Prometheus scrapes both every
# second while a small pipeline runs; its query API must then see the job
# counted as SUCCEEDED, the stages' durations, the RPCs by method and code,
# and the worker's steps, model FLOPs utilisation and memory. `promtool check metrics` lints both
# expositions.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

PROMETHEUS="${E2E_PROMETHEUS:-/usr/bin/prometheus}"
PROMTOOL="${E2E_PROMTOOL:-/usr/bin/promtool}"
PYTHON=/usr/bin/python3
for tool in "$PROMETHEUS" "$PROMTOOL" "$PYTHON"; do
  [ -x "$tool" ] || e2e_fail "$tool not found (tools/setup.sh installs prometheus and python3)"
done
HERE="$E2E_RUNFILES/tests/e2e"

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

e2e_start_coordinator --http_listen=127.0.0.1:0
http_port=$(grep -o 'http port [0-9]*' "$E2E_DIR/logs/coordinator.log" | tail -n 1 | grep -o '[0-9]*$')
[ -n "$http_port" ] || e2e_fail "the coordinator did not report its HTTP port"
# The worker starts later, once Prometheus has seen the job queued.
worker_port=$(free_port)

# Prometheus on a free loopback port, scraping both every second.
prom_port=$(free_port)
cat > "$E2E_DIR/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: coordinator
    static_configs: [{targets: ["127.0.0.1:$http_port"]}]
  - job_name: worker
    static_configs: [{targets: ["127.0.0.1:$worker_port"]}]
YAML
"$PROMTOOL" check config "$E2E_DIR/prometheus.yml" > "$E2E_DIR/logs/promtool_config.log" 2>&1 ||
  e2e_fail "promtool rejects the generated config"
e2e_spawn "" "$E2E_DIR/logs/prometheus.log" "$PROMETHEUS" \
  --config.file="$E2E_DIR/prometheus.yml" --storage.tsdb.path="$E2E_DIR/prometheus-data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn
E2E_PIDS[prometheus]=$E2E_SPAWNED
PROM="http://127.0.0.1:$prom_port"
query() { "$PYTHON" "$HERE/prometheus_query.py" "$PROM" "$1"; }
# wait_query TIMEOUT PROMQL: until the query has an answer (a filter holds).
wait_query() {
  e2e_wait_for "$1" "Prometheus to answer $2" \
    "$PYTHON" "$HERE/prometheus_query.py" "$PROM" "$2"
}
wait_query 30 'up{job="coordinator"} == 1'

# A small pipeline: two source tasks, their distillation, one target. No
# worker yet: the job waits, its two source stages are the queue.
spec=$(SOURCE_TASKS="first last" TARGET_TASKS="echo:echo" WORLD_SIZE=1 SOURCE_STEPS=12 \
       DISTILL_STEPS=12 TARGET_STEPS=12 e2e_write_spec "$E2E_DIR/small.textproto")
job=$(mptctl submit --spec "$spec")
e2e_log "submitted $job"
wait_query 20 'mpt_jobs{state="QUEUED"} == 1'
wait_query 10 'mpt_stages_ready == 2'
query 'mpt_stages{state="QUEUED"} == 4' > /dev/null || e2e_fail "four stages are not QUEUED"

e2e_start_worker w0 --metrics_listen="127.0.0.1:$worker_port"
grep -q "metrics port $worker_port" "$E2E_DIR/logs/w0.log" ||
  e2e_fail "the worker does not serve metrics on $worker_port"
wait_query 30 'up{job="worker"} == 1'
e2e_wait_state "$job" SUCCEEDED 120

# The job counted by state, as Prometheus stored it.
wait_query 20 'mpt_jobs{state="SUCCEEDED"} == 1'
answer=$(query 'mpt_jobs{state="SUCCEEDED"}')
e2e_log "mpt_jobs{state=SUCCEEDED}: $answer"
echo "$answer" | grep -q 'instance="127.0.0.1:'"$http_port"'",job="coordinator",state="SUCCEEDED"} 1$' ||
  e2e_fail "unexpected answer for mpt_jobs: $answer"
wait_query 10 'mpt_stages{state="SUCCEEDED"} == 4'
query 'mpt_stages{state="RUNNING"} == 0' > /dev/null || e2e_fail "stages still counted RUNNING"

# Four attempts ran and succeeded: the histogram counted each.
wait_query 10 'sum(mpt_stage_attempt_duration_seconds_count{outcome="succeeded"}) == 4'
query 'sum(mpt_stage_attempt_duration_seconds_bucket{le="+Inf",outcome="succeeded"}) == 4' \
  > /dev/null || e2e_fail "the +Inf bucket disagrees with _count"
query 'sum(mpt_stage_attempt_duration_seconds_sum{outcome="succeeded"}) > 0' > /dev/null ||
  e2e_fail "the stage durations sum to nothing"

# RPCs by method and code: the worker registered once, submitted once, and
# a request for an unknown job was NOT_FOUND.
mptctl get jobs/doesnotexist > /dev/null 2>&1 && e2e_fail "get of an unknown job succeeded"
wait_query 10 'mpt_rpc_duration_seconds_count{method="/mpt.v1.JobService/GetJob",code="NOT_FOUND"} >= 1'
query 'mpt_rpc_duration_seconds_count{method="/mpt.v1.WorkerService/RegisterWorker",code="OK"} == 1' \
  > /dev/null || e2e_fail "RegisterWorker not counted once"
query 'mpt_rpc_duration_seconds_count{method="/mpt.v1.JobService/SubmitJob",code="OK"} == 1' \
  > /dev/null || e2e_fail "SubmitJob not counted once"
# (Over every call since the start, not a rate: the small job may end
# within one scrape interval, and a rate over unchanged counters is empty.)
query 'histogram_quantile(0.5, sum by (le) (mpt_rpc_duration_seconds_bucket{method="/mpt.v1.WorkerService/ReportProgress"})) < 1' \
  > /dev/null || e2e_fail "ReportProgress's median latency is not below a second"

# Workers by state and the store's size.
query 'mpt_workers{state="idle"} == 1' > /dev/null || e2e_fail "the worker is not counted idle"
query 'mpt_store_file_bytes{file="database"} > 0' > /dev/null || e2e_fail "no database size"
query 'mpt_store_jobs == 1' > /dev/null || e2e_fail "the store does not count one job"

# The worker's own metrics: steps (4 stages x 12), losses, memory.
answer=$(query 'mpt_worker_steps_total') || e2e_fail "no mpt_worker_steps_total"
e2e_log "mpt_worker_steps_total: $answer"
query 'mpt_worker_steps_total >= 40' > /dev/null || e2e_fail "too few worker steps: $answer"
query 'max_over_time(mpt_worker_tokens_per_second[5m]) > 0' > /dev/null ||
  e2e_fail "tokens/s was never above 0"
query 'mpt_worker_loss{term="loss"} > 0' > /dev/null || e2e_fail "no loss from the worker"
# Model FLOPs utilisation against the peak the worker measured at start:
# it was above 0 while the stages ran and never above 1.5.
query 'mpt_worker_matmul_peak_flops > 1e8' > /dev/null || e2e_fail "no matrix-multiply peak"
query 'max_over_time(mpt_worker_model_flops_per_second[5m]) > 0' > /dev/null ||
  e2e_fail "model FLOPs per second were never above 0"
answer=$(query 'max_over_time(mpt_worker_mfu_ratio[5m])') || e2e_fail "no mpt_worker_mfu_ratio"
e2e_log "max mpt_worker_mfu_ratio: $answer"
query 'max_over_time(mpt_worker_mfu_ratio[5m]) > 0 and max_over_time(mpt_worker_mfu_ratio[5m]) <= 1.5' \
  > /dev/null || e2e_fail "MFU out of (0, 1.5]: $answer"
query 'process_resident_memory_bytes{job="worker"} > 10e6' > /dev/null ||
  e2e_fail "no worker resident memory"
query 'process_resident_memory_bytes{job="coordinator"} > 1e6' > /dev/null ||
  e2e_fail "no coordinator resident memory"

# Both expositions pass Prometheus's own linter.
for target in "coordinator $http_port" "worker $worker_port"; do
  set -- $target
  "$PYTHON" "$HERE/http_get.py" "http://127.0.0.1:$2/metrics" > "$E2E_DIR/$1.metrics" 2>/dev/null ||
    e2e_fail "cannot fetch $1's /metrics"
  "$PROMTOOL" check metrics < "$E2E_DIR/$1.metrics" > "$E2E_DIR/logs/promtool_$1.log" 2>&1 || {
    cat "$E2E_DIR/logs/promtool_$1.log" >&2
    e2e_fail "promtool check metrics rejects $1's exposition"
  }
done
[ -n "${TEST_UNDECLARED_OUTPUTS_DIR:-}" ] && cp "$E2E_DIR"/*.metrics "$TEST_UNDECLARED_OUTPUTS_DIR/"
e2e_log "Prometheus answered every query"
