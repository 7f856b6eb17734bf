"""The study and what its workers share through the storage: opening a storage (an RDB with heartbeats, or
a journal file) and the study in it, the sampler and pruner every worker uses, values computed once per
study (`cached`), and worker liveness: a RUNNING trial whose worker is gone is failed and its parameters
are queued again.

Only Optuna's public API is used: `Study.tell` fails another worker's trial, the RDB storage's heartbeat
options and `fail_stale_trials` cover workers on other hosts. Optuna is imported inside the functions that
use it, so the package imports without the tune extra and `fheads tune` names the extra before any work.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Callable

from ..evaluation.seeding import text_seed
from ..utils.errors import UserError
from .settings import TuneSettings

HOST = socket.gethostname()
RACES = ("already exists", "UNIQUE constraint failed", "database is locked")  # two workers making one schema


def open_storage(url: str, heartbeat: int):
    """An Optuna storage from a URL (sqlite:///..., postgresql://..., mysql://...) or journal:PATH; an
    unreachable one is one clear error. Every RDB storage has heartbeats (`has_heartbeats`)."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    try:
        if url.startswith("journal:"):
            path = Path(url[len("journal:"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        if "://" not in url:
            raise UserError("it is neither a database URL (sqlite:///FILE, postgresql://..., mysql://...) nor "
                            "journal:PATH")
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words, and what we need
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                      grace_period=2 * heartbeat,
                                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
            except Exception as err:  # workers started together race to make the tables: the loser tries again
                if not any(race in str(err) for race in RACES) or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ModuleNotFoundError as err:
        raise UserError(f"Cannot open the storage {url}: its database driver is not installed ({err.name}); "
                        "install it (e.g. pip install psycopg2-binary or pymysql).") from err
    except (ValueError, OSError, optuna.exceptions.StorageInternalError) as err:
        raise UserError(f"Cannot open the storage {url}: {err}") from err
    except Exception as err:  # sqlalchemy's connection errors: unreachable host, bad credentials, ...
        raise UserError(f"Cannot open the storage {url}: {type(err).__name__}: {str(err).splitlines()[0]}") from err


def has_heartbeats(storage) -> bool:
    """Whether the storage fails the trials of silent workers on any host: `open_storage` gives every RDB
    storage heartbeats; a journal file has none."""
    from optuna.storages import RDBStorage

    return isinstance(storage, RDBStorage)


def open_study(storage, name: str, identity: dict, settings: TuneSettings, n_search: int):
    """The study `name` in the storage, made if new; one made with other settings (model, data, space, ...)
    is an error naming what differs, unless it holds nothing yet (a first command that failed before its S_v)."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=trial_sampler(settings.seed, 0),
                                pruner=study_pruner(settings, n_search), load_if_exists=True)
    stored = study.user_attrs.get("identity")
    if stored is None or (set(study.user_attrs) == {"identity"} and not study.get_trials(deepcopy=False)):
        study.set_user_attr("identity", identity)
    elif stored != json.loads(json.dumps(identity)):
        differ = [f"{key} (study: {stored.get(key)}; now: {identity.get(key)})"
                  for key in sorted(set(stored) | set(identity))
                  if stored.get(key) != json.loads(json.dumps(identity.get(key)))]
        raise UserError(f"The study '{name}' was made with other settings: {'; '.join(differ)}. Use another --study "
                        "or --storage, or the study's own settings.")
    return study


def join_study(url: str, name: str, identity: dict, settings: TuneSettings, n_search: int) -> tuple[object, bool]:
    """(the study `name` at `url`, whether its storage has heartbeats); any failure to open it is one error."""
    storage = open_storage(url, settings.heartbeat)
    try:
        study = open_study(storage, name, identity, settings, n_search)
    except ValueError:
        raise
    except Exception as err:
        raise UserError(f"Cannot open the study '{name}' in {url}: {type(err).__name__}: {err}") from err
    return study, has_heartbeats(storage)


def trial_sampler(seed: int, number: int):
    """TPE seeded by the trial's number: one worker's study is reproducible, and workers that start together
    draw different settings (a shared seed would make them draw the same ones). Independent TPE samples at
    each `suggest`, after the trial has its number; constant_liar keeps workers off each other's running trials."""
    import optuna

    return optuna.samplers.TPESampler(seed=text_seed(f"{seed}/{number}") % 2**32, n_startup_trials=10,
                                      constant_liar=True)


def study_pruner(settings: TuneSettings, n_search: int):
    """The pruner `settings.pruner` names, on rungs of `settings.min_items` items up to the search part."""
    import optuna

    if settings.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=settings.min_items,
                                                      reduction_factor=settings.reduction_factor)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=settings.min_items, max_resource=n_search,
                                              reduction_factor=settings.reduction_factor)
    return optuna.pruners.NopPruner()


def cached(study, key: str, compute: Callable):
    """A study-wide value (S_v, vanilla's scores): read from the study, or computed once and stored there."""
    value = study.user_attrs.get(key)
    if value is None:
        value = compute()
        study.set_user_attr(key, value)
    return value


def is_finished(trial) -> bool:
    """Whether a trial counts towards the study's `trials`: complete or pruned, and not a surplus one."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and not trial.user_attrs.get("surplus")


def this_worker() -> dict:
    """What a trial records of the worker that runs it, for `alive_here`."""
    return {"host": HOST, "pid": os.getpid()}


def alive_here(trial) -> bool | None:
    """Whether a RUNNING trial's worker is alive: True/False for a worker on this host, None elsewhere."""
    worker = trial.user_attrs.get("worker") or {}
    if worker.get("host") != HOST or not worker.get("pid"):
        return None
    try:
        os.kill(worker["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_trials(study) -> list[int]:
    """Fail the RUNNING trials of dead workers on this host and queue their parameters again (Optuna fails
    stale trials only through RDB heartbeats, before each trial it starts; this also covers the journal
    storage on one machine)."""
    import optuna
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if alive_here(trial) is False:
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # another worker failed it first
                continue
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            failed.append(trial.number)
    return failed


def can_finish(running: list, heartbeats: bool) -> bool:
    """Whether waiting for the running trials can end: each is alive here or heartbeats will fail it."""
    return heartbeats or all(alive_here(t) for t in running)
