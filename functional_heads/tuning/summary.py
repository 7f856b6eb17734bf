"""What a study found, as one JSON-ready dict: every trial as a row, the counts, the candidate and its
confirmation, the result, parameter importances and the trial phase's span. `report.write` formats it as
the study's files."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from typing import Callable

from ..core.config import RescaleConfig
from .confirmation import choose_candidate, confirm, result_config
from .objective import StudyWorker
from .storage import is_finished


def summarize(worker: StudyWorker, confirm_items: list, identity: dict, storage_url: str, study_name: str,
              log: Callable[[str], None], warn: Callable[[str], None] | None = None,
              plan_before_search: dict | None = None) -> dict:
    """The study's summary: the candidate (best complete trial), its confirmation (sized as
    `confirmation.plan` says; `warn` gets its warning when the held-out part is short) and every trial."""
    study = worker.study
    stored = study.get_trials(deepcopy=False)
    trials = [trial_row(t) for t in stored if not t.user_attrs.get("surplus")]
    finished = [t for t in stored if is_finished(t)]
    candidate = choose_candidate(trials)
    summary = {"study": study_name, "storage": storage_url, **{k: identity[k] for k in ("model", "benchmark", "split")},
               "calibration": identity["calibration"], "space": identity["space"], "settings": asdict(worker.settings),
               "search_items": len(worker.search), "confirm_items": len(confirm_items),
               "counts": {state: sum(t["state"] == state for t in trials)
                          for state in ("complete", "pruned", "fail", "running")},
               "plan_before_search": plan_before_search, "finished": len(finished),
               "evaluated_maps": len({t["heads_key"] for t in trials if t.get("items")}),
               "items_evaluated": sum(t.get("items") or 0 for t in trials if not t.get("same_as")),
               "candidate": candidate, "confirmation": None, "confirmed": False, "trials": trials,
               "importances": importances(study), "trials_seconds": trial_span(finished)}
    if candidate is None or candidate["value"] <= 0:
        summary["verdict"] = "no setting beat vanilla on the search part: the result is vanilla (gains of 1)"
    else:
        summary["confirmation"] = confirm(worker, candidate, confirm_items, log, warn)
        summary["confirmed"] = summary["confirmation"]["confirmed"]
        summary["verdict"] = summary["confirmation"]["verdict"]
    result = RescaleConfig.from_dict(candidate["config"]) if candidate else None
    summary["result"] = result_config(result, summary["confirmed"], identity["space"]).to_dict()
    log(f"result: {summary['verdict']}")
    return summary


def trial_row(trial) -> dict:
    """One trial as the summary lists it."""
    attrs = trial.user_attrs
    seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
               if trial.datetime_complete and trial.datetime_start else None)
    return {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value, "params": trial.params,
            "config": attrs.get("config"), "share_rescaled": attrs.get("share_rescaled", 0.0),
            "heads_key": attrs.get("heads_key"), "items": max(trial.intermediate_values, default=None),
            "seconds": seconds, **{k: attrs[k] for k in ("same_as", "infeasible", "retry_of", "vanilla_equivalent")
                                   if k in attrs}}


def importances(study, fewest: int = 10) -> dict | None:
    """Optuna's parameter importances over the complete trials (None below `fewest` of them: noise)."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < fewest:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # every parameter constant
        return None


def trial_span(trials) -> float | None:
    """Seconds from the first trial's start to the last one's end: the study's trial phase, all workers."""
    times = [(t.datetime_start, t.datetime_complete) for t in trials if t.datetime_start and t.datetime_complete]
    return (max(e for _, e in times) - min(s for s, _ in times)).total_seconds() if times else None
