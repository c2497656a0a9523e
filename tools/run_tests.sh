#!/usr/bin/env bash
# Runs every test of the project: installs the system packages first (a no-op
# when they are there), then `bazel test //...` offline. Tests tagged "gpu"
# are left out (see .bazelrc); extra arguments go to bazel test. Then every
# fuzz target runs for MPT_FUZZ_SECONDS (default 15) seconds from its seed
# corpus (tools/fuzz/run_fuzzers.sh); a finding fails the run. Set
# MPT_FUZZ_SECONDS=0 to skip fuzzing.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh || exit 1

# Dependencies run one way (bazel query; no build).
layering=0
tools/check_layering.sh || layering=1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
bazel test //... "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# Short fuzzing runs: one more "test" that fails on any crash, hang or leak.
fuzz=0
fuzz_seconds=${MPT_FUZZ_SECONDS:-15}
if [ "$fuzz_seconds" -gt 0 ]; then
  tools/fuzz/run_fuzzers.sh "$fuzz_seconds" || fuzz=1
  if [ "$fuzz" -ne 0 ]; then
    echo "FUZZING FAILED: a fuzz target found a crash, hang or leak (see the fuzz: lines above)"
  fi
fi

# One closing line that any CI reader understands.
passed=$(grep -cE '^//.* +(PASSED|\(cached\) PASSED)' "$log")
failed=$(grep -cE '^//.* +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD|INCOMPLETE)' "$log")
# The layering check counts as one more test.
if [ "$layering" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
if [ "$fuzz_seconds" -gt 0 ]; then
  if [ "$fuzz" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi
echo "tests: ${passed} passed, ${failed} failed"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "bazel test exited with status $rc (build failure?)" >&2
fi
if { [ "$layering" -ne 0 ] || [ "$fuzz" -ne 0 ]; } && [ "$rc" -eq 0 ]; then rc=1; fi
exit "$rc"
