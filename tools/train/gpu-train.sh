#!/usr/bin/env bash
# Trains the reader on a GPU machine without network access, from a folder holding its inputs:
#   corpus.jsonl.xz man-pages.jsonl.xz (tools/corpus), tokenizer.json (models/kdn-reader), synthetic.json
#   (bench/data/answers).
#
#   tools/train/gpu-train.sh INPUTS OUT [more train_reader.py options]
#
# OUT receives train.log (the run's output), train-log.json and reader-model.tar (the Hugging Face model
# directory: config, generation config, tokenizer files, fp16 safetensors, train-log.json). The model directory
# itself is written to $MODEL_DIR (default /tmp/kdn-reader, emptied first) and checkpointed as training goes, so a run stopped
# by the time limit still leaves a model in the tar. MINUTES (default 7.5) bounds the run up to the final
# evaluation, which takes well under a minute more.
#
# A longer run goes in slices, one call each on the same machine: RESUME=1 keeps $MODEL_DIR and continues from its
# train-state.pt (left out of the tar). Give every slice the same --plan-minutes, and --no-final-eval to all but
# the last, e.g. MINUTES=8.5 tools/train/gpu-train.sh .train OUT --plan-minutes 24 --no-final-eval, twice with
# RESUME=1 for the later ones.
set -uo pipefail
inputs=${1:?inputs folder}
out=${2:?output folder}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
minutes=${MINUTES:-7.5}
model=${MODEL_DIR:-/tmp/kdn-reader}
workers=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
if [ "${RESUME:-0}" = 1 ]; then
  set -- --resume "$@"
else
  rm -rf "$model"  # the model directory is this script's own: no stale checkpoint
fi
mkdir -p "$out" "$model"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$out/train.log"
# Hard stop 80 s after the budget: the final evaluation normally ends well before it.
PYTHONUNBUFFERED=1 timeout --signal=TERM --kill-after=10 "$(python3 -c "print(int($minutes * 60 + 80))")" \
  python3 "$here/train_reader.py" --corpus "$inputs/corpus.jsonl.xz" "$inputs/man-pages.jsonl.xz" \
  --tokenizer "$inputs/tokenizer.json" --eval-set "$inputs/synthetic.json" --out "$model" \
  --minutes "$minutes" --workers "$workers" "$@" 2>&1 | tee -a "$out/train.log"
status=${PIPESTATUS[0]}
cp "$model/train-log.json" "$out/" 2>/dev/null
tar -cf "$out/reader-model.tar" --exclude=train-state.pt --exclude='train-state.pt.tmp' -C "$(dirname "$model")" "$(basename "$model")"
echo "train_reader.py exited $status; $(du -h "$out/reader-model.tar" | cut -f1) model tar in $out" | tee -a "$out/train.log"
exit "$status"
