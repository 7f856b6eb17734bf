#!/usr/bin/env bash
# The bundled model's settings, chosen by `fheads tune` on the shapes dev split (200 search items, 200 held-out
# confirmation items; the test split is never read), copied beside the weights with the study's report; its
# figures go to docs/. About 7 minutes on 2 cores.
#   bash training/tune_settings.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=functional_heads/bundled/shapes-r1-tiny
OUT=${OUT:-tune/shapes-r1-tiny}
"${PYTHON:-.venv/bin/python}" -m functional_heads.cli tune --model "$MODEL" --bench shapes --split dev \
  --calib-split calib --trials 200 --batch-size 64 --max-new-tokens 64 --out "$OUT"
cp "$OUT/settings.json" "$OUT/candidate.json" "$OUT/tune.md" "$MODEL/"
cp "$OUT"/tune_*.png docs/
echo "copied settings.json, candidate.json and tune.md to $MODEL, the figures to docs/"
