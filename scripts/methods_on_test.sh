#!/usr/bin/env bash
# One model on the shapes test split with every method of `fheads eval` that needs no extra model: static
# heads calibrated on the calib split with SETTINGS (a settings.json or candidate.json), or the head map HEADS
# when given (e.g. a dose-matched one, scripts/dose_matched_heads.py), run folders in OUT/runs. SPLIT names
# another split (default test), LIMIT its first LIMIT items only.
#   [SPLIT=test2] [LIMIT=N] bash scripts/methods_on_test.sh MODEL SETTINGS OUT [HEADS]
source "$(dirname "$0")/env.sh"
MODEL=$1 SETTINGS=$2 OUT=$3 HEADS=${4:-}
if [ -n "$HEADS" ]; then
  mkdir -p "$OUT" && cp "$HEADS" "$OUT/heads.json"
else
  "$FHEADS" data shapes --out "$OUT/data" --split calib
  "$FHEADS" calibrate --model "$MODEL" --data "$OUT/data/calib.jsonl" --settings "$SETTINGS" --out "$OUT/heads.json" \
    --batch-size 32
fi
for method in vanilla static dynamic perception-only reasoning-only vcd pai; do
  "$FHEADS" eval --model "$MODEL" --bench shapes --split "${SPLIT:-test}" --method "$method" --heads "$OUT/heads.json" \
    ${LIMIT:+--limit "$LIMIT"} --out "$OUT/runs" --batch-size 64 --max-new-tokens 64
done
