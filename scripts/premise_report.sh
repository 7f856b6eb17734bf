#!/usr/bin/env bash
# The premise experiment on the shipped models, after its protocol (shapes-r1-tiny-reasoning/MODEL_CARD.md):
# the premise on the whole test split (scripts/premise.py), then every method on test for the reasoning-tuned
# model and, as a control, for the base, both with the reasoning-tuned model's shipped setting: the best of
# its `fheads tune` study on dev (candidate.json, run on test whether or not the study confirmed it; made by
# `MODEL=$BUNDLED/shapes-r1-tiny-reasoning TRIALS=100 bash training/tune_settings.sh`). The control is
# dose-matched: on the base, thresholds that select the same share of heads of each class in the same
# bands (scripts/dose_matched_heads.py), not the tuned model's absolute thresholds.
# About 35 minutes on 2 cores.
#   bash scripts/premise_report.sh [OUT_DIR]      (default runs/premise)
source "$(dirname "$0")/env.sh"
OUT=${1:-runs/premise}
BASE=$BUNDLED/shapes-r1-tiny
TUNED=$BUNDLED/shapes-r1-tiny-reasoning
"$PYTHON" scripts/premise.py --model "$BASE" --model "$TUNED" --split test --out "$OUT/premise"
bash scripts/methods_on_test.sh "$TUNED" "$TUNED/candidate.json" "$OUT/$(basename "$TUNED")"
"$FHEADS" calibrate --model "$BASE" --data "$OUT/$(basename "$TUNED")/data/calib.jsonl" \
  --settings "$TUNED/candidate.json" --out "$OUT/control/base-absolute-thresholds.json" --batch-size 32
"$PYTHON" scripts/dose_matched_heads.py "$OUT/$(basename "$TUNED")/heads.json" \
  "$OUT/control/base-absolute-thresholds.json" "$OUT/control/base-dose-matched.json"
bash scripts/methods_on_test.sh "$BASE" "$TUNED/candidate.json" "$OUT/$(basename "$BASE")" \
  "$OUT/control/base-dose-matched.json"
for model in "$TUNED" "$BASE"; do
  "$FHEADS" report "$OUT/$(basename "$model")/runs" --out "$OUT/$(basename "$model")/report"
done
