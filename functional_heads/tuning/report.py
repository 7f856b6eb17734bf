"""What a study found: its best setting, that setting's confirmation on held-out dev items, every trial,
and the paper's plots, as tune.json, tune.md, settings.json, heads.json and PNG figures.

settings.json is read by `fheads calibrate --settings`, `RescaleConfig.resolve(settings=...)` and the demo;
heads.json is a head map (the result's heads on the study's calibrated S_v) for `fheads eval --heads`,
`fheads export` and `HeadMap.load`. When nothing is confirmed, both hold vanilla: gains of 1.
candidate.json holds the study's best setting whether confirmed or not (to see what it does on test).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..core.config import RescaleConfig
from ..core.heads import identify_heads
from ..evaluation.stats import items_needed, mcnemar, paired_difference
from ..utils import plotting
from . import figures


def summarize(study, tuner, confirm: list, identity: dict, storage_url: str, study_name: str, log) -> dict:
    """The study's summary: the candidate (best complete trial), its confirmation and every trial."""
    from .study import _finished, cached

    stored = study.get_trials(deepcopy=False)
    trials = [_trial_row(t) for t in stored if not t.user_attrs.get("surplus")]
    finished = [t for t in stored if _finished(t)]
    candidate = _candidate(trials)
    summary = {"study": study_name, "storage": storage_url, **{k: identity[k] for k in ("model", "benchmark", "split")},
               "calibration": identity["calibration"], "space": identity["space"], "settings": asdict(tuner.settings),
               "search_items": len(tuner.search), "confirm_items": len(confirm),
               "counts": {state: sum(t["state"] == state for t in trials)
                          for state in ("complete", "pruned", "fail", "running")},
               "finished": len(finished), "evaluated_maps": len({t["heads_key"] for t in trials if t.get("items")}),
               "items_evaluated": sum(t.get("items") or 0 for t in trials if not t.get("same_as")),
               "candidate": candidate, "confirmation": None, "confirmed": False, "trials": trials,
               "importances": _importances(study), "trials_seconds": _trial_span(finished)}
    if candidate is None or candidate["value"] <= 0:
        summary["verdict"] = "no setting beat vanilla on the search part: the result is vanilla (gains of 1)"
    else:
        heads = identify_heads(tuner.ratios, RescaleConfig.from_dict(candidate["config"]), tuner.model_type)
        log(f"confirming trial {candidate['number']} on the {len(confirm)} confirmation items")
        vanilla = cached(study, "vanilla_confirm", lambda: tuner.scorer.accuracy(None, confirm))
        tuned = cached(study, f"confirm/{candidate['heads_key']}", lambda: tuner.scorer.accuracy(heads, confirm))
        summary["confirmation"] = confirmation(vanilla, tuned, candidate, tuner.settings)
        summary["confirmed"] = summary["confirmation"]["confirmed"]
        summary["verdict"] = summary["confirmation"]["verdict"]
    result = RescaleConfig.from_dict(candidate["config"]) if candidate else None
    summary["result"] = _result_config(result, summary["confirmed"], identity["space"]).to_dict()
    log(f"result: {summary['verdict']}")
    return summary


def confirmation(vanilla: list[float], tuned: list[float], candidate: dict, settings) -> dict:
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


def _result_config(candidate: RescaleConfig | None, confirmed: bool, space: dict) -> RescaleConfig:
    """The candidate if confirmed, else vanilla: the candidate's heads with gains of 1 (or, without one, a
    setting that selects no head)."""
    if candidate is not None and confirmed:
        return candidate
    if candidate is not None:
        return replace(candidate, g_perc=1.0, g_reas=1.0, layer_gains=None)
    return RescaleConfig(0, space["num_layers"] - 1, 1.0, 0.0, query_tokens=space["query_tokens"])


def _candidate(trials: list[dict]) -> dict | None:
    """The best complete trial: highest value, then fewer heads rescaled, then the earlier one."""
    complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None and t.get("config")]
    if not complete:
        return None
    return max(complete, key=lambda t: (t["value"], -t["share_rescaled"], -t["number"]))


def _trial_row(trial) -> dict:
    attrs = trial.user_attrs
    seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
               if trial.datetime_complete and trial.datetime_start else None)
    return {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value, "params": trial.params,
            "config": attrs.get("config"), "share_rescaled": attrs.get("share_rescaled", 0.0),
            "heads_key": attrs.get("heads_key"), "items": max(trial.intermediate_values, default=None),
            "seconds": seconds, **{k: attrs[k] for k in ("same_as", "infeasible", "retry_of", "vanilla_equivalent")
                                   if k in attrs}}


def _importances(study, fewest: int = 10) -> dict | None:
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


def _trial_span(trials) -> float | None:
    """Seconds from the first trial's start to the last one's end: the study's trial phase, all workers."""
    times = [(t.datetime_start, t.datetime_complete) for t in trials if t.datetime_start and t.datetime_complete]
    return (max(e for _, e in times) - min(s for s, _ in times)).total_seconds() if times else None


