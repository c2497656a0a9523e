#!/usr/bin/env bash
# What mpt_train does with what is already in --out and --work_dir:
# - an input (data, the spec) inside a folder the run replaces is refused
#   before anything is written, and stays as it was;
# - a rerun with the same spec, model and data reuses the finished adapters;
#   one whose steps, data file contents or model changed trains them again;
# - an adapter with no record of its settings is refused, not replaced;
# - a checkpoint resumes only on the model it was written with.
set -uo pipefail

R="${TEST_SRCDIR:-$PWD}/${TEST_WORKSPACE:-mpt}"
MPT_TRAIN="$R/worker/mpt_train"
T5="$R/tests/testdata/t5_relu"
TASKS="$R/tests/testdata/tiny_tasks"
D=$(mktemp -d "${TEST_TMPDIR:-/tmp}/outputs.XXXXXX")
trap 'rm -rf "$D"' EXIT

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# train NAME SPEC OUT [flags...]: runs mpt_train; sets $rc and $log.
train() {
  local name=$1 spec=$2 out=$3
  shift 3
  log="$D/$name.log"
  timeout -s KILL 120 "$MPT_TRAIN" --spec="$spec" --out="$out" --threads=1 --progress=plain \
    "$@" >"$log" 2>&1 </dev/null
  rc=$?
}
expect_rc() {  # NAME WANT
  if [ "$rc" -ne "$2" ]; then fail "$1: exit $rc, expected $2"; tail -5 "$log" >&2; return 1; fi
}
has() {  # NAME TEXT
  grep -qF -- "$2" "$log" || { fail "$1: the output lacks \"$2\""; tail -8 "$log" >&2; }
}
lacks() {  # NAME TEXT
  if grep -qF -- "$2" "$log"; then fail "$1: the output has \"$2\""; fi
}
sum_of() { sha256sum "$1" | cut -d' ' -f1; }

# spec FILE MODEL SOURCE_STEPS [ECHO_TRAIN]
spec() {
  cat >"$1" <<SPEC
base_model: "$2"
prompt { num_virtual_tokens: 2 }
source {
  tasks { name: "echo" train_path: "${4:-$TASKS/echo.train.jsonl}" }
  tasks { name: "first" train_path: "$TASKS/first.train.jsonl" }
  train { steps: $3 batch_size: 2 max_input_length: 16 max_target_length: 8 checkpoint_every: 1 }
}
distillation { train { steps: 2 batch_size: 2 } }
SPEC
}

# --- An input inside a folder the run replaces.
mkdir -p "$D/proj/source/echo"
cp "$TASKS/echo.train.jsonl" "$D/proj/source/echo/train.jsonl"
spec "$D/proj/spec.textproto" "$T5" 2 "$D/proj/source/echo/train.jsonl"
before=$(sum_of "$D/proj/source/echo/train.jsonl")
train data_in_out "$D/proj/spec.textproto" "$D/proj"
expect_rc data_in_out 2 && has data_in_out "--out: $D/proj/source is replaced by this run's output, but it holds"
has data_in_out "(source.tasks[0].train_path)"
[ "$(sum_of "$D/proj/source/echo/train.jsonl")" = "$before" ] || fail "data_in_out: the data changed"
train data_in_work "$D/proj/spec.textproto" "$D/elsewhere" --work_dir="$D/proj"
expect_rc data_in_work 2 && has data_in_work "--work_dir: $D/proj/source is replaced"
# The spec itself in --out (not in a replaced folder) is fine.
mkdir -p "$D/proj2"
spec "$D/proj2/spec.textproto" "$T5" 2
train spec_in_out "$D/proj2/spec.textproto" "$D/proj2" --stage=source
expect_rc spec_in_out 0

