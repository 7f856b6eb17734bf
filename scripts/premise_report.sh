#!/usr/bin/env bash
# Issue 14's experiment on the shipped models, after its protocol (shapes-r1-tiny-reasoning/MODEL_CARD.md):
# the premise on the whole test split (scripts/premise.py), then `fheads tune` on the reasoning-tuned model's
# dev split, and every method on test for the tuned model and, as a control, for the base with the same
# settings. About 40 minutes on 2 cores.
#   bash scripts/premise_report.sh [OUT_DIR]      (default runs/premise)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/premise}
FHEADS=${FHEADS:-.venv/bin/fheads}
PYTHON=${PYTHON:-.venv/bin/python}
BASE=functional_heads/bundled/shapes-r1-tiny
TUNED=functional_heads/bundled/shapes-r1-tiny-reasoning
TRIALS=${TRIALS:-100}
"$PYTHON" scripts/premise.py --model "$BASE" --model "$TUNED" --split test --out "$OUT/premise"
"$FHEADS" tune --model "$TUNED" --bench shapes --split dev --calib-split calib --trials "$TRIALS" --batch-size 64 \
  --max-new-tokens 64 --out "$OUT/tune"
"$FHEADS" data shapes --out "$OUT/data" --split calib
for model in "$TUNED" "$BASE"; do
  name=$(basename "$model")
  "$FHEADS" calibrate --model "$model" --data "$OUT/data/calib.jsonl" --settings "$OUT/tune/candidate.json" \
    --out "$OUT/$name/heads.json" --batch-size 32
  for method in vanilla static dynamic perception-only reasoning-only vcd pai; do
    "$FHEADS" eval --model "$model" --bench shapes --split test --method "$method" --heads "$OUT/$name/heads.json" \
      --out "$OUT/$name/runs" --batch-size 64 --max-new-tokens 64
  done
  "$FHEADS" report "$OUT/$name/runs" --out "$OUT/$name/report"
done
