#!/usr/bin/env bash
set -euo pipefail
root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
exec python3 "$root/tools/demo/demo_data_test.py" "$root"
