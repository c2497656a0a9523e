#!/usr/bin/env bash
# Bad input files through the real binaries (mpt_train, t5_dump, mptctl,
# coordinator): numbers beyond a double, a corrupt checkpoint, unusable
# paths (a symbolic-link loop, a 300-byte name), FIFOs where files belong,
# JSON nested 100k deep, out-of-range and non-float adapter values, NUL bytes
# in a safetensors header, and a bad line in the target data (mpt_train's
# preflight). Each must end with a non-zero status below 128 (no signal),
# within a timeout (no hang), with a message naming the file and the problem.
set -uo pipefail

R="${TEST_SRCDIR:-$PWD}/${TEST_WORKSPACE:-mpt}"
MPT_TRAIN="$R/worker/mpt_train"
T5_DUMP="$R/worker/t5_dump"
MPTCTL="$R/cli/mptctl"
COORDINATOR="$R/server/coordinator"
MODEL="$R/tests/testdata/t5_relu"
TASKS="$R/tests/testdata/tiny_tasks"
ADAPTER="$R/tests/testdata/mpt/adapter_peft_prompt"
D=$(mktemp -d "${TEST_TMPDIR:-/tmp}/bad_files.XXXXXX")
trap 'rm -rf "$D"' EXIT

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# expect_error NAME SECONDS "substring1|substring2..." -- command...
# Every substring (separated by '|') must appear in the output.
expect_error() {
  local name=$1 seconds=$2 wants=$3
  shift 4
  local log="$D/$name.log" start end rc
  start=$(date +%s)
  timeout -s KILL "$seconds" "$@" >"$log" 2>&1 </dev/null
  rc=$?
  end=$(date +%s)
  if [ "$rc" -eq 137 ]; then
    fail "$name: still running after ${seconds}s (killed)"; sed 's/^/  /' "$log" | tail -5 >&2; return
  fi
  if [ "$rc" -eq 0 ]; then fail "$name: exit 0, an error was expected"; tail -5 "$log" >&2; return; fi
  if [ "$rc" -ge 128 ]; then fail "$name: died of signal $((rc - 128))"; tail -20 "$log" >&2; return; fi
  local IFS='|' w
  for w in $wants; do
    if ! grep -qF -- "$w" "$log"; then
      fail "$name: exit $rc but the output lacks \"$w\":"; sed 's/^/  /' "$log" | tail -5 >&2; return
    fi
  done
  echo "ok: $name (exit $rc, $((end - start))s): $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-220)"
}

# A valid spec over the tiny tasks; $1 is the folder, the rest overrides.
write_spec() {  # dir train_source train_target
  local dir=$1 src=$2 tgt=$3
  mkdir -p "$dir"
  cat >"$dir/spec.textproto" <<SPEC
base_model: "$MODEL"
prompt { num_virtual_tokens: 2 }
source {
  tasks { name: "echo" train_path: "$src" }
  train { steps: 2 batch_size: 2 checkpoint_every: 1 max_input_length: 16 max_target_length: 8 }
}
distillation { train { steps: 2 batch_size: 2 max_input_length: 16 max_target_length: 8 } }
target {
  tasks { name: "first" train_path: "$tgt" }
  train { steps: 2 batch_size: 2 max_input_length: 16 max_target_length: 8 }
}
SPEC
}

# Builds a safetensors file: $1 path, $2 header bytes (as a Python literal
# expression), $3 data bytes (Python expression).
make_safetensors() {
  python3 - "$1" "$2" "$3" <<'PY'
import struct, sys
header = eval(sys.argv[2]); data = eval(sys.argv[3])
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + data)
PY
}

