#!/usr/bin/env bash
# End to end: TLS and the bearer tokens. The coordinator serves TLS with a
# certificate from a throw-away CA and requires a users' token and a
# separate workers' token; a worker with the workers' token and mptctl with
# the users' token run a job; a client without a token, with a wrong token,
# with the workers' token or without the CA is refused with the documented
# exit codes, and a worker with a wrong token or the users' token stops
# instead of retrying forever.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

command -v openssl >/dev/null || { echo "SKIPPED: no openssl to make certificates" >&2; exit 0; }

tls="$E2E_DIR/tls"
mkdir -p "$tls"
(
  cd "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
    -subj "/CN=mpt test CA" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
    -subj "/CN=mpt-coordinator" 2>/dev/null
  printf "subjectAltName=DNS:mpt-coordinator,DNS:localhost,IP:127.0.0.1\n" > san.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
    -days 2 -extfile san.ext 2>/dev/null
)
echo "e2e-secret-token" > "$tls/token"
echo "e2e-worker-token" > "$tls/worker_token"
echo "not-the-token" > "$tls/wrong"

e2e_start_coordinator --tls_cert="$tls/server.crt" --tls_key="$tls/server.key" \
  --auth_token_file="$tls/token" --worker_token_file="$tls/worker_token"
grep -q "TLS, bearer token" "$E2E_DIR/logs/coordinator.log" || e2e_fail "coordinator is not on TLS with a token"
e2e_start_worker w0 --tls --tls_ca="$tls/ca.crt" --token_file="$tls/worker_token"

secure=(--tls --tls_ca="$tls/ca.crt" --token_file="$tls/token")
mptctl "${secure[@]}" workers | grep -q "w0" || e2e_fail "mptctl with TLS and token cannot list workers"

spec=$(SOURCE_TASKS="first last" SOURCE_STEPS=5 WORLD_SIZE=1 e2e_write_spec "$E2E_DIR/source.textproto")
job=$(mptctl "${secure[@]}" submit --spec "$spec" --kind=source)
rc=0
mptctl "${secure[@]}" watch "$job" > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 0 ] || e2e_fail "the job did not succeed over TLS (watch exited $rc)"

expect_rc() {
  local want="$1" what="$2"
  shift 2
  local rc=0
  mptctl "$@" workers > /dev/null 2>"$E2E_DIR/err" || rc=$?
  [ "$rc" -eq "$want" ] || { cat "$E2E_DIR/err" >&2; e2e_fail "$what: exit $rc, want $want"; }
}
expect_rc 7 "no token" --tls --tls_ca="$tls/ca.crt" --timeout_seconds=5
expect_rc 7 "wrong token" --tls --tls_ca="$tls/ca.crt" --token_file="$tls/wrong" --timeout_seconds=5
expect_rc 5 "plain text to a TLS port" --token_file="$tls/token" --timeout_seconds=5
expect_rc 5 "unknown CA" --tls --token_file="$tls/token" --timeout_seconds=5
expect_rc 7 "the workers' token" --tls --tls_ca="$tls/ca.crt" --token_file="$tls/worker_token" \
  --timeout_seconds=5

# The workers' token does not open the job API: listing jobs is refused.
rc=0
mptctl --tls --tls_ca="$tls/ca.crt" --token_file="$tls/worker_token" --timeout_seconds=5 \
  list > /dev/null 2>"$E2E_DIR/err" || rc=$?
[ "$rc" -eq 7 ] || { cat "$E2E_DIR/err" >&2; e2e_fail "list with the workers' token: exit $rc, want 7"; }
# The users' token does.
mptctl "${secure[@]}" list | grep -q "${job#jobs/}" || e2e_fail "list with the users' token misses $job"

# Stage logs take the users' token like every other user call.
mptctl "${secure[@]}" logs "$job" > "$E2E_DIR/logs.out" || e2e_fail "logs with the users' token failed"
grep -q '^\[source/first\] ' "$E2E_DIR/logs.out" ||
  e2e_fail "logs with the users' token show no line of source/first"
for bad in wrong worker_token; do
  rc=0
  mptctl --tls --tls_ca="$tls/ca.crt" --token_file="$tls/$bad" --timeout_seconds=5 \
    logs "$job" > /dev/null 2>"$E2E_DIR/err" || rc=$?
  [ "$rc" -eq 7 ] || { cat "$E2E_DIR/err" >&2; e2e_fail "logs with the token file $bad: exit $rc, want 7"; }
done

# A worker with the wrong token, or with the users' token, is refused
# registration for good and exits with 1.
for bad in wrong token; do
  log="$E2E_DIR/logs/w_bad_$bad.log"
  rc=0
  timeout 30 "$WORKER_BIN" --coordinator="$COORD_ADDR" --work_dir="$E2E_DIR/w_bad_$bad" --tls \
    --hostname="w_bad_$bad" --tls_ca="$tls/ca.crt" --token_file="$tls/$bad" > "$log" 2>&1 || rc=$?
  [ "$rc" -eq 1 ] || e2e_fail "a worker with the token file $bad exited $rc (want 1)"
  grep -q "UNAUTHENTICATED" "$log" || e2e_fail "the worker with the token file $bad did not say why"
  if grep -q "registered as" "$log"; then e2e_fail "a worker with the token file $bad registered"; fi
done
# Only w0 ever registered.
workers=$(mptctl "${secure[@]}" workers)
echo "$workers" | grep -q "w0" || e2e_fail "w0 is not listed"
if echo "$workers" | grep -q "w_bad"; then e2e_fail "a refused worker is listed"; fi
