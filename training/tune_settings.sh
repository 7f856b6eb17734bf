#!/usr/bin/env bash
# A bundled model's settings, chosen by `fheads tune` on the shapes dev split (200 search items, 200 held-out
# confirmation items; the test split is never read), copied beside the weights with the study's report; its
# figures go to docs/ (the base) or docs/MODEL_NAME/. About 8.5 minutes on 2 cores for 200 trials (503 s).
#   bash training/tune_settings.sh                                                        (the base, 200 trials)
#   MODEL=functional_heads/bundled/shapes-r1-tiny-reasoning TRIALS=100 bash training/tune_settings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-functional_heads/bundled/shapes-r1-tiny}
NAME=$(basename "$MODEL")
OUT=${OUT:-tune/$NAME}
FIGURES=docs
[ "$NAME" = shapes-r1-tiny ] || FIGURES=docs/$NAME
"${PYTHON:-.venv/bin/python}" -m functional_heads.apps.cli tune --model "$MODEL" --bench shapes --split dev \
  --calib-split calib --trials "${TRIALS:-200}" --batch-size 64 --max-new-tokens 64 --out "$OUT"
mkdir -p "$FIGURES"
cp "$OUT/settings.json" "$OUT/candidate.json" "$OUT/tune.md" "$MODEL/"
cp "$OUT"/tune_*.png "$FIGURES/"
echo "copied settings.json, candidate.json and tune.md to $MODEL, the figures to $FIGURES/"
