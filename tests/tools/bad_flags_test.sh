#!/usr/bin/env bash
# Bad flags and specs through the worker-side binaries (mpt_train, t5_dump,
# llama_dump, worker), by class: a diverging run, absurd float
# settings, unbounded thread counts and lengths, an output that is one of the
# inputs, devices and dtypes this build cannot use, malformed --ids, and
# worker start-up flags. Each must end within a timeout with a non-zero
# status below 128 and one clear message naming the flag or field; nothing
# that was an input may change.
set -uo pipefail

R="${TEST_SRCDIR:-$PWD}/${TEST_WORKSPACE:-mpt}"
MPT_TRAIN="$R/worker/mpt_train"
T5_DUMP="$R/worker/t5_dump"
LLAMA_DUMP="$R/worker/llama_dump"
WORKER="$R/worker/worker"
T5="$R/tests/testdata/t5_relu"
LLAMA="$R/tests/testdata/causal_lm/model"
TASKS="$R/tests/testdata/tiny_tasks"
D=$(mktemp -d "${TEST_TMPDIR:-/tmp}/bad_flags.XXXXXX")
trap 'rm -rf "$D"' EXIT

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# run NAME SECONDS -- command...: sets $rc and $log.
run() {
  local name=$1 seconds=$2
  shift 3
  log="$D/$name.log"
  timeout -s KILL "$seconds" "$@" >"$log" 2>&1 </dev/null
  rc=$?
}

# expect_error NAME SECONDS "substring1|substring2..." -- command...
expect_error() {
  local name=$1 seconds=$2 wants=$3
  shift 3
  run "$name" "$seconds" "$@"
  if [ "$rc" -eq 137 ]; then fail "$name: still running after ${seconds}s (killed)"; return; fi
  if [ "$rc" -eq 0 ]; then fail "$name: exit 0, an error was expected"; tail -5 "$log" >&2; return; fi
  if [ "$rc" -ge 128 ]; then fail "$name: died of signal $((rc - 128))"; tail -20 "$log" >&2; return; fi
  if grep -q "Exception raised from\|frame #" "$log"; then
    fail "$name: a libtorch backtrace in the output"; tail -20 "$log" >&2; return
  fi
  local IFS='|' w
  for w in $wants; do
    if ! grep -qF -- "$w" "$log"; then
      fail "$name: exit $rc but the output lacks \"$w\":"; sed 's/^/  /' "$log" | tail -5 >&2; return
    fi
  done
  echo "ok: $name (exit $rc): $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-220)"
}

expect_ok() {  # NAME SECONDS -- command...
  local name=$1
  run "$@"
  if [ "$rc" -ne 0 ]; then fail "$name: exit $rc"; tail -5 "$log" >&2; else echo "ok: $name"; fi
}

# spec FILE [source train settings] [distillation settings]; $STEPS: the
# source stage's steps (default 2).
spec() {
  cat >"$1" <<SPEC
base_model: "$T5"
prompt { num_virtual_tokens: 2 }
source {
  tasks { name: "echo" train_path: "$TASKS/echo.train.jsonl" }
  train { steps: ${STEPS:-2} batch_size: 2 max_input_length: 16 max_target_length: 8 ${2:-} }
}
distillation { train { steps: 2 batch_size: 2 } ${3:-} }
SPEC
}

# --- F4/F5: absurd optimiser and distillation settings, and divergence.
spec "$D/wd.textproto" "optimizer { weight_decay: 1e300 }"
expect_error spec_weight_decay 60 "optimizer.weight_decay: must be in [0, 1000], got 1e+300" -- \
  "$MPT_TRAIN" --spec="$D/wd.textproto" --out="$D/runs/wd" --stage=source --threads=1
spec "$D/lr.textproto" "optimizer { learning_rate: 1e39 }"
expect_error spec_learning_rate 60 "optimizer.learning_rate: must be in (0, 1000], got 1e+39" -- \
  "$MPT_TRAIN" --spec="$D/lr.textproto" --out="$D/runs/lr" --stage=source --threads=1
