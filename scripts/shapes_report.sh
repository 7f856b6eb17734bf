#!/usr/bin/env bash
# The evaluation report of docs/explanation/lab.md: every method of `fheads eval` on the bundled model and the
# shapes test split, then `fheads report`. Static heads are calibrated on the calib split with the best setting
# of the `fheads tune` study on dev (candidate.json: run on test whether or not the study confirmed it).
# CGD scores sentences with a tiny CLIP trained on shapes scenes (training/train_shapes_clip.py, trained
# here first if OUT_DIR/aux/shapes-clip does not exist: 1500 steps, about 15 minutes on 2 cores). AGLA is left out:
# it needs a BLIP image-text matching model that knows such images, which this project does not have.
#   bash scripts/shapes_report.sh [OUT_DIR]      (default runs/shapes)
source "$(dirname "$0")/env.sh"
OUT=${1:-runs/shapes}
MODEL=$BUNDLED/shapes-r1-tiny
bash scripts/methods_on_test.sh "$MODEL" "$MODEL/candidate.json" "$OUT"
CLIP="$OUT/aux/shapes-clip"
if [ ! -f "$CLIP/model.safetensors" ]; then
  "$PYTHON" training/train_shapes_clip.py --out "$CLIP" --steps 1500
fi
"$FHEADS" eval --model "$MODEL" --bench shapes --split test --method cgd --method-option clip="$CLIP" \
  --out "$OUT/runs" --max-new-tokens 64
"$FHEADS" report "$OUT/runs" --out "$OUT/report"
