"""What a study says while it runs: one line per finished trial (to the timed log of
`utils.progress.file_logger`), and Optuna's own lines kept quiet inside the study."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator


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