spec "$D/temp.textproto" "" "temperature: 1e-300 lambda: 1e300"
expect_error spec_distillation 60 "distillation.temperature: must be in [0.001, 1000]|distillation.lambda: must be in [0, 10000]" -- \
  "$MPT_TRAIN" --spec="$D/temp.textproto" --out="$D/runs/temp" --threads=1
# In range, but it overflows: the run stops naming the step and the stage,
# and no adapter is written.
STEPS=30 spec "$D/diverge.textproto" \
  "optimizer { learning_rate: 1000 weight_decay: 1000 schedule: \"constant\" }"
expect_error diverging_run 120 "not finite|of stage source (task echo)" -- \
  "$MPT_TRAIN" --spec="$D/diverge.textproto" --out="$D/runs/diverge" --stage=source --threads=1
if [ -e "$D/runs/diverge/source/echo/adapter_model.safetensors" ]; then
  fail "diverging_run: an adapter was written"
fi

# --- mpt_train flags.
spec "$D/good.textproto"
cp "$D/good.textproto" "$D/good.before"
expect_error events_is_the_spec 60 "--events: |an input (--spec)" -- \
  "$MPT_TRAIN" --spec="$D/good.textproto" --out="$D/runs/ev" --events="$D/good.textproto" \
  --stage=source --threads=1
ln -s "$TASKS/echo.train.jsonl" "$D/data_link.jsonl"
expect_error events_is_the_data 60 "an input (source.tasks[0].train_path)" -- \
  "$MPT_TRAIN" --spec="$D/good.textproto" --out="$D/runs/ev" --events="$D/data_link.jsonl" \
  --stage=source --threads=1
cmp -s "$D/good.textproto" "$D/good.before" || fail "events_is_the_spec: the spec changed"
expect_error stray_argument 60 'unexpected argument "extra"' -- \
  "$MPT_TRAIN" --spec="$D/good.textproto" --out="$D/runs/x" extra
for v in -1 nan; do
  expect_error "baseline_lr_$v" 60 "--baseline_learning_rate: must be in (0, 1000]" -- \
    "$MPT_TRAIN" --spec="$D/good.textproto" --out="$D/runs/x" --baseline_learning_rate="$v"
done
expect_error mpt_train_cuda 60 "--device: cuda:99: " -- \
  "$MPT_TRAIN" --spec="$D/good.textproto" --out="$D/runs/x" --stage=source --device=cuda:99
[ "$(wc -l <"$log")" -le 3 ] || fail "mpt_train_cuda: more than 3 lines"
sed 's/^prompt/# no base_model\nprompt/; /^base_model/d' "$D/good.textproto" >"$D/nomodel.textproto"
expect_error no_base_model 60 "base_model: required" -- \
  "$MPT_TRAIN" --spec="$D/nomodel.textproto" --out="$D/runs/x" --stage=source --threads=1
sed 's|^source {|source {\n  init: "ADAPTERS" init_adapters: "/nonexistent"|' "$D/good.textproto" \
  >"$D/init.textproto"
expect_error init_adapters_missing 60 "source.init_adapters[0]: /nonexistent" -- \
  "$MPT_TRAIN" --spec="$D/init.textproto" --out="$D/runs/x" --stage=source --threads=1

# --- llama_dump.
expect_ok llama_threads_capped 60 -- "$LLAMA_DUMP" --model="$LLAMA" --ids=1,2 --threads=1000
expect_error llama_threads_negative 30 "--threads" -- \
  "$LLAMA_DUMP" --model="$LLAMA" --ids=1,2 --threads=-1
expect_error llama_generate_huge 30 "--generate: 2000000000|pass 65536 positions" -- \
  "$LLAMA_DUMP" --model="$LLAMA" --ids=1,2 --generate=2000000000
