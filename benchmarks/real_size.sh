#!/usr/bin/env bash
# Figures at real size on a lent GPU (random weights of Qwen2.5-VL-7B's config in bfloat16: no download):
# latency ratios to vanilla (512 new tokens, prompts of 1k and 4k tokens with one 448 px image), peak memory
# of the S_v probe against eager output_attentions at 4k and 16k tokens, eval throughput at batch 1, 8, 16.
# Planned to fit one device call of under 10 minutes; prepared and run on a CPU with --size small first:
#   SIZE=small DEVICE=cpu DTYPE=float32 bash benchmarks/real_size.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SIZE=${SIZE:-7b}; DEVICE=${DEVICE:-cuda}; DTYPE=${DTYPE:-bfloat16}
COMMON=(--size "$SIZE" --device "$DEVICE" --dtype "$DTYPE")
if [ "$SIZE" = small ]; then LONG=(512 1024); NEW=16; PROMPTS=(160 512); else LONG=(4096 16384); NEW=512; PROMPTS=(1024 4096); fi
for prompt in "${PROMPTS[@]}"; do
  "$PY" benchmarks/overhead.py "${COMMON[@]}" --parts generation --prompt-len "$prompt" --new-tokens "$NEW" --repeats 2
done
"$PY" benchmarks/overhead.py "${COMMON[@]}" --parts probe --lengths "${LONG[@]}"
"$PY" benchmarks/overhead.py "${COMMON[@]}" --parts throughput --batch-sizes 1 8 16 --new-tokens "$((NEW / 2))" \
  --prompt-len "${PROMPTS[0]}"
