"""What a study says while it runs: timed lines to log.txt (and stderr), one line per finished trial, and
Optuna's own lines kept quiet inside the study."""

from __future__ import annotations

import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def file_logger(path: Path, echo: bool) -> Callable[[str], None]:
    """A log function: each message timed, appended to `path`, and printed to stderr when `echo`."""
    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        with open(path, "a") as f:
            f.write(line + "\n")
        if echo:
            print(line, file=sys.stderr, flush=True)
    return log


def trial_line(trial) -> str:
    """One finished trial: its state, gain, items, share of heads rescaled and why it was not evaluated."""
    attrs = trial.user_attrs
    value = "" if trial.value is None else f" gain {trial.value:+.4f}"
    note = next((f" ({k.replace('_', ' ')} {attrs[k]})" for k in ("same_as", "infeasible", "retry_of") if k in attrs),
                "")
    steps = max(trial.intermediate_values, default=0)
    return f"trial {trial.number} {trial.state.name.lower()}{value} on {steps or '-'} items, " \
           f"{attrs.get('share_rescaled', 0):.1%} of heads{note}"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own lines off inside the study, its verbosity restored after: ours go to log.txt, and its
    warning for a failed trial repeats the traceback that the CLI's one error line replaces (the error itself
    still propagates from `study.optimize`)."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)
