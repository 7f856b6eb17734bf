#!/usr/bin/env bash
# The README's evaluation report: every method of `fheads eval` on the bundled model and the shapes test
# split, then `fheads report`. Static heads are calibrated on the calib split with the dev-chosen settings.
# VCD and PAI recompute their second view at every step, so on 2 cores they run on the first
# BASELINE_LIMIT test items (320 by default) and the report compares all methods on those common items.
#   bash scripts/shapes_report.sh [OUT_DIR]      (default runs/shapes; about 20 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/shapes}
FHEADS=${FHEADS:-.venv/bin/fheads}
MODEL=functional_heads/bundled/shapes-r1-tiny
"$FHEADS" data shapes --out "$OUT/data" --split calib
"$FHEADS" calibrate --model "$MODEL" --data "$OUT/data/calib.jsonl" --settings "$MODEL/settings.json" \
  --out "$OUT/heads.json" --batch-size 32
for method in vanilla static dynamic perception-only reasoning-only vcd pai; do
  limit=()
  if [ "$method" = vcd ] || [ "$method" = pai ]; then limit=(--limit "${BASELINE_LIMIT:-320}"); fi
  "$FHEADS" eval --model "$MODEL" --bench shapes --split test --method "$method" --heads "$OUT/heads.json" \
    --out "$OUT/runs" --batch-size 64 --max-new-tokens 64 "${limit[@]}"
done
"$FHEADS" report "$OUT/runs" --common-items --out "$OUT/report"
