#!/usr/bin/env bash
# One model on the shapes test split with every method of `fheads eval` that needs no extra model: static
# heads calibrated on the calib split with SETTINGS (a settings.json or candidate.json), run folders in OUT/runs.
#   bash scripts/methods_on_test.sh MODEL SETTINGS OUT
source "$(dirname "$0")/env.sh"
MODEL=$1 SETTINGS=$2 OUT=$3
"$FHEADS" data shapes --out "$OUT/data" --split calib
"$FHEADS" calibrate --model "$MODEL" --data "$OUT/data/calib.jsonl" --settings "$SETTINGS" --out "$OUT/heads.json" \
  --batch-size 32
for method in vanilla static dynamic perception-only reasoning-only vcd pai; do
  "$FHEADS" eval --model "$MODEL" --bench shapes --split test --method "$method" --heads "$OUT/heads.json" \
    --out "$OUT/runs" --batch-size 64 --max-new-tokens 64
done
