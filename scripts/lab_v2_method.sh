#!/usr/bin/env bash
# E5 then E4 of docs/protocols/lab-v2.md for one reasoning-tuned seed: `fheads tune` on dev2 (1200 search
# items, up to 1200 held-out confirmation items, 200 trials; the smallest gain worth having 2 points), then on
# test2 every method of scripts/methods_on_test.sh with the study's candidate (confirmed or not), their report,
# and `fheads verify` of that head map on the first 2000 items of test2 with 5 random draws per class.
# `python scripts/lab_v2.py e5` then tests the seeds together.
#   bash scripts/lab_v2_method.sh TUNED_MODEL OUT
# The defaults are the protocol's; TRIALS, DEV, TEST, LIMIT (items of TEST), VERIFY_LIMIT and DRAWS change them
# only to try the script on read splits.
source "$(dirname "$0")/env.sh"
MODEL=$1 OUT=$2
"$FHEADS" tune --model "$MODEL" --bench shapes --split "${DEV:-dev2}" --calib-split calib --trials "${TRIALS:-200}" \
  --confirm-fraction 0.5 --detect 2 --batch-size 64 --max-new-tokens 64 --out "$OUT/tune"
SPLIT=${TEST:-test2} LIMIT=${LIMIT:-} bash scripts/methods_on_test.sh "$MODEL" "$OUT/tune/candidate.json" "$OUT"
"$FHEADS" report "$OUT/runs" --out "$OUT/report"
"$FHEADS" verify --model "$MODEL" --heads "$OUT/heads.json" --bench shapes --split "${TEST:-test2}" \
  --limit "${VERIFY_LIMIT:-2000}" --draws "${DRAWS:-5}" --batch-size 64 --max-new-tokens 64 --out "$OUT/verify"
