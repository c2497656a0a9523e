#!/usr/bin/env bash
# End to end: the Python client (python/mpt_client), installed with pip from
# the repository, against a real coordinator and two workers: submit from a
# dict and from a file, watch to SUCCEEDED (and resume), list, get, cancel,
# download with the hash checked, errors mapped from gRPC codes.
source "${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/e2e/e2e_lib.sh"

# Debian's interpreter: python3-grpcio and python3-protobuf install there.
PYTHON="${E2E_PYTHON:-/usr/bin/python3}"
"$PYTHON" -c "import grpc, google.protobuf" 2>/dev/null ||
  e2e_fail "$PYTHON lacks grpc or protobuf (tools/setup.sh installs python3-grpcio python3-protobuf)"

# pip install from a copy of the repository's python/ and proto/ (no
# network, no build isolation), into a private folder.
src="$E2E_DIR/src"
mkdir -p "$src/proto/mpt/v1"
cp -rL "$E2E_RUNFILES/python" "$src/python"
chmod -R u+w "$src"
rm -rf "$src/python/mpt_client/_gen"
cp -L "$E2E_RUNFILES"/proto/mpt/v1/*.proto "$src/proto/mpt/v1/"
site="$E2E_DIR/site"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$PYTHON" -m pip install --quiet --no-build-isolation \
  --no-deps --no-index --no-cache-dir --target "$site" "$src/python" \
  > "$E2E_DIR/logs/pip.log" 2>&1 || { cat "$E2E_DIR/logs/pip.log" >&2; e2e_fail "pip install failed"; }
[ -f "$site/mpt_client/_gen/service_pb2_grpc.py" ] || e2e_fail "pip install made no gRPC stubs"

e2e_start_coordinator
e2e_start_worker w0
e2e_start_worker w1

work="$E2E_DIR/python"
mkdir -p "$work"
(cd "$work" && PYTHONPATH="$site" timeout 280 "$PYTHON" \
  "$E2E_RUNFILES/tests/e2e/python_client_check.py" "$COORD_ADDR" "$E2E_MODEL" "$E2E_TASKS" "$work") ||
  e2e_fail "python_client_check.py failed"

# The adapters it downloaded load and fit the model.
mapfile -t adapters < "$work/downloaded.txt"
[ "${#adapters[@]}" -eq 4 ] || e2e_fail "expected 4 downloaded adapters, got ${#adapters[@]}"
"$ADAPTER_CHECK_BIN" --model="$E2E_MODEL" "${adapters[@]}" > "$E2E_DIR/logs/adapters.log" ||
  e2e_fail "adapter_check rejected a downloaded adapter"
cat "$E2E_DIR/logs/adapters.log" >&2
