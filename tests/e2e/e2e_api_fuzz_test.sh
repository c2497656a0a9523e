#!/usr/bin/env bash
# End to end: random and mutated requests to every RPC of a real coordinator
# from a generic gRPC client (tests/e2e/api_fuzz.py: grpcio and the
# descriptors of proto/mpt/v1), a quarter of them to its HTTP listener
# instead. Every answer must be OK or a code for bad input with a one-line
# message of bounded size (HTTP: no 5xx, API errors as JSON); it must stay
# up, keep the job submitted before the run as it was, and after kill -9
# and a restart on the same store still list and serve it.
#
# API_FUZZ_REQUESTS (default 1500) and API_FUZZ_SEED (default 1, so that
# CI repeats one run; longer runs with other seeds: tests/e2e/api_fuzz.py
# against any coordinator) set the run; a finding prints the seed.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

PYTHON="${E2E_PYTHON:-/usr/bin/python3}"
"$PYTHON" -c "import grpc, google.protobuf" 2>/dev/null ||
  e2e_fail "$PYTHON lacks grpc or protobuf (tools/setup.sh installs python3-grpcio python3-protobuf)"

gen="$E2E_DIR/gen"
"$PYTHON" "$E2E_RUNFILES/python/generate_proto.py" --proto_dir "$E2E_RUNFILES/proto" \
  --out "$gen" > "$E2E_DIR/logs/generate_proto.log" 2>&1 ||
  { cat "$E2E_DIR/logs/generate_proto.log" >&2; e2e_fail "generate_proto.py failed"; }

e2e_start_coordinator --http_listen=127.0.0.1:0
http_port=$(grep -o 'http port [0-9]*' "$E2E_DIR/logs/coordinator.log" | tail -n 1 | grep -o '[0-9]*$')
[ -n "$http_port" ] || e2e_fail "the coordinator did not report its HTTP port"
job=$(mptctl submit --spec "$(e2e_write_spec "$E2E_DIR/spec.textproto")" 2>/dev/null | head -n 1)
[[ "$job" == jobs/* ]] || e2e_fail "submit printed \"$job\""
before=$(mptctl get "$job" --output=json | "$PYTHON" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["spec"], sort_keys=True))')

seed="${API_FUZZ_SEED:-1}"
requests="${API_FUZZ_REQUESTS:-1500}"
e2e_log "api_fuzz: seed $seed, $requests requests"
"$PYTHON" "$E2E_RUNFILES/tests/e2e/api_fuzz.py" "$COORD_ADDR" "$job" --gen "$gen" \
  --requests "$requests" --seed "$seed" --report "$E2E_DIR/logs/api_fuzz.log" \
  --http "127.0.0.1:$http_port" \
  --adapter "$E2E_RUNFILES/tests/testdata/mpt/adapter_peft_prompt" >&2 ||
  e2e_fail "api_fuzz found problems (rerun with API_FUZZ_SEED=$seed; report in api_fuzz.log)"
kill -0 "${E2E_PIDS[coordinator]}" 2>/dev/null || e2e_fail "the coordinator died during the run"

# The store survives a crash after all that: restart on it, list, get.
e2e_kill coordinator
e2e_start_coordinator --port "$COORD_PORT"
# Every page: a long run submits more jobs than one page holds.
mptctl list --all --output=json > "$E2E_DIR/list.json" || e2e_fail "list after the restart failed"
grep -q "\"$job\"" "$E2E_DIR/list.json" || e2e_fail "$job is not listed after the restart"
after=$(mptctl get "$job" --output=json | "$PYTHON" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["spec"], sort_keys=True))')
[ "$before" = "$after" ] || e2e_fail "$job's spec changed"
e2e_log "PASS"