# Past max_position_embeddings (256) is allowed, as in transformers, with
# a note; 2 input and 255 new tokens take 256 positions (the last new
# token is never fed back), 256 new ones 257.
expect_ok llama_generate_to_the_end 60 -- "$LLAMA_DUMP" --model="$LLAMA" --ids=1,2 --generate=255
grep -q "past config.json" "$log" && fail "llama_generate_to_the_end: a note at 256 positions"
expect_ok llama_generate_past_the_end 60 -- "$LLAMA_DUMP" --model="$LLAMA" --ids=1,2 --generate=256
grep -q "note: 257 positions, past config.json's max_position_embeddings (256" "$log" ||
  fail "llama_generate_past_the_end: no note"
expect_error llama_generate_past_the_bound 30 "at most 65535 fit" -- \
  "$LLAMA_DUMP" --model="$LLAMA" --ids=1,2 --generate=65536
expect_error llama_random_tokens_huge 30 "--random_tokens: 1000000000|more than 65536 positions" -- \
  "$LLAMA_DUMP" --model="$LLAMA" --random_tokens=1000000000
expect_error llama_random_tokens_negative 30 "--random_tokens must be positive" -- \
  "$LLAMA_DUMP" --model="$LLAMA" --random_tokens=-1
expect_error llama_batch_huge 30 "--batch must be in [1, 65536]" -- \
  "$LLAMA_DUMP" --model="$LLAMA" --random_tokens=8 --batch=2000000000
expect_error llama_ids_semicolon 30 "--ids: row 1 is empty" -- "$LLAMA_DUMP" --model="$LLAMA" --ids=";"
expect_error llama_ids_empty_row 30 "--ids: row 2 is empty" -- \
  "$LLAMA_DUMP" --model="$LLAMA" --ids="1,2;;3"
expect_error llama_ids_empty_id 30 "--ids: row 1 has an empty id" -- \
  "$LLAMA_DUMP" --model="$LLAMA" --ids="1,,3"
cp -r "$LLAMA" "$D/llama"
cp "$D/llama/model.safetensors" "$D/llama.before"
expect_error llama_out_is_the_weights 30 "--out: |an input (--model)" -- \
  "$LLAMA_DUMP" --model="$D/llama" --ids=1,2 --out="$D/llama/model.safetensors"
cmp -s "$D/llama/model.safetensors" "$D/llama.before" || fail "llama_out_is_the_weights: changed"

# A PEFT CAUSAL_LM adapter: its rows come first; another model's adapter, a task
# it does not have and an --out inside it are refused.
expect_ok llama_adapter 60 -- "$LLAMA_DUMP" --model="$LLAMA" --ids="1,2;3" \
  --adapter="$R/tests/testdata/causal_lm/peft_mpt" --task_id=1 --generate=2
grep -q "4 prompt rows, task 1" "$log" || fail "llama_adapter: no adapter line"
expect_error llama_adapter_seq2seq 30 "token_dim: the adapter" -- "$LLAMA_DUMP" --model="$LLAMA" \
  --ids=1,2 --adapter="$R/tests/testdata/mpt/adapter_peft"
expect_error llama_adapter_task 30 "--task_id: 2 is not a task" -- "$LLAMA_DUMP" \
  --model="$LLAMA" --ids=1,2 --adapter="$R/tests/testdata/causal_lm/peft_mpt" --task_id=2
expect_error llama_adapter_task_plain 30 "--task_id: 1 is not a task" -- "$LLAMA_DUMP" \
  --model="$LLAMA" --ids=1,2 --adapter="$R/tests/testdata/causal_lm/peft_pt" --task_id=1
cp -r "$R/tests/testdata/causal_lm/peft_pt" "$D/peft_pt"
cp "$D/peft_pt/adapter_model.safetensors" "$D/peft_pt.before"
expect_error llama_out_is_the_adapter 30 "--out: |an input (--adapter)" -- "$LLAMA_DUMP" \
  --model="$LLAMA" --ids=1,2 --adapter="$D/peft_pt" --out="$D/peft_pt/adapter_model.safetensors"
