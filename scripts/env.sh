# Sourced by the report scripts: strict mode, the repository root as working folder, the tools of the venv
# that scripts/setup.sh made (FHEADS and PYTHON override them) and the bundled models' folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FHEADS=${FHEADS:-.venv/bin/fheads}
PYTHON=${PYTHON:-.venv/bin/python}
BUNDLED=functional_heads/bundled
