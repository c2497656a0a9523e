#!/usr/bin/env bash
# Adapters per hour: trains the same sequence of source tasks (one prompt
# each) with our mpt_train and with PEFT + transformers one task after
# another (tools/bench/peft_sequential.py), on the same model, data, shapes,
# steps and threads, and prints each side's wall time from process start
# (imports and model load included) to the last adapter written.
#
#   PYTHON=<python with torch, transformers, peft, sentencepiece> \
#       tools/bench/adapters_per_hour.sh MODEL_DIR [MPT_TRAIN_BINARY]
#
# MODEL_DIR: a T5 folder (config.json, model.safetensors), e.g. from
# tools/bench/make_random_t5.py (T5-small shape by default; --d_model 768
# --num_layers 12 --num_heads 12 --d_ff 3072 for T5-base). Without a
# spiece.model it borrows demo/model's (ids < 420 fit any T5 vocabulary).
# The tasks are synthetic word sequences long enough to fill every row to
# the stated lengths, or with LENGTHS=variable of 2 words up to the stated
# token count (target: 1 word up to it), so that batches pad as real data
# makes them (both sides pad a batch to its longest row; BUCKETS=N sets our
# spec's length_bucket_batches, default 0: off, as a spec's default). Env:
# TASKS (4), STEPS per task (20), BATCH (4),
# INPUT (64), TARGET (16), PROMPT (100) tokens, THREADS (default: nproc
# for PEFT, and our worker's own default thread rule), REPS (1): runs of each side,
# alternating. AUTOCAST=bf16 trains ours under bf16 autocast (--autocast=bf16)
# and PEFT_AUTOCAST=bf16 PEFT's (torch.autocast); both default to off (fp32).
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:?usage: adapters_per_hour.sh MODEL_DIR [MPT_TRAIN_BINARY]}
bin=${2:-bazel-bin/worker/mpt_train}
python=${PYTHON:-python3}
tasks=${TASKS:-4} steps=${STEPS:-20} batch=${BATCH:-4}
input=${INPUT:-64} target=${TARGET:-16} prompt=${PROMPT:-100} reps=${REPS:-1}
lengths=${LENGTHS:-full} buckets=${BUCKETS:-0}
autocast=${AUTOCAST:-off} peft_autocast=${PEFT_AUTOCAST:-off}
case "$lengths" in full|variable) ;; *) echo "LENGTHS: full or variable, not $lengths" >&2; exit 2 ;; esac
threads=${THREADS:-$(nproc)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mdir=$work/model
mkdir -p "$mdir"
for f in "$model"/*; do ln -s "$(readlink -f "$f")" "$mdir/"; done
[ -e "$mdir/spiece.model" ] || ln -s "$PWD/demo/model/spiece.model" "$mdir/spiece.model"

python3 - "$work/data" "$tasks" "$steps" "$batch" "$input" "$target" "$prompt" "$mdir" \
  "$lengths" "$buckets" > "$work/spec.json" <<'PY'
import json, os, random, sys
out, n, steps, batch, inp, tgt, prompt, model, lengths, buckets = sys.argv[1:]
words = sorted({w for t in os.listdir("demo/data") if os.path.isdir(os.path.join("demo/data", t))
                for line in open(os.path.join("demo/data", t, "train.jsonl"))
                for w in json.loads(line)["input"].split()})
rng = random.Random(0)
tasks = []
for k in range(int(n)):
    name = "task%d" % k
    os.makedirs(os.path.join(out, name))
    with open(os.path.join(out, name, "train.jsonl"), "w") as f:
        for _ in range(256):
            n_in, n_out = 2 * int(inp), 2 * int(tgt)
            if lengths == "variable":
                n_in, n_out = rng.randint(2, int(inp)), rng.randint(1, int(tgt))
            f.write(json.dumps({"input": " ".join(rng.choice(words) for _ in range(n_in)),
                                "target": " ".join(rng.choice(words) for _ in range(n_out))})
                    + "\n")
    tasks.append({"name": name, "train_path": os.path.join(out, name, "train.jsonl")})
print(json.dumps({"base_model": model, "prompt": {"num_virtual_tokens": int(prompt)},
                  "source": {"tasks": tasks, "train": {
                      "steps": int(steps), "batch_size": int(batch), "seed": 0,
                      "max_input_length": int(inp), "max_target_length": int(tgt),
                      "length_bucket_batches": int(buckets),
                      "optimizer": {"learning_rate": 0.3, "schedule": "constant"}}}}))
PY
names=$(seq -s, -f 'task%g' 0 $((tasks - 1)))

ours_flags=()
[ -n "${THREADS:-}" ] && ours_flags+=(--threads="$THREADS")
[ "$autocast" != off ] && ours_flags+=(--autocast="$autocast")
printf 'model %s; %s tasks x %s steps, batch %s, %s + %s tokens (%s lengths, buckets %s), %s prompt tokens; autocast: ours %s, PEFT %s; CPU: %s\n' \
  "$model" "$tasks" "$steps" "$batch" "$input" "$target" "$lengths" "$buckets" "$prompt" \
  "$autocast" "$peft_autocast" \
  "$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
printf '%-6s %-5s %10s %14s %8s\n' side run seconds adapters/hour load
for rep in $(seq 1 "$reps"); do
  rm -rf "$work/ours" "$work/ours_work" "$work/peft"
  load=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s.%N)
  "$bin" --spec="$work/spec.json" --out="$work/ours" --stage=source --progress=none \
    --work_dir="$work/ours_work" "${ours_flags[@]}" > "$work/ours.log" 2>&1 ||
    { cat "$work/ours.log"; exit 1; }
  ours=$(echo "$(date +%s.%N) - $t0" | bc)
  printf '%-6s %-5s %10.1f %14.0f %8s\n' mpt "$rep" "$ours" \
    "$(echo "$tasks * 3600 / $ours" | bc -l)" "$load"
  load=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s.%N)
  "$python" tools/bench/peft_sequential.py --model="$mdir" --data="$work/data" --tasks="$names" \
    --steps="$steps" --batch_size="$batch" --input_length="$input" --target_length="$target" \
    --num_virtual_tokens="$prompt" --threads="$threads" --autocast="$peft_autocast" \
    --out="$work/peft" > "$work/peft.json" \
    2> "$work/peft.log" || { cat "$work/peft.log"; exit 1; }
  theirs=$(echo "$(date +%s.%N) - $t0" | bc)
  printf '%-6s %-5s %10.1f %14.0f %8s\n' peft "$rep" "$theirs" \
    "$(echo "$tasks * 3600 / $theirs" | bc -l)" "$load"
  printf '%-6s %-5s %10.2fx\n' ratio "$rep" "$(echo "$theirs / $ours" | bc -l)"
done
grep -m1 -i "libtorch\|threads" "$work/ours.log" || true
