"""Optional dependencies in one place, as transformers' `is_x_available` / `requires_backends`: which
packages each extra brings, whether each is installed, and one error that names the extra to install.

Checked before the work starts, so a missing package never fails a run after the model has loaded.
"""

from __future__ import annotations

import importlib.util

from .errors import MissingDependency

# import name -> the extra of functional-heads that installs it
EXTRAS = {"optuna": "tune", "matplotlib": "plot", "datasets": "eval", "pyarrow": "eval", "sentencepiece": "eval",
          "google.protobuf": "eval", "lmms_eval": "lmms-eval", "pytest": "test",
          "vllm": "vllm"}


def is_available(name: str) -> bool:
    """Whether the package `name` (its import name) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing (google.protobuf without google)
        return False


def is_optuna_available() -> bool:
    return is_available("optuna")


def is_matplotlib_available() -> bool:
    return is_available("matplotlib")


def install_hint(*names: str) -> str:
    """What to install for these packages: the extras that bring them, or the packages themselves."""
    extras = sorted({EXTRAS[n] for n in names if n in EXTRAS})
    others = [n for n in names if n not in EXTRAS]
    hints = [f"pip install 'functional-heads[{','.join(extras)}]'"] if extras else []
    return " or ".join(hints + ([f"pip install {' '.join(others)}"] if others else []))


def requires(what: str, *names: str) -> None:
    """Raise `MissingDependency` if any of the packages `names` is missing: '`what` needs X: pip install ...'."""
    missing = [name for name in names if not is_available(name)]
    if missing:
        raise MissingDependency(f"{what} needs {', '.join(missing)}: {install_hint(*missing)}.")
