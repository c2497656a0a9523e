#!/usr/bin/env bash
# Runs convert_hf_test.py with the system python3.
set -euo pipefail
dir="${TEST_SRCDIR:-.}/${TEST_WORKSPACE:-mpt}/tools/glue"
[ -f "$dir/convert_hf_test.py" ] || dir="$(dirname "$0")"
exec python3 "$dir/convert_hf_test.py" -v
