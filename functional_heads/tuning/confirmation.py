"""The step after the trials: the study's best setting (the candidate) is evaluated once on the held-out
confirmation items and tested against vanilla on them (paired gain and McNemar's test). The result is the
candidate when its gain is positive and p < alpha, else vanilla (gains of 1). This module computes; the
report formats."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..core.config import RescaleConfig
from ..core.heads import identify_heads
from ..evaluation.stats import items_needed, mcnemar, paired_difference
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


def confirm(worker: StudyWorker, candidate: dict, items: list, log: Callable[[str], None]) -> dict:
    """The candidate against vanilla on the confirmation items (`paired_test`); both scores are kept in the
    study, so every worker and rerun reads the same ones."""
    heads = identify_heads(worker.ratios, RescaleConfig.from_dict(candidate["config"]), worker.model_type,
                           warn=False)  # a trial's map, drawn within the space's shares
    log(f"confirming trial {candidate['number']} on the {len(items)} confirmation items")
    vanilla = cached(worker.study, "vanilla_confirm", lambda: worker.scorer.scores(None, items))
    tuned = cached(worker.study, f"confirm/{candidate['heads_key']}", lambda: worker.scorer.scores(heads, items))
    return paired_test(vanilla, tuned, candidate, worker.settings)


def paired_test(vanilla: list[float], tuned: list[float], candidate: dict, settings: TuneSettings) -> dict:
    """The candidate against vanilla on the held-out items: paired gain, its interval, McNemar's p, and the
    items a test of this kind would need."""
    gain = paired_difference(vanilla, tuned)
    test = mcnemar([v >= 1 for v in vanilla], [t >= 1 for t in tuned])
    change_rate = (test["a_only"] + test["b_only"]) / max(len(vanilla), 1)
    confirmed = gain["mean"] > 0 and test["p"] < settings.alpha
    sought = settings.min_effect
    needed = items_needed(sought, change_rate, settings.alpha, settings.power)
    seen = gain["mean"] if 0 < gain["mean"] < 1 else None
    needed_seen = items_needed(seen, change_rate, settings.alpha, settings.power) if seen else None
    measured = (f"{gain['mean']:+.1%} on {len(vanilla)} held-out items (95% CI {gain['ci'][0]:+.1%} to "
                f"{gain['ci'][1]:+.1%}, McNemar p = {test['p']:.3g})")
    verdict = (f"confirmed: {measured}" if confirmed else
               f"not confirmed: {measured}; the result is vanilla (gains of 1). At this change rate "
               f"({change_rate:.1%} of answers) " + (f"confirming a gain of {seen:+.1%} would need about "
                                                     f"{needed_seen} held-out items, one of {sought:.0%} about {needed}"
                                                     if seen else f"a gain of {sought:.0%} needs about {needed} items"))
    return {"items": len(vanilla), "vanilla_accuracy": sum(v >= 1 for v in vanilla) / max(len(vanilla), 1),
            "tuned_accuracy": sum(t >= 1 for t in tuned) / max(len(tuned), 1), "gain": gain["mean"],
            "ci": list(gain["ci"]), "mcnemar": test, "change_rate": change_rate, "items_needed": needed,
            "items_needed_for_gain_seen": needed_seen,
            "search_gain": candidate["value"], "confirmed": confirmed, "verdict": verdict}


def result_config(candidate: RescaleConfig | None, confirmed: bool, space: dict) -> RescaleConfig:
    """The candidate if confirmed, else vanilla: the candidate's heads with gains of 1 (or, without one, a
    setting that selects no head)."""
    if candidate is not None and confirmed:
        return candidate
    if candidate is not None:
        return replace(candidate, g_perc=1.0, g_reas=1.0, layer_gains=None)
    return RescaleConfig(0, space["num_layers"] - 1, 1.0, 0.0, query_tokens=space["query_tokens"])
