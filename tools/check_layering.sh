#!/usr/bin/env bash
# Checks that dependencies run one way (docs/ARCHITECTURE.md, "Packages"):
#   - nothing under //server/... or //cli/... depends on //worker/... or on
#     libtorch;
#   - nothing under //common/... or //proto/... depends on libtorch, //worker,
#     //server or //cli;
#   - the job store and the coordinator's logic do not link gRPC.
# Uses `bazel query` (offline, no build). Prints one line per rule and exits
# non-zero when any rule is broken, naming the offending path.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=0
check() {  # check DESCRIPTION FROM TO
  local what="$1" from="$2" to="$3" path
  if ! path=$(bazel query --noshow_progress "somepath($from, $to)" 2>/tmp/check_layering.err); then
    echo "layering: FAILED to query ($what):" >&2
    cat /tmp/check_layering.err >&2
    failed=1
    return
  fi
  if [ -n "$path" ]; then
    echo "layering: FAILED: $what; a path:" >&2
    echo "$path" | sed 's/^/    /' >&2
    failed=1
  else
    echo "layering: ok: $what"
  fi
}

torch='@libtorch//...'
check "server/ and cli/ use neither worker/ nor libtorch" \
  "//server/... + //cli/..." "//worker/... + $torch"
check "common/ and proto/ use no libtorch and nothing above them" \
  "//common/... + //proto/..." "//worker/... + //server/... + //cli/... + $torch"
check "the job store and the coordinator's logic do not link gRPC" \
  "//server:job_store + //server:coordinator_core" "@system_libs//:grpc"
exit $failed
