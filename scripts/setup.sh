#!/usr/bin/env bash
# One command from a fresh clone: make .venv (CPU torch pinned), install functional-heads, then run a job.
#   bash scripts/setup.sh demo     # fheads demo --out demo/ on the bundled model (the main job)
#   bash scripts/setup.sh test     # the test suite
#   bash scripts/setup.sh bench    # benchmarks/overhead.py
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# torch first and pinned: 2.13.0 is the CPU build on these machines; an unpinned torch pulls a multi-GB CUDA build.
"$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0
"$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test,plot,eval]"
case "${1:-demo}" in
  demo) shift || true; exec "$VENV/bin/fheads" demo --out "${DEMO_OUT:-demo}" "$@" ;;
  test) shift || true; exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) shift; exec "$VENV/bin/python" benchmarks/overhead.py "$@" ;;
  *) echo "usage: bash scripts/setup.sh [demo|test|bench] [args...]" >&2; exit 2 ;;
esac
