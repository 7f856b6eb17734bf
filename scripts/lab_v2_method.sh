#!/usr/bin/env bash
# E5 then E4 of docs/protocols/lab-v2.md for one reasoning-tuned seed: `fheads tune` on dev2 (1200 search
# items, 1200 held-out confirmation items, 200 trials; the smallest gain worth having 2 points), then on test2
# every method of scripts/methods_on_test.sh with the study's candidate (confirmed or not), their report, and
# `fheads verify` of that head map on the first 2000 items of test2 with 5 random draws per class.
#   bash scripts/lab_v2_method.sh TUNED_MODEL OUT
source "$(dirname "$0")/env.sh"
MODEL=$1 OUT=$2
"$FHEADS" tune --model "$MODEL" --bench shapes --split dev2 --calib-split calib --trials 200 --confirm-fraction 0.5 \
  --min-effect 0.02 --batch-size 64 --max-new-tokens 64 --out "$OUT/tune"
SPLIT=test2 bash scripts/methods_on_test.sh "$MODEL" "$OUT/tune/candidate.json" "$OUT"
"$FHEADS" report "$OUT/runs" --out "$OUT/report"
"$FHEADS" verify --model "$MODEL" --heads "$OUT/heads.json" --bench shapes --split test2 --limit 2000 --draws 5 \
  --batch-size 64 --max-new-tokens 64 --out "$OUT/verify"