# --- Reruns into the same --out.
spec "$D/a.textproto" "$T5" 2
train first_run "$D/a.textproto" "$D/out"
expect_rc first_run 0
echo_sum=$(sum_of "$D/out/source/echo/adapter_model.safetensors")
distill_sum=$(sum_of "$D/out/distillation/adapter_model.safetensors")
train same_again "$D/a.textproto" "$D/out"
expect_rc same_again 0 && has same_again "source task echo: adapter already in"
has same_again "distillation: adapter already in"
lacks same_again "training it again"
# Other steps: every stage trains again.
spec "$D/b.textproto" "$T5" 3
train other_steps "$D/b.textproto" "$D/out"
expect_rc other_steps 0 && has other_steps "source task echo: the adapter in"
has other_steps "distillation: the adapter in"
[ "$(sum_of "$D/out/distillation/adapter_model.safetensors")" != "$distill_sum" ] ||
  fail "other_steps: the distillation adapter was not trained again"
# The same data path with other contents: echo and the distillation train
# again, first is reused.
cp "$TASKS/echo.train.jsonl" "$D/echo.jsonl"
spec "$D/c.textproto" "$T5" 3 "$D/echo.jsonl"
train data_path "$D/c.textproto" "$D/out"
expect_rc data_path 0
head -n 3 "$TASKS/echo.train.jsonl" >"$D/echo.jsonl"
train data_contents "$D/c.textproto" "$D/out"
expect_rc data_contents 0 && has data_contents "source task echo: the adapter in"
has data_contents "source task first: adapter already in"
has data_contents "distillation: the adapter in"
# An adapter the work folder has no record of is neither reused nor replaced.
mkdir -p "$D/theirs/source"
cp -rL "$D/out/source/echo" "$D/theirs/source/echo"
theirs=$(sum_of "$D/theirs/source/echo/adapter_model.safetensors")
train no_record "$D/a.textproto" "$D/theirs"
expect_rc no_record 1 && has no_record "source task echo: $D/theirs/source/echo already holds an adapter"
[ "$(sum_of "$D/theirs/source/echo/adapter_model.safetensors")" = "$theirs" ] ||
  fail "no_record: the adapter was replaced"

# A run stopped (kill -9) while a later source task trains keeps the
# earlier task's adapter reusable: its record is written with it.
spec "$D/long.textproto" "$T5" 1000
"$MPT_TRAIN" --spec="$D/long.textproto" --out="$D/killed" --threads=1 --progress=none \
  >"$D/killed_run.log" 2>&1 &
pid=$!
for _ in $(seq 1200); do
  [ -e "$D/killed/.work/source/echo.finished" ] && break
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ ! -e "$D/killed/.work/source/echo.finished" ]; then
  fail "killed_run: the first task's record never appeared"; tail -5 "$D/killed_run.log" >&2
elif [ -e "$D/killed/.work/source/first.finished" ]; then
  # 1000 steps of the second task take seconds: its record this early means
  # the first one's was written only when every task had ended.
  fail "killed_run: the first task's record appeared only after the second task ended"
fi
train after_kill "$D/long.textproto" "$D/killed"
expect_rc after_kill 0 && has after_kill "source task echo: adapter already in"

# --- A checkpoint resumes only on its own model: a copy of the model with
# other weights of the same shapes starts over.
cp -rL "$T5" "$D/other_model"
python3 - "$D/other_model/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
for name, t in header.items():
    if name == "__metadata__" or t["dtype"] != "F32":
        continue
    begin, end = t["data_offsets"]
    for i in range(8 + n + begin, 8 + n + end, 4):
        v = struct.unpack_from("<f", data, i)[0]
        struct.pack_into("<f", data, i, v * 0.5)
open(path, "wb").write(data)
PY
spec "$D/m.textproto" "$T5" 4
spec "$D/other.textproto" "$D/other_model" 4
# A finished source stage keeps its last checkpoint: the same stage again
# resumes it on the same model and starts over on the other one.
train model_a "$D/m.textproto" "$D/mout" --stage=source
expect_rc model_a 0
train model_a_again "$D/m.textproto" "$D/mout" --stage=source
expect_rc model_a_again 0 && has model_a_again "source echo: resuming at step 4"
train model_b "$D/other.textproto" "$D/mout" --stage=source
expect_rc model_b 0 && has model_b "the checkpoint was written by a run with other settings; starting over"
lacks model_b "resuming at step"

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all passed"
