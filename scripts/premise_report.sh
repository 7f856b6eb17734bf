#!/usr/bin/env bash
# Issue 14's experiment on the shipped models, after its protocol (shapes-r1-tiny-reasoning/MODEL_CARD.md):
# the premise on the whole test split (scripts/premise.py), then every method on test for the reasoning-tuned
# model and, as a control, for the base, both with the reasoning-tuned model's shipped setting: the best of
# its `fheads tune` study on dev (candidate.json, run on test whether or not the study confirmed it; made by
# `MODEL=functional_heads/bundled/shapes-r1-tiny-reasoning TRIALS=100 bash training/tune_settings.sh`).
# About 35 minutes on 2 cores.
#   bash scripts/premise_report.sh [OUT_DIR]      (default runs/premise)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/premise}
FHEADS=${FHEADS:-.venv/bin/fheads}
PYTHON=${PYTHON:-.venv/bin/python}
BASE=functional_heads/bundled/shapes-r1-tiny
TUNED=functional_heads/bundled/shapes-r1-tiny-reasoning
"$PYTHON" scripts/premise.py --model "$BASE" --model "$TUNED" --split test --out "$OUT/premise"
"$FHEADS" data shapes --out "$OUT/data" --split calib
for model in "$TUNED" "$BASE"; do
  name=$(basename "$model")
  "$FHEADS" calibrate --model "$model" --data "$OUT/data/calib.jsonl" --settings "$TUNED/candidate.json" \
    --out "$OUT/$name/heads.json" --batch-size 32
  for method in vanilla static dynamic perception-only reasoning-only vcd pai; do
    "$FHEADS" eval --model "$model" --bench shapes --split test --method "$method" --heads "$OUT/$name/heads.json" \
      --out "$OUT/$name/runs" --batch-size 64 --max-new-tokens 64
  done
  "$FHEADS" report "$OUT/$name/runs" --out "$OUT/$name/report"
done