cmp -s "$D/peft_pt/adapter_model.safetensors" "$D/peft_pt.before" ||
  fail "llama_out_is_the_adapter: changed"

# --- t5_dump.
cp -r "$T5" "$D/t5"
cp "$D/t5/model.safetensors" "$D/t5.before"
expect_error t5_out_is_the_weights 30 "--out: |an input (--model)" -- \
  "$T5_DUMP" --model="$D/t5" --text=hi --out="$D/t5/model.safetensors"
cmp -s "$D/t5/model.safetensors" "$D/t5.before" || fail "t5_out_is_the_weights: changed"
expect_ok t5_dump_still_works 60 -- "$T5_DUMP" --model="$D/t5" --text=hi --out="$D/o.safetensors"
words=$(python3 -c 'print("word " * 20000)')
expect_error t5_text_too_long 60 "--text: input 1 has|more than the limit of 8192" -- \
  "$T5_DUMP" --model="$T5" --text="$words" --out="$D/o.safetensors"
expect_error t5_generate_huge 60 "--generate: 2000000000" -- \
  "$T5_DUMP" --model="$T5" --text=hi --generate=2000000000 --out="$D/o.safetensors"
expect_error t5_cuda 30 "--device: cuda:99: " -- \
  "$T5_DUMP" --model="$T5" --text=hi --device=cuda:99 --out="$D/o.safetensors"
[ "$(wc -l <"$log")" -le 3 ] || fail "t5_cuda: more than 3 lines"
expect_error t5_tpu 30 "--device: tpu: " -- \
  "$T5_DUMP" --model="$T5" --text=hi --device=tpu --out="$D/o.safetensors"
# float16 on the CPU: it works (libtorch 2.x) or is refused naming the flag.
run t5_float16 60 -- "$T5_DUMP" --model="$T5" --text=hi --dtype=float16 --out="$D/o.safetensors"
if [ "$rc" -ne 0 ] && ! grep -qF -- "--dtype: float16" "$log"; then
  fail "t5_float16: exit $rc without naming --dtype"; tail -5 "$log" >&2
fi

# --- Specs and data whose results would silently mean nothing.
# source_spec FILE TASK_FIELDS [PROMPT_TOKENS] [BATCH]: one source task "echo"
# trained for one step.
source_spec() {
  cat >"$1" <<SPEC
base_model: "$T5"
prompt { num_virtual_tokens: ${3:-2} }
source {
  tasks { name: "echo" $2 }
  train { steps: 1 batch_size: ${4:-2} }
}
SPEC
}
# Evaluation by rank when the eval targets are not among the candidates
# (accuracy would read 0), or with one candidate (it would read the base rate).
source_spec "$D/rank.textproto" "train_path: \"$TASKS/echo.train.jsonl\"
  eval_path: \"$TASKS/echo.eval.jsonl\" eval_mode: \"rank\" candidates: \"yes\" candidates: \"no\""
expect_error rank_targets_not_candidates 60 \
  "echo.eval.jsonl:1: target \"blue cat\" is not one of task \"echo\"'s candidates (\"yes\", \"no\")" -- \
  "$MPT_TRAIN" --spec="$D/rank.textproto" --out="$D/runs/rank" --stage=source --threads=1
sed -i 's/ candidates: "no"//' "$D/rank.textproto"
expect_error rank_one_candidate 60 "source.tasks[0].candidates: eval_mode \"rank\" needs at least two" -- \
  "$MPT_TRAIN" --spec="$D/rank.textproto" --out="$D/runs/rank" --stage=source --threads=1
