#!/usr/bin/env bash
# The README's evaluation report: every method of `fheads eval` on the bundled model and the shapes test
# split, then `fheads report`. Static heads are calibrated on the calib split with the dev-chosen settings.
# AGLA and CGD are left out: they need a BLIP image-text matching and a CLIP model trained on images
# like these, which this project does not have.
#   bash scripts/shapes_report.sh [OUT_DIR]      (default runs/shapes)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/shapes}
FHEADS=${FHEADS:-.venv/bin/fheads}
MODEL=functional_heads/bundled/shapes-r1-tiny
"$FHEADS" data shapes --out "$OUT/data" --split calib
"$FHEADS" calibrate --model "$MODEL" --data "$OUT/data/calib.jsonl" --settings "$MODEL/settings.json" \
  --out "$OUT/heads.json" --batch-size 32
for method in vanilla static dynamic perception-only reasoning-only vcd pai; do
  "$FHEADS" eval --model "$MODEL" --bench shapes --split test --method "$method" --heads "$OUT/heads.json" \
    --out "$OUT/runs" --batch-size 64 --max-new-tokens 64
done
"$FHEADS" report "$OUT/runs" --out "$OUT/report"
