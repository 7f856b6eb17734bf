#!/usr/bin/env bash
# The README's evaluation report: every method of `fheads eval` on the bundled model and the shapes test
# split, then `fheads report`. Static heads are calibrated on the calib split with the best setting of the
# `fheads tune` study on dev (candidate.json: run on test whether or not the study confirmed it).
# CGD scores sentences with a tiny CLIP trained on shapes scenes (training/train_shapes_clip.py, trained
# here first if OUT_DIR/aux/shapes-clip does not exist: 1500 steps, about 15 minutes on 2 cores). AGLA is left out:
# it needs a BLIP image-text matching model that knows such images, which this project does not have.
#   bash scripts/shapes_report.sh [OUT_DIR]      (default runs/shapes)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/shapes}
FHEADS=${FHEADS:-.venv/bin/fheads}
PYTHON=${PYTHON:-.venv/bin/python}
MODEL=functional_heads/bundled/shapes-r1-tiny
"$FHEADS" data shapes --out "$OUT/data" --split calib
"$FHEADS" calibrate --model "$MODEL" --data "$OUT/data/calib.jsonl" --settings "$MODEL/candidate.json" \
  --out "$OUT/heads.json" --batch-size 32
for method in vanilla static dynamic perception-only reasoning-only vcd pai; do
  "$FHEADS" eval --model "$MODEL" --bench shapes --split test --method "$method" --heads "$OUT/heads.json" \
    --out "$OUT/runs" --batch-size 64 --max-new-tokens 64
done
CLIP="$OUT/aux/shapes-clip"
if [ ! -f "$CLIP/model.safetensors" ]; then
  "$PYTHON" training/train_shapes_clip.py --out "$CLIP" --steps 1500
fi
"$FHEADS" eval --model "$MODEL" --bench shapes --split test --method cgd --method-option clip="$CLIP" \
  --out "$OUT/runs" --max-new-tokens 64
"$FHEADS" report "$OUT/runs" --out "$OUT/report"
