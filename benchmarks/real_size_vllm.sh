#!/usr/bin/env bash
# vLLM against transformers at real size, for a lent GPU: benchmarks/engine_throughput.py on random weights of
# Qwen2.5-VL-7B's config in bfloat16 (nothing downloaded), 32 shapes items with their images (256 image tokens
# each), greedy outputs of reasoning length: log-normal, median 2048 tokens, at least 1024 (seed 0 draws 1024 to
# 4742 tokens, 71,324 in all). Start-up apart, items/s and tokens/s of each engine, answers compared item by item;
# the table is printed and the figures written to $OUT/engine_throughput_$SIZE.json (rewritten after each engine,
# so a run cut short keeps what it measured: vLLM runs first).
#
# Planned to fit one device call of under 10 minutes on one H200 (estimates, to be replaced by the figures):
#   imports (torch, transformers, vLLM)                                        ~0.5 min
#   building the model on the GPU and saving it (8.3 B parameters, 16.6 GB)    ~1-1.5 min
#   vLLM's start (weights from the page cache, compilation, CUDA graphs up
#   to the 32 sequences of --max-num-seqs) and a warm-up                        ~2-2.5 min
#   vLLM generating: the 32 items at once; its time is set by the longest
#   (4742 steps at ~8 ms: 32 sequences, fewer as they finish)                   ~0.7 min
#   transformers' load and warm-up                                              ~0.5 min
#   transformers generating: one batch of 32 (--batch-size 32, its best case
#   here: no second batch), 4742 steps for every row at ~30-40 ms a step        ~2.5-3 min
#   in all                                                                      ~8-8.5 min
# If vLLM's start or transformers' steps are slower than that, give the call a limit of 600 s anyway: the JSON
# then holds vLLM's figures, and a second call with --engines hf measures transformers.
#
# Prepared on a CPU first, where SIZE=tiny (the testbed's model with heads of 32) or SIZE=small (the 7b structure at
# tiny widths: vocabulary 152064, 448 px images) runs in minutes:
#   SIZE=tiny DEVICE=cpu DTYPE=float32 PY=/path/to/venv-with-vllm/bin/python bash benchmarks/real_size_vllm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}  # a Python with the vllm extra (`bash scripts/setup.sh vllm`)
SIZE=${SIZE:-7b}; DEVICE=${DEVICE:-cuda}; DTYPE=${DTYPE:-bfloat16}; OUT=${OUT:-.}
case "$SIZE" in
  7b) ARGS=(--items 32 --lengths 2048 8192 --min-length 1024 --spread 0.5 --batch-size 32 --max-num-seqs 32) ;;
  tiny|small) ARGS=(--items 16 --lengths 48 160 --min-length 8 --spread 0.7 --batch-size 8 --max-num-seqs 16
                    --vllm-option enforce_eager=true) ;;  # eager: a quicker start on a CPU
  *) echo "error: SIZE must be 7b, small or tiny, got '$SIZE'" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
"$PY" benchmarks/engine_throughput.py --size "$SIZE" --device "$DEVICE" --dtype "$DTYPE" "${ARGS[@]}" \
  --out "$OUT/engine_throughput_$SIZE.json" "$@"