# Settings inside their ranges whose step cannot fit any machine's memory:
# refused before the first step, naming the fields.
source_spec "$D/huge_step.textproto" "train_path: \"$TASKS/echo.train.jsonl\"" 10000 1024
expect_error step_memory 60 "source.train: one step of batch_size 1024 over prompt.num_virtual_tokens 10000|lower batch_size, max_input_length or num_virtual_tokens" -- \
  prlimit --as=8000000000 -- "$MPT_TRAIN" --spec="$D/huge_step.textproto" --out="$D/runs/huge" --stage=source --threads=1
# A data line with a key twice.
printf '{"input": "a", "target": "b", "input": "c"}\n' >"$D/twice.jsonl"
source_spec "$D/twice.textproto" "train_path: \"$D/twice.jsonl\""
expect_error data_key_twice 60 "twice.jsonl:1: key \"input\" appears more than once" -- \
  "$MPT_TRAIN" --spec="$D/twice.textproto" --out="$D/runs/twice" --stage=source --threads=1
# A model whose config.json has fewer embedding rows than the tokenizer has ids.
mkdir -p "$D/small_vocab"
cp -L "$T5"/* "$D/small_vocab/"
python3 - "$D/small_vocab" <<'PY'
import json, struct, sys
folder = sys.argv[1]
config = json.load(open(folder + "/config.json"))
vocab = config["vocab_size"]
config["vocab_size"] = 100
json.dump(config, open(folder + "/config.json", "w"))
# The embedding (and an untied LM head) cut to 100 rows, as config.json says.
data = open(folder + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
out_header, blobs, offset = {}, [], 0
for name, t in header.items():
    if name == "__metadata__":
        out_header[name] = t
        continue
    begin, end = t["data_offsets"]
    blob = data[8 + n + begin:8 + n + end]
    if t["shape"] and t["shape"][0] == vocab:
        blob = blob[:len(blob) * 100 // vocab]
        t = dict(t, shape=[100] + t["shape"][1:])
    out_header[name] = dict(t, data_offsets=[offset, offset + len(blob)])
    blobs.append(blob)
    offset += len(blob)
encoded = json.dumps(out_header).encode()
with open(folder + "/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
PY
sed "s|$T5|$D/small_vocab|" "$D/good.textproto" >"$D/small_vocab.textproto"
expect_error model_vocab_too_small 60 "config.json: vocab_size 100 is smaller than the tokenizer's" -- \
  "$MPT_TRAIN" --spec="$D/small_vocab.textproto" --out="$D/runs/small_vocab" --stage=source --threads=1
# target.init_task outside the source adapter's tasks.
expect_ok two_teachers 120 -- \
  "$MPT_TRAIN" --spec="$D/good.textproto" --out="$D/runs/good" --threads=1
cat >"$D/init_task.textproto" <<SPEC
base_model: "$T5"
prompt { num_virtual_tokens: 2 }
target {
  tasks { name: "echo" train_path: "$TASKS/echo.train.jsonl" }
  train { steps: 1 batch_size: 2 }
  init: "EXACT_SOURCE_TASK" init_task: 5 source_adapter: "$D/runs/good/distillation"
}
SPEC
expect_error init_task_out_of_range 60 "target.init_task: 5 is not a task of target.source_adapter" -- \
  "$MPT_TRAIN" --spec="$D/init_task.textproto" --out="$D/runs/init_task" --stage=target --threads=1

# --- worker start-up flags (each is refused before it connects anywhere).
W=(--coordinator=127.0.0.1:1 --threads=1 --work_dir="$D/worker")
expect_error worker_tpu 30 "--device: tpu: " -- "$WORKER" "${W[@]}" --device=tpu
expect_error worker_models 30 "--models: /nonexistent" -- "$WORKER" "${W[@]}" --models=/nonexistent
expect_error worker_memory 30 "--memory_bytes: must be >= 0" -- "$WORKER" "${W[@]}" --memory_bytes=-1
expect_error worker_gloo_bind 30 "--gloo_bind: \"nosuchif0.invalid\" is neither" -- \
  "$WORKER" "${W[@]}" --gloo_bind=nosuchif0.invalid

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all passed"
