#!/usr/bin/env bash
# rank_bench on the tiny decoder-only llama and a tiny T5 (with and without
# a multitask prompt's decoder prefix): it times a pass of RankScores and
# prints it, and refuses bad flags naming them.
set -euo pipefail
root="${TEST_SRCDIR}/${TEST_WORKSPACE}"
bench="$root/tools/bench/rank_bench"
fail() { echo "FAIL: $*" >&2; exit 1; }

run() {  # model folder [more flags]
  "$bench" --model="$1" --examples=5 --batch_size=2 --candidates=3 --candidate_length=2 \
    --input_length=6 --num_virtual_tokens=4 --threads=1 --reps=1 "${@:2}"
}
for args in "$root/tests/testdata/causal_lm/model" "$root/tests/testdata/t5_relu" \
            "$root/tests/testdata/t5_relu --multitask --num_transformer_submodules=2"; do
  # shellcheck disable=SC2086
  out=$(run $args) || fail "rank_bench $args"
  echo "$out"
  grep -q "5 examples x 3 candidates of 2 tokens" <<<"$out" || fail "no summary line: $out"
  grep -Eq "pass best [0-9.]+ ms" <<<"$out" || fail "no timing: $out"
done

if err=$(run "$root/tests/testdata/causal_lm/model" --candidates=0 2>&1); then
  fail "--candidates=0 accepted"
fi
grep -q -- "--candidates" <<<"$err" || fail "the error does not name --candidates: $err"
if err=$(run "$root/tests/testdata/causal_lm/model" --num_transformer_submodules=2 2>&1); then
  fail "two submodules accepted for a decoder-only model"
fi
grep -q "num_transformer_submodules" <<<"$err" || fail "the error does not name the field: $err"
echo PASS
