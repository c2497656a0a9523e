#!/usr/bin/env bash
# Prometheus's own linter (`promtool check metrics`, Debian's prometheus
# package) accepts the registry's exposition: escaped label values and help
# text, histograms, infinities, the process metrics.
set -euo pipefail
PROMTOOL="${PROMTOOL:-/usr/bin/promtool}"
[ -x "$PROMTOOL" ] || { echo "FAIL: $PROMTOOL not found (tools/setup.sh installs prometheus)" >&2; exit 1; }
sample="${TEST_SRCDIR}/${TEST_WORKSPACE}/tests/common/metrics_exposition_sample"
out="${TEST_TMPDIR:-/tmp}/sample.metrics"
"$sample" > "$out"
cat "$out"
if ! "$PROMTOOL" check metrics < "$out"; then
  echo "FAIL: promtool check metrics rejects the exposition above" >&2
  exit 1
fi
# promtool lints; it must also have parsed every sample: the escaped label
# value reads back whole.
grep -q 'sample_requests_total{path="/a \\"quoted\\" path\\\\with\\nnewline",code="200"} 3' "$out" ||
  { echo "FAIL: the escaped sample is missing" >&2; exit 1; }
echo "PASS"
