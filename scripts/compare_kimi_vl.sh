#!/usr/bin/env bash
# Our native Kimi-VL against Moonshot's remote code, on one prompt about a generated image (needs the checkpoint):
#   bash scripts/compare_kimi_vl.sh /path/to/Kimi-VL-A3B-Thinking [--device cuda:0] [--dtype bfloat16]
# Makes .venv (this project) and .venv-kimi-remote (transformers 4.48.2, which the remote code targets),
# writes kimi_vl_compare/comparison.json: the logits' largest difference, top-1 agreement, and whether our
# processor gives the same input ids and pixels as Moonshot's.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bash scripts/compare_kimi_vl.sh MODEL_FOLDER [--device D] [--dtype T]" >&2; exit 2; }
MODEL=$1; shift
WORK=${WORK:-kimi_vl_compare}
REMOTE=${REMOTE_VENV:-.venv-kimi-remote}
bash scripts/setup.sh install
if [ ! -x "$REMOTE/bin/python" ]; then
  python3 -m venv "$REMOTE"
  "$REMOTE/bin/pip" install --disable-pip-version-check "${TORCH_SPEC:-torch}" torchvision "transformers==4.48.2" \
    tiktoken pillow accelerate
fi
.venv/bin/python scripts/compare_kimi_vl.py prepare "$WORK"
"$REMOTE/bin/python" scripts/compare_kimi_vl.py remote "$MODEL" "$WORK" "$@"
.venv/bin/python scripts/compare_kimi_vl.py compare "$MODEL" "$WORK" "$@"
