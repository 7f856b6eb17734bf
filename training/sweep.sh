#!/usr/bin/env bash
# Train several recipes side by side (one process each) and keep each run's dev checks, to choose the
# bundled model's recipe on the dev split. Used once on a lent GPU (see MODEL_CARD.md); on 2 CPU cores run
# one recipe at a time.
#   bash training/sweep.sh OUT_DIR DEVICE
set -u
out=$1 device=$2
mkdir -p "$out"
recipes=(
  "s1500-a1:--steps 1500 --aux-cell-loss 1"
  "s2000-a1:--steps 2000 --aux-cell-loss 1"
  "s3000-a1:--steps 3000 --aux-cell-loss 1"
  "s1500-a03:--steps 1500 --aux-cell-loss 0.3"
  "s2000-a03:--steps 2000 --aux-cell-loss 0.3"
  "s3000-a03:--steps 3000 --aux-cell-loss 0.3"
  "s2000-a01:--steps 2000 --aux-cell-loss 0.1"
  "s4000-a03:--steps 4000 --aux-cell-loss 0.3"
)
for recipe in "${recipes[@]}"; do
  name=${recipe%%:*}
  # shellcheck disable=SC2086
  python3 training/train_shapes_model.py --out "/tmp/sweep/$name" --device "$device" --eval-every 500 --minutes "${MINUTES:-90}" \
    ${recipe#*:} > "$out/$name.txt" 2>&1 &
done
wait
for f in "$out"/*.txt; do echo "$(basename "$f" .txt) $(grep '^{' "$f" | tail -n 1)"; done
