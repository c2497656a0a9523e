#!/usr/bin/env bash
# End to end: workers bound to their client certificates
# (--bind_workers_to_certificates). Certificates from a throw-away CA: the
# coordinator's, one per worker host (w0, w1) and one for a user. A worker
# whose certificate names its hostname registers and runs a job; a worker
# whose certificate names another host is refused and stops; and a
# generic gRPC client (grpcio) that registers as w1 with w1's certificate
# can heartbeat with its key and that certificate, but the same key from
# w0's certificate is PERMISSION_DENIED.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

command -v openssl >/dev/null || { echo "SKIPPED: no openssl to make certificates" >&2; exit 0; }
PYTHON="${E2E_PYTHON:-/usr/bin/python3}"
"$PYTHON" -c "import grpc, google.protobuf" 2>/dev/null ||
  e2e_fail "$PYTHON lacks grpc or protobuf (tools/setup.sh installs python3-grpcio python3-protobuf)"

tls="$E2E_DIR/tls"
mkdir -p "$tls"
(
  cd "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
    -subj "/CN=mpt test CA" 2>/dev/null
  cert() {  # NAME SAN
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
    printf "subjectAltName=%s\n" "$2" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
      -days 2 -extfile "$1.ext" 2>/dev/null
  }
  cert server "DNS:localhost,IP:127.0.0.1"
  cert w0 "DNS:w0"
  cert w1 "DNS:w1,DNS:w1.cluster.example"
  cert user "DNS:user"
) || e2e_fail "openssl could not make the certificates"
echo "e2e-user-token" > "$tls/token"
echo "e2e-worker-token" > "$tls/worker_token"

e2e_start_coordinator --tls_cert="$tls/server.crt" --tls_key="$tls/server.key" \
  --tls_client_ca="$tls/ca.crt" --bind_workers_to_certificates \
  --auth_token_file="$tls/token" --worker_token_file="$tls/worker_token"
worker_tls=(--tls --tls_ca="$tls/ca.crt" --token_file="$tls/worker_token")
e2e_start_worker w0 "${worker_tls[@]}" --tls_cert="$tls/w0.crt" --tls_key="$tls/w0.key"

secure=(--tls --tls_ca="$tls/ca.crt" --tls_cert="$tls/user.crt" --tls_key="$tls/user.key"
        --token_file="$tls/token")
spec=$(SOURCE_TASKS="first" SOURCE_STEPS=4 WORLD_SIZE=1 e2e_write_spec "$E2E_DIR/source.textproto")
job=$(mptctl "${secure[@]}" submit --spec "$spec" --kind=source)
rc=0
mptctl "${secure[@]}" watch "$job" > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 0 ] || e2e_fail "the job did not succeed on the bound worker (watch exited $rc)"

# A worker whose certificate names another host stops with the reason.
log="$E2E_DIR/logs/impostor.log"
rc=0
timeout 30 "$WORKER_BIN" --coordinator="$COORD_ADDR" --work_dir="$E2E_DIR/impostor" \
  --hostname=w0 "${worker_tls[@]}" --tls_cert="$tls/w1.crt" --tls_key="$tls/w1.key" \
  > "$log" 2>&1 || rc=$?
[ "$rc" -eq 1 ] || { cat "$log" >&2; e2e_fail "a worker with w1's certificate as w0 exited $rc (want 1)"; }
grep -q 'PERMISSION_DENIED.*is not a name of the client certificate' "$log" ||
  { cat "$log" >&2; e2e_fail "the refused worker did not say why"; }
if grep -q "registered as" "$log"; then e2e_fail "a worker with another host's certificate registered"; fi

# A worker key works only with the certificate it registered with.
gen="$E2E_DIR/gen"
"$PYTHON" "$E2E_RUNFILES/python/generate_proto.py" --proto_dir "$E2E_RUNFILES/proto" \
  --out "$gen" > "$E2E_DIR/logs/generate_proto.log" 2>&1 || e2e_fail "generate_proto.py failed"
PYTHONPATH="$gen" "$PYTHON" - "$COORD_ADDR" "$tls" <<'PY' || e2e_fail "the key/certificate binding check failed"
import sys
import grpc
from mpt_client._gen import service_pb2, service_pb2_grpc

address, tls = sys.argv[1], sys.argv[2]
read = lambda name: open("%s/%s" % (tls, name), "rb").read()
token = open(tls + "/worker_token").read().strip()

def stub(host):
    creds = grpc.ssl_channel_credentials(read("ca.crt"), read(host + ".key"), read(host + ".crt"))
    return service_pb2_grpc.WorkerServiceStub(grpc.secure_channel(address, creds))

auth = [("authorization", "Bearer " + token)]
as_w1, as_w0 = stub("w1"), stub("w0")
request = service_pb2.RegisterWorkerRequest()
request.worker.hostname = "W1.Cluster.Example"  # a subject alternative name of w1's, in any case
registered = as_w1.RegisterWorker(request, metadata=auth, timeout=10)
beat = service_pb2.HeartbeatRequest(worker=registered.name)
with_key = auth + [("x-mpt-worker-key", registered.worker_key)]
as_w1.Heartbeat(beat, metadata=with_key, timeout=10)
try:
    as_w0.Heartbeat(beat, metadata=with_key, timeout=10)
    sys.exit("w1's key was accepted from w0's certificate")
except grpc.RpcError as e:
    if e.code() != grpc.StatusCode.PERMISSION_DENIED or "another client certificate" not in e.details():
        sys.exit("w1's key from w0's certificate: %s %s" % (e.code(), e.details()))
    print("w1's key from w0's certificate: PERMISSION_DENIED: " + e.details())
try:
    fetch = service_pb2.FetchArtifactRequest(name="jobs/x/artifacts/y")
    list(as_w0.FetchArtifact(fetch, metadata=with_key, timeout=10))
    sys.exit("FetchArtifact took w1's key from w0's certificate")
except grpc.RpcError as e:
    if e.code() != grpc.StatusCode.UNAUTHENTICATED:
        sys.exit("FetchArtifact with w1's key from w0's certificate: %s %s" % (e.code(), e.details()))
request.worker.hostname = "w0"
try:
    as_w1.RegisterWorker(request, metadata=auth, timeout=10)
    sys.exit("w1's certificate registered as w0")
except grpc.RpcError as e:
    if e.code() != grpc.StatusCode.PERMISSION_DENIED:
        sys.exit("w1's certificate as w0: %s %s" % (e.code(), e.details()))
PY
e2e_log "PASS"
