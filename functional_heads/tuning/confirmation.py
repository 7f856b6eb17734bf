"""The step after the trials: the study's best setting (the candidate) is evaluated once on held-out
confirmation items and tested against vanilla on them (paired gain and McNemar's test). The result is the
candidate when its gain is positive and p < alpha, else vanilla (gains of 1). This module computes; the
report formats.

The confirmation is sized for a decision: to confirm a gain of `settings.min_effect` (`--detect` points) with
`settings.power` at `settings.alpha`. What that takes depends on how often answers change between vanilla and
the candidate (McNemar's test weighs only the changed ones), which is estimated before the confirmation from
the candidate's own answers on the search part: the share of search items whose outcome differs from
vanilla's (`search_change_rate`). The candidate was chosen for its gain there, which if anything raises that
share, so the size errs on the large side. The confirmation answers that many held-out items
(`items_needed`) when the held-out part has them, else all it has, and says so. Before the search (no
candidate yet, unless a resumed study has one) only the fewest items any change rate could need are known:
the gain's own share of changed answers, every one a fix (`plan`). The verdict states the power the
confirmation had: the smallest gain it could confirm with that power at its size and at the change rate seen
on its items, and its power for the gain sought.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..core.config import RescaleConfig
from ..core.heads import identify_heads
from ..evaluation.stats import detectable_effect, items_needed, mcnemar, paired_difference, power_at
from .objective import StudyWorker
from .settings import TuneSettings
from .storage import cached


def choose_candidate(trials: list[dict]) -> dict | None:
    """The best complete trial (rows of `summary.trial_row`): highest value, then fewer heads rescaled, then
    the earlier one."""
    complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None and t.get("config")]
    if not complete:
        return None
    return max(complete, key=lambda t: (t["value"], -t["share_rescaled"], -t["number"]))


def change_rate(vanilla: list[float], tuned: list[float]) -> float:
    """The share of paired items whose outcome (a score of 1) differs between vanilla and a setting."""
    return sum((v >= 1) != (t >= 1) for v, t in zip(vanilla, tuned)) / max(len(vanilla), 1)


def search_change_rate(study, baseline: list[float], heads_key: str | None) -> float | None:
    """The change rate of a head map's answers on the whole search part (a trial with that map scored every
    search item), or None if no trial did."""
    for trial in study.get_trials(deepcopy=False):
        scores = trial.user_attrs.get("scores")
        if trial.user_attrs.get("heads_key") == heads_key and scores and len(scores) == len(baseline):
            return change_rate(baseline, scores)
    return None


def plan(available: int, settings: TuneSettings, rate: float | None, when: str) -> dict:
    """How many held-out items confirming a gain of `settings.min_effect` needs at change rate `rate` (None:
    unknown, so the fewest any rate could need), how many the confirmation will answer, and, when the
    held-out part is short, the warning that says so."""
    needed = items_needed(settings.min_effect, rate, settings.alpha, settings.power)
    sought = (f"confirming a gain of {100 * settings.min_effect:g} points (--detect) with power {settings.power} at "
              f"alpha {settings.alpha}")
    at = (f"at least {needed} held-out items (if every changed answer were a fix)" if rate is None else
          f"about {needed} held-out items at the change rate {when} ({rate:.1%} of answers)")
    warning = None
    if needed > available:
        warning = (f"{sought} needs {at}, and the held-out part holds {available}: the confirmation answers those "
                   f"{available} and reports the smallest gain it could confirm. For a confirmation with that power, "
                   "use a larger dev split, a larger --confirm-fraction or a larger --detect.")
    return {"detect": settings.min_effect, "alpha": settings.alpha, "power": settings.power, "change_rate": rate,
            "rate_from": when if rate is not None else None, "items_needed": needed, "items_available": available,
            "items": min(needed, available), "short": needed > available, "warning": warning,
            "note": f"{sought} needs {at}"}


def confirm(worker: StudyWorker, candidate: dict, items: list, log: Callable[[str], None], warn=None) -> dict:
    """The candidate against vanilla on as many confirmation items as `plan` sizes at the candidate's change
    rate on the search part (`paired_test`); both scores are kept in the study, so every worker and rerun
    reads the same ones."""
    heads = identify_heads(worker.ratios, RescaleConfig.from_dict(candidate["config"]), worker.model_type,
                           warn=False)  # a trial's map, drawn within the space's shares
    rate = search_change_rate(worker.study, worker.baseline, candidate["heads_key"])
    sized = plan(len(items), worker.settings, rate, f"of trial {candidate['number']} on the search part")
    log(sized["note"])
    if sized["warning"]:
        log(f"warning: {sized['warning']}")
        if warn is not None:
            warn(sized["warning"])
    used = items[:sized["items"]]  # the held-out part is a seeded shuffle: its head is a random sample of it
    log(f"confirming trial {candidate['number']} on {len(used)} of the {len(items)} held-out items")
    vanilla = cached(worker.study, f"vanilla_confirm/{len(used)}", lambda: worker.scorer.scores(None, used))
    tuned = cached(worker.study, f"confirm/{candidate['heads_key']}/{len(used)}",
                   lambda: worker.scorer.scores(heads, used))
    return {**paired_test(vanilla, tuned, candidate, worker.settings), "plan": sized}


def paired_test(vanilla: list[float], tuned: list[float], candidate: dict, settings: TuneSettings) -> dict:
    """The candidate against vanilla on the held-out items: paired gain, its interval, McNemar's p, and the
    power the test had: the smallest gain it confirms with `settings.power` at its size and the change rate
    seen on its items (`detectable_gain`), and its power for the gain sought (`power_for_detect`)."""
    n = len(vanilla)
    gain = paired_difference(vanilla, tuned)
    test = mcnemar([v >= 1 for v in vanilla], [t >= 1 for t in tuned])
    rate = (test["a_only"] + test["b_only"]) / max(n, 1)
    confirmed = gain["mean"] > 0 and test["p"] < settings.alpha
    sought = settings.min_effect
    needed = items_needed(sought, rate, settings.alpha, settings.power)
    seen = gain["mean"] if 0 < gain["mean"] < 1 else None
    needed_seen = items_needed(seen, rate, settings.alpha, settings.power) if seen else None
    detectable = detectable_effect(n, rate or None, settings.alpha, settings.power) if n else None
    power = power_at(n, sought, rate or None, settings.alpha) if n else 0.0
    measured = (f"{gain['mean']:+.1%} on {n} held-out items (95% CI {gain['ci'][0]:+.1%} to "
                f"{gain['ci'][1]:+.1%}, McNemar p = {test['p']:.3g})")
    outcome = (f"confirmed: {measured}" if confirmed else
               f"not confirmed: {measured}; the result is vanilla (gains of 1)")
    strength = (f"Its power: at {n} items and the change rate seen there ({rate:.1%} of answers) it confirms a gain "
                f"of {detectable:+.1%} or more with power {settings.power}; for the {sought:+.1%} sought (--detect "
                f"{100 * sought:g}) its power was {power:.2f}"
                + (f", and about {needed} items would give {settings.power}" if needed > n else "")
                if n else "No held-out item was answered")
    return {"items": n, "vanilla_accuracy": sum(v >= 1 for v in vanilla) / max(n, 1),
            "tuned_accuracy": sum(t >= 1 for t in tuned) / max(len(tuned), 1), "gain": gain["mean"],
            "ci": list(gain["ci"]), "mcnemar": test, "change_rate": rate, "items_needed": needed,
            "items_needed_for_gain_seen": needed_seen, "detectable_gain": detectable, "power_for_detect": power,
            "search_gain": candidate["value"], "confirmed": confirmed, "outcome": outcome, "power_text": strength,
            "verdict": f"{outcome}. {strength}"}


def result_config(candidate: RescaleConfig | None, confirmed: bool, space: dict) -> RescaleConfig:
    """The candidate if confirmed, else vanilla: the candidate's heads with gains of 1 (or, without one, a
    setting that selects no head)."""
    if candidate is not None and confirmed:
        return candidate
    if candidate is not None:
        return replace(candidate, g_perc=1.0, g_reas=1.0, layer_gains=None)
    return RescaleConfig(0, space["num_layers"] - 1, 1.0, 0.0, query_tokens=space["query_tokens"])
