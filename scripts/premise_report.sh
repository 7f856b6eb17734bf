#!/usr/bin/env bash
# The premise experiment on the shipped models, after its protocol (shapes-r1-tiny-reasoning/MODEL_CARD.md):
# the premise on the whole test split (scripts/premise.py), then every method on test for the reasoning-tuned
# model and, as a control, for the base, both with the reasoning-tuned model's shipped setting: the best of
# its `fheads tune` study on dev (candidate.json, run on test whether or not the study confirmed it; made by
# `MODEL=$BUNDLED/shapes-r1-tiny-reasoning TRIALS=100 bash training/tune_settings.sh`).
# About 35 minutes on 2 cores.
#   bash scripts/premise_report.sh [OUT_DIR]      (default runs/premise)
source "$(dirname "$0")/env.sh"
OUT=${1:-runs/premise}
BASE=$BUNDLED/shapes-r1-tiny
TUNED=$BUNDLED/shapes-r1-tiny-reasoning
"$PYTHON" scripts/premise.py --model "$BASE" --model "$TUNED" --split test --out "$OUT/premise"
for model in "$TUNED" "$BASE"; do
  name=$(basename "$model")
  bash scripts/methods_on_test.sh "$model" "$TUNED/candidate.json" "$OUT/$name"
  "$FHEADS" report "$OUT/$name/runs" --out "$OUT/$name/report"
done
