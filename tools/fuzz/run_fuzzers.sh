#!/usr/bin/env bash
# Builds (tools/fuzz/build_fuzzers.sh) and runs every fuzz target for N
# seconds each, starting from its seed corpus in tools/fuzz/corpus/<name>/
# (left untouched: new inputs go to a scratch copy). Prints one line per
# target with its executions, and exits non-zero when any target found a
# crash, a leak, a timeout or an out-of-memory; the input that caused it is
# kept under out/fuzz/findings/<target>/ and its command line printed.
#
#   tools/fuzz/run_fuzzers.sh [SECONDS_EACH] [TARGET...]   (default 300 s, all)
set -uo pipefail
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-300}
shift || true
ALL=(safetensors jsonl spec_text spec_json adapter_config checkpoint_state t5_config t5_tokenizer
     hf_tokenizer llama_config artifact proto_wire)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")

BIN=$(tools/fuzz/build_fuzzers.sh | tail -1) || { echo "fuzz: FAILED to build the fuzz targets"; exit 1; }
WORK=out/fuzz/work
FINDINGS=out/fuzz/findings
mkdir -p "$WORK" "$FINDINGS"

failed=0
total=0
for t in "${TARGETS[@]}"; do
  seeds=tools/fuzz/corpus/$t
  scratch=$WORK/$t
  mkdir -p "$scratch" "$FINDINGS/$t"
  log=$WORK/$t.log
  # -rss_limit_mb and -timeout turn runaway memory and hangs into findings.
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$BIN/${t}_fuzzer" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$FINDINGS/$t/" \
    "$scratch" "$seeds" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  execs=${execs:-0}
  total=$((total + execs))
  if [ "$rc" -eq 0 ]; then
    echo "fuzz: $t: ${execs} executions in ${SECONDS_EACH}s, no findings"
  else
    failed=$((failed + 1))
    artifact=$(grep -o "Test unit written to [^ ]*" "$log" | tail -1 | sed 's/Test unit written to //')
    echo "fuzz: $t: FINDING after ${execs} executions (exit $rc): $(grep -m1 -E 'ERROR: |runtime error|==ERROR|deadly signal|timeout|out-of-memory' "$log")"
    echo "fuzz: $t: input ${artifact:-?}; reproduce: $BIN/${t}_fuzzer ${artifact:-<input>}; log: $log"
    grep -m20 -E '^ *#[0-9]+ ' "$log" | sed "s/^/fuzz: $t:   /"
  fi
done
echo "fuzz: ${#TARGETS[@]} targets, ${total} executions, ${failed} with findings"
[ "$failed" -eq 0 ]
