"""Tuning: the method's settings chosen by an Optuna study on a dev split and confirmed on held-out items
(`fheads tune`). Built on evaluation's answering engine.

Modules: `settings` (TuneSettings) and `space` (SearchSpace) hold what a study searches; `storage` the
study and its workers; `objective` the trials; `confirmation` the best trial against vanilla on held-out
items; `summary` what the study found; `report` and `figures` its files; `logs` its log; `study` the
command that wires them. `tune` is loaded when first used, so reading the settings (as the command line
does for its defaults) loads neither the evaluation engine nor Optuna.
"""

from .settings import TuneSettings
from .space import SearchSpace


def __getattr__(name: str):
    if name == "tune":
        from .study import tune

        return tune
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SearchSpace", "TuneSettings", "tune"]