def write(summary: dict, out: Path, ratios: torch.Tensor, model_type: str | None) -> list[Path]:
    """Every output of `fheads tune` under `out`, each written whole or not at all."""
    result = RescaleConfig.from_dict(summary["result"])
    heads = identify_heads(ratios, result, model_type)
    heads.num_samples = summary["calibration"]["items"]
    settings = {"config": summary["result"], "confirmed": summary["confirmed"], "verdict": summary["verdict"],
                "candidate": (summary["candidate"] or {}).get("config"), "confirmation": summary["confirmation"],
                "tuned_on": f"{summary['split']} search part ({summary['search_items']} items), confirmed on its "
                            f"held-out part ({summary['confirm_items']} items)",
                "calibrated_on": summary["calibration"], "study": summary["study"]}
    written = [_atomic(out / "tune.json", json.dumps(summary, indent=1, default=str) + "\n"),
               _atomic(out / "settings.json", json.dumps(settings, indent=1) + "\n")]
    if summary["candidate"]:  # the best setting whether confirmed or not: to look at on test, not to ship
        candidate = {"config": summary["candidate"]["config"], "confirmed": summary["confirmed"],
                     "note": "the study's best setting on the search part; settings.json holds the result"}
        written.append(_atomic(out / "candidate.json", json.dumps(candidate, indent=1) + "\n"))
    tmp = out / "heads.json.tmp"
    heads.save(tmp)
    os.replace(tmp, out / "heads.json")
    written.append(out / "heads.json")
    text = markdown(summary)
    if plotting.available():
        trials, layers = summary["trials"], summary["space"]["num_layers"]
        written += [figures.tune_bands(trials, layers, out / "tune_bands.png"),
                    figures.tune_gains(trials, out / "tune_gains.png"),
                    figures.tune_shares(trials, out / "tune_shares.png")]
        if summary["importances"]:
            written.append(figures.tune_importances(summary["importances"], out / "tune_importances.png"))
    else:
        text += f"\n{plotting.MISSING}\n"
    written.append(_atomic(out / "tune.md", text))
    return written


def _atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _calibration_text(calibration: dict) -> str:
    split = calibration.get("split")
    where = calibration.get("data") or ("the search part" if split == "search part" else f"the {split} split")
    return f"{where} ({calibration['items']} items)"


def markdown(summary: dict) -> str:
    counts = summary["counts"]
    lines = [f"# Tuning study `{summary['study']}`", "",
             f"Model `{summary['model']}`, benchmark {summary['benchmark']}, split {summary['split']}: "
             f"{summary['search_items']} search items, {summary['confirm_items']} held-out confirmation items; "
             f"S_v calibrated once on {_calibration_text(summary['calibration'])}. The test split was not read.", "",
             f"**Result: {summary['verdict']}.**", "",
             f"Trials: {summary['finished']} finished ({counts['complete']} complete, {counts['pruned']} pruned), "
             f"{counts['fail']} failed; {summary['evaluated_maps']} distinct head maps evaluated on "
             f"{summary['items_evaluated']} items in all.", ""]
    if summary["candidate"]:
        cand = summary["candidate"]
        lines += [f"Best on the search part: trial {cand['number']}, gain {cand['value']:+.4f} "
                  f"({cand['share_rescaled']:.1%} of heads rescaled): `{json.dumps(cand['config'])}`", ""]
    conf = summary["confirmation"]
    if conf:
        lines += ["| part | items | vanilla | tuned | gain | 95% CI | McNemar p |", "|---|---|---|---|---|---|---|",
                  f"| search | {summary['search_items']} | | | {conf['search_gain']:+.1%} | | |",
                  f"| confirmation | {conf['items']} | {conf['vanilla_accuracy']:.1%} | {conf['tuned_accuracy']:.1%} | "
                  f"{conf['gain']:+.1%} | {conf['ci'][0]:+.1%} to {conf['ci'][1]:+.1%} | "
                  f"{conf['mcnemar']['p']:.3g} |", ""]
    lines += ["Top trials by search gain (distinct head maps; later trials with the same map are not evaluated again):",
              "", "| trial | gain | items | heads rescaled | settings |", "|---|---|---|---|---|"]
    top = sorted((t for t in summary["trials"] if t["state"] == "complete" and t["value"] is not None
                  and t.get("same_as") is None), key=lambda t: -t["value"])[:10]
    lines += [f"| {t['number']} | {t['value']:+.4f} | {t['items']} | {t['share_rescaled']:.1%} | "
              f"`{json.dumps(t['params'])}` |"
              for t in top]
    if summary["importances"]:
        importances = ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items())
        lines += ["", f"Parameter importances (Optuna): {importances}"]
    lines += ["", "Figures: tune_bands.png (band ends -> best search gain), tune_gains.png, tune_shares.png, "
              "tune_importances.png. settings.json and heads.json hold the result.", ""]
    return "\n".join(lines)