# A copy of the model folder with one file replaced: $1 name of the copy.
model_copy() {
  mkdir -p "$D/$1"
  cp "$MODEL"/* "$D/$1/"
  echo "$D/$1"
}
adapter_copy() {
  mkdir -p "$D/$1"
  cp "$ADAPTER"/* "$D/$1/"
  echo "$D/$1"
}

# mptctl checks the connection before it reads the spec: give it a real
# coordinator on loopback (port chosen by the kernel, read from its log).
"$COORDINATOR" --listen=127.0.0.1:0 --db="$D/coord/jobs.db" --artifacts="$D/coord/art" \
  >"$D/coordinator.log" 2>&1 &
COORD_PID=$!
trap 'kill "$COORD_PID" 2>/dev/null; wait "$COORD_PID" 2>/dev/null; rm -rf "$D"' EXIT
COORD=""
for _ in $(seq 300); do
  port=$(grep -o 'listening on .*(port [0-9]*' "$D/coordinator.log" | grep -o '[0-9]*$' | tail -1)
  if [ -n "$port" ]; then COORD="127.0.0.1:$port"; break; fi
  kill -0 "$COORD_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$COORD" ]; then
  echo "FAIL: the coordinator did not start" >&2; cat "$D/coordinator.log" >&2; exit 1
fi

# ---- 1. A number beyond a double -------------------------------------------
cp "$TASKS/echo.train.jsonl" "$D/huge.jsonl"
echo '{"input": "x", "target": "y", "weight": 1e999}' >>"$D/huge.jsonl"
write_spec "$D/huge_data" "$D/huge.jsonl" "$TASKS/first.train.jsonl"
expect_error jsonl_number_beyond_double 60 "huge.jsonl:25:|1e999" -- \
  "$MPT_TRAIN" --spec="$D/huge_data/spec.textproto" --out="$D/huge_data/out" --progress=none

cat >"$D/huge_spec.json" <<SPEC
{"base_model": "$MODEL", "source": {"tasks": [{"name": "echo", "train_path": "$TASKS/echo.train.jsonl"}],
 "train": {"steps": 2, "optimizer": {"learning_rate": 1e999}}}}
SPEC
expect_error spec_json_number_beyond_double 30 "huge_spec.json" -- \
  "$MPT_TRAIN" --spec="$D/huge_spec.json" --out="$D/huge_spec_out" --progress=none
expect_error mptctl_spec_json_number_beyond_double 30 "huge_spec.json" -- \
  "$MPTCTL" --coordinator="$COORD" submit --spec="$D/huge_spec.json"

# ---- 2. Paths that cannot be opened ----------------------------------------
ln -s "$D/loop_b" "$D/loop_a"
ln -s "$D/loop_a" "$D/loop_b"
long_name=$(printf 'x%.0s' $(seq 300))
expect_error spec_symlink_loop 30 "loop_a" -- \
  "$MPT_TRAIN" --spec="$D/loop_a" --out="$D/o1" --progress=none
expect_error spec_long_name 30 "$long_name" -- \
  "$MPT_TRAIN" --spec="$D/$long_name" --out="$D/o2" --progress=none
expect_error mptctl_spec_symlink_loop 30 "loop_a" -- \
  "$MPTCTL" --coordinator="$COORD" submit --spec="$D/loop_a"
expect_error mptctl_spec_long_name 30 "$long_name" -- \
  "$MPTCTL" --coordinator="$COORD" submit --spec="$D/$long_name.json"
expect_error model_symlink_loop 30 "loop_a" -- \
  "$T5_DUMP" --model="$D/loop_a" --out="$D/dump.safetensors" --text=hello
expect_error model_long_name 30 "$long_name" -- \
  "$T5_DUMP" --model="$D/$long_name" --out="$D/dump.safetensors" --text=hello
write_spec "$D/loop_data" "$D/loop_a" "$TASKS/first.train.jsonl"
expect_error data_symlink_loop 60 "loop_a" -- \
  "$MPT_TRAIN" --spec="$D/loop_data/spec.textproto" --out="$D/loop_data/out" --progress=none
write_spec "$D/long_data" "$D/$long_name.jsonl" "$TASKS/first.train.jsonl"
expect_error data_long_name 60 "$long_name" -- \
  "$MPT_TRAIN" --spec="$D/long_data/spec.textproto" --out="$D/long_data/out" --progress=none
expect_error coordinator_token_symlink_loop 30 "loop_a" -- \
  "$COORDINATOR" --listen=127.0.0.1:0 --db="$D/c1/jobs.db" --artifacts="$D/c1/art" \
  --auth_token_file="$D/loop_a"

# ---- 3. FIFOs where files belong (nothing may block) ------------------------
m=$(model_copy fifo_model); rm "$m/config.json"; mkfifo "$m/config.json"
expect_error config_fifo 20 "config.json|not a regular file" -- \
  "$T5_DUMP" --model="$m" --out="$D/dump.safetensors" --text=hello
a=$(adapter_copy fifo_adapter); rm "$a/adapter_config.json"; mkfifo "$a/adapter_config.json"
expect_error adapter_config_fifo 20 "adapter_config.json|not a regular file" -- \
  "$T5_DUMP" --model="$MODEL" --adapter="$a" --out="$D/dump.safetensors" --text=hello
a=$(adapter_copy fifo_weights); rm "$a/adapter_model.safetensors"; mkfifo "$a/adapter_model.safetensors"
expect_error adapter_weights_fifo 20 "adapter_model.safetensors|not a regular file" -- \
  "$T5_DUMP" --model="$MODEL" --adapter="$a" --out="$D/dump.safetensors" --text=hello
mkfifo "$D/spec_fifo.textproto"
expect_error spec_fifo 20 "spec_fifo.textproto|not a regular file" -- \
  "$MPT_TRAIN" --spec="$D/spec_fifo.textproto" --out="$D/o3" --progress=none
expect_error mptctl_spec_fifo 20 "spec_fifo.textproto|not a regular file" -- \
  "$MPTCTL" --coordinator="$COORD" submit --spec="$D/spec_fifo.textproto"
# A bad precision in a spec, run as one stage or the whole pipeline, or
# submitted: each names the file (locally) and the field.
mkdir -p "$D/bad_autocast"
echo '{"input": "a", "target": "a"}' > "$D/bad_autocast/train.jsonl"
{ echo 'autocast: "fp16"'; echo "base_model: \"$MODEL\""
  echo "source { tasks { name: \"echo\" train_path: \"$D/bad_autocast/train.jsonl\" } train { steps: 2 } }"; } \
  > "$D/bad_autocast/spec.textproto"
for stage in source all; do
  expect_error "bad_autocast_$stage" 20 \
    "bad_autocast/spec.textproto: |autocast: \"fp16\" is not a precision" -- \
    "$MPT_TRAIN" --spec="$D/bad_autocast/spec.textproto" --stage="$stage" --out="$D/o4" \
    --progress=none
done
expect_error mptctl_bad_autocast 20 "autocast: \"fp16\" is not a precision" -- \
  "$MPTCTL" --coordinator="$COORD" submit --spec="$D/bad_autocast/spec.textproto" --kind=source
mkfifo "$D/token_fifo"
expect_error coordinator_token_fifo 20 "token_fifo|not a regular file" -- \
  "$COORDINATOR" --listen=127.0.0.1:0 --db="$D/c2/jobs.db" --artifacts="$D/c2/art" \
  --auth_token_file="$D/token_fifo"

# ---- 4. JSON nested 100k levels deep ----------------------------------------
m=$(model_copy deep_model)
make_safetensors "$m/model.safetensors" "b'{\"a\":' + b'[' * 100000 + b']' * 100000 + b'}'" "b''"
expect_error safetensors_header_deep 30 "model.safetensors|nested deeper" -- \
  "$T5_DUMP" --model="$m" --out="$D/dump.safetensors" --text=hello
a=$(adapter_copy deep_adapter)
python3 -c "import sys; sys.stdout.write('{\"x\":' + '['*100000 + ']'*100000 + '}')" >"$a/adapter_config.json"
expect_error adapter_config_deep 30 "adapter_config.json|nested deeper" -- \
  "$T5_DUMP" --model="$MODEL" --adapter="$a" --out="$D/dump.safetensors" --text=hello

# ---- 5. Adapter values ------------------------------------------------------
a=$(adapter_copy wrapped_adapter)
python3 - "$a/adapter_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_virtual_tokens"] = 4294967300
json.dump(c, open(sys.argv[1], "w"))
PY
expect_error adapter_tokens_beyond_int 30 "adapter_config.json|num_virtual_tokens|out of range" -- \
  "$T5_DUMP" --model="$MODEL" --adapter="$a" --out="$D/dump.safetensors" --text=hello
tokens=$(python3 -c "import json; c=json.load(open('$ADAPTER/adapter_config.json')); print(c['num_virtual_tokens'] * c.get('num_transformer_submodules', 1), c.get('token_dim') or 32)")
read -r T DIM <<<"$tokens"
a=$(adapter_copy bool_adapter)
make_safetensors "$a/adapter_model.safetensors" \
  "b'{\"prompt_embeddings\":{\"dtype\":\"BOOL\",\"shape\":[$T,$DIM],\"data_offsets\":[0,$((T * DIM))]}}'" \
  "b'\\x01' * $((T * DIM))"
expect_error adapter_bool_prompt 30 "adapter_model.safetensors|floating point" -- \
  "$T5_DUMP" --model="$MODEL" --adapter="$a" --out="$D/dump.safetensors" --text=hello
a=$(adapter_copy nan_adapter)
make_safetensors "$a/adapter_model.safetensors" \
  "b'{\"prompt_embeddings\":{\"dtype\":\"F32\",\"shape\":[$T,$DIM],\"data_offsets\":[0,$((T * DIM * 4))]}}'" \
  "struct.pack('<f', float('nan')) * $((T * DIM))"
expect_error adapter_nan_prompt 30 "adapter_model.safetensors|NaN" -- \
  "$T5_DUMP" --model="$MODEL" --adapter="$a" --out="$D/dump.safetensors" --text=hello

# ---- 6. A NUL byte inside a safetensors header ------------------------------
m=$(model_copy nul_model)
make_safetensors "$m/model.safetensors" "b'{\"__metadata__\":{\"a\":\"b\"}}\\x00 garbage  '" "b''"
expect_error safetensors_header_nul 30 "model.safetensors|NUL" -- \
  "$T5_DUMP" --model="$m" --out="$D/dump.safetensors" --text=hello

# ---- 7. Preflight: a bad line in the target data fails before training ------
cp "$TASKS/first.train.jsonl" "$D/bad_target.jsonl"
echo '{"input": "x", "target": ' >>"$D/bad_target.jsonl"
write_spec "$D/preflight" "$TASKS/echo.train.jsonl" "$D/bad_target.jsonl"
start=$(date +%s)
expect_error preflight_bad_target_line 30 "target.tasks[0].train_path|bad_target.jsonl:" -- \
  "$MPT_TRAIN" --spec="$D/preflight/spec.textproto" --out="$D/preflight/out" --progress=plain
if [ $(( $(date +%s) - start )) -gt 10 ]; then fail "preflight: took more than 10 s"; fi
if [ -e "$D/preflight/out/source" ] || [ -e "$D/preflight/out/.work/source" ]; then
  fail "preflight: source training started before the bad target line was reported"
fi
# An output folder that cannot be written.
write_spec "$D/preflight_out" "$TASKS/echo.train.jsonl" "$TASKS/first.train.jsonl"
echo "a file" >"$D/preflight_out/not_a_folder"
expect_error preflight_out_not_writable 30 "not_a_folder" -- \
  "$MPT_TRAIN" --spec="$D/preflight_out/spec.textproto" --out="$D/preflight_out/not_a_folder/out" \
  --progress=none

# ---- 8. A corrupt checkpoint: an error naming the field, never a crash ------
write_spec "$D/ckpt" "$TASKS/echo.train.jsonl" "$TASKS/first.train.jsonl"
if ! timeout -s KILL 300 "$MPT_TRAIN" --spec="$D/ckpt/spec.textproto" --stage=source \
    --out="$D/ckpt/out" --progress=none >"$D/ckpt.log" 2>&1; then
  fail "checkpoint: the first run failed"; tail -20 "$D/ckpt.log" >&2
fi
state=$(find "$D/ckpt/out/.work" -name state.json | head -1)
if [ -z "$state" ]; then
  fail "checkpoint: the run left no state.json under .work"
else
  cp "$state" "$D/state.good"
  python3 - "$state" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); s["step"] = -1
json.dump(s, open(sys.argv[1], "w"))
PY
  expect_error checkpoint_negative_step 120 "state.json|step|outside" -- \
    "$MPT_TRAIN" --spec="$D/ckpt/spec.textproto" --stage=source --out="$D/ckpt/out" --progress=none
  cp "$D/state.good" "$state"
  python3 - "$state" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); s["best_step"] = "seven"
json.dump(s, open(sys.argv[1], "w"))
PY
  expect_error checkpoint_wrong_type 120 "state.json|best_step|not an integer" -- \
    "$MPT_TRAIN" --spec="$D/ckpt/spec.textproto" --stage=source --out="$D/ckpt/out" --progress=none
fi

if [ "$failures" -ne 0 ]; then
  echo "$failures case(s) failed" >&2
  exit 1
fi
echo "all bad-file cases passed"
