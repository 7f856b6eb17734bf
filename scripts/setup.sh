#!/usr/bin/env bash
# One command from a fresh clone: make .venv, install torch and functional-heads, then run a job.
#   bash scripts/setup.sh [demo]   # fheads demo --out demo/ on the bundled model (the main job)
#   bash scripts/setup.sh test     # the test suite (CI runs it, then the docs job)
#   bash scripts/setup.sh bench    # benchmarks/overhead.py
#   bash scripts/setup.sh docs     # the documentation site, built strictly into site/ (CI runs it after the tests)
#   bash scripts/setup.sh install  # only the installation
# torch: a torch already installed in the venv is kept. Otherwise TORCH_SPEC is installed (default
# torch==2.13.0). Whether that is a CPU or a CUDA build depends on the package index: on this project's
# machines the pin resolves to a CPU wheel kept on local disk; on an ordinary Linux machine PyPI serves
# the CUDA build of that pin (several GB). For another build, set TORCH_INDEX_URL to PyTorch's wheel index
# of your choice (CPU or a CUDA version, from PyTorch's install page) and/or TORCH_SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."
JOB=${1:-demo}
case "$JOB" in
  demo|test|bench|docs|install) ;;
  *) echo "error: unknown job '$JOB'; use: bash scripts/setup.sh [demo|test|bench|docs|install] [args...]" >&2; exit 2 ;;
esac
[ $# -gt 0 ] && shift
VENV=${VENV:-.venv}
PIP=("$VENV/bin/pip" install --disable-pip-version-check)
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: making $VENV"
  python3 -m venv "$VENV"
fi
if [ -n "${TORCH_SPEC:-}" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup: installing ${TORCH_SPEC:-torch==2.13.0}${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}"
  "${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
else
  echo "setup: keeping the installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
fi
echo "setup: installing functional-heads with its test, plot, eval and tune extras"
"${PIP[@]}" -e ".[test,plot,eval,tune]"
if [ "$JOB" = docs ]; then
  echo "setup: installing the docs extra (mkdocs, mkdocstrings, mkdocs-material)"
  "${PIP[@]}" -e ".[docs]"
fi
case "$JOB" in
  demo) exec "$VENV/bin/fheads" demo --out "${DEMO_OUT:-demo}" "$@" ;;
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) exec "$VENV/bin/python" benchmarks/overhead.py "$@" ;;
  # --strict: a link to a missing page or anchor, or an API name that no longer resolves, fails the build
  docs) NO_MKDOCS_2_WARNING=1 exec "$VENV/bin/mkdocs" build --strict --site-dir "${SITE_DIR:-site}" "$@" ;;
  install) ;;
esac
