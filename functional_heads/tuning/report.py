"""A study's files, from its summary (`summary.summarize`): tune.json (the summary), tune.md, settings.json,
heads.json, candidate.json and the PNG figures. Formats and writes; computes no score.

settings.json is read by `fheads calibrate --settings`, `RescaleConfig.resolve(settings=...)` and the demo;
heads.json is a head map (the result's heads on the study's calibrated S_v) for `fheads eval --heads`,
`fheads export` and `HeadMap.load`. When nothing is confirmed, both hold vanilla: gains of 1.
candidate.json holds the study's best setting whether confirmed or not (to see what it does on test).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core.config import RescaleConfig
from ..core.heads import identify_heads
from ..utils import plotting
from ..utils.files import atomic_path, atomic_write_text
from . import figures


def write(summary: dict, out: Path, ratios: torch.Tensor, model_type: str | None) -> list[Path]:
    """Every output of `fheads tune` under `out`, each written whole or not at all."""
    result = RescaleConfig.from_dict(summary["result"])
    heads = identify_heads(ratios, result, model_type, warn=False)  # a trial's map; tune.md gives its share
    heads.num_samples = summary["calibration"]["items"]
    settings = {"config": summary["result"], "confirmed": summary["confirmed"], "verdict": summary["verdict"],
                "candidate": (summary["candidate"] or {}).get("config"), "confirmation": summary["confirmation"],
                "tuned_on": f"{summary['split']} search part ({summary['search_items']} items), confirmed on "
                            + _confirmed_on(summary),
                "calibrated_on": summary["calibration"], "study": summary["study"]}
    written = [atomic_write_text(out / "tune.json", json.dumps(summary, indent=1, default=str) + "\n"),
               atomic_write_text(out / "settings.json", json.dumps(settings, indent=1) + "\n")]
    if summary["candidate"]:  # the best setting whether confirmed or not: to look at on test, not to ship
        candidate = {"config": summary["candidate"]["config"], "confirmed": summary["confirmed"],
                     "note": "the study's best setting on the search part; settings.json holds the result"}
        written.append(atomic_write_text(out / "candidate.json", json.dumps(candidate, indent=1) + "\n"))
    with atomic_path(out / "heads.json") as tmp:
        heads.save(tmp)
    written.append(out / "heads.json")
    drawn = []
    if plotting.available():
        trials, layers = summary["trials"], summary["space"]["num_layers"]
        drawn += [figures.tune_bands(trials, layers, out / "tune_bands.png"),
                  figures.tune_gains(trials, out / "tune_gains.png"),
                  figures.tune_shares(trials, out / "tune_shares.png")]
        if summary["importances"]:
            drawn.append(figures.tune_importances(summary["importances"], out / "tune_importances.png"))
    text = study_markdown(summary, [path.name for path in drawn])
    if not plotting.available():
        text += f"\n{plotting.MISSING}\n"
    written.append(atomic_write_text(out / "tune.md", text))
    return written + drawn


def _confirmed_on(summary: dict) -> str:
    """The held-out items the confirmation answered: all of the part, or as many as its size plan needed."""
    used, held_out = (summary["confirmation"] or {}).get("items"), summary["confirm_items"]
    if used is not None and used < held_out:
        return f"{used} of its {held_out} held-out items (as many as --detect needs)"
    return f"its held-out part ({held_out} items)"


def _calibration_text(calibration: dict) -> str:
    split = calibration.get("split")
    where = calibration.get("data") or ("the search part" if split == "search part" else f"the {split} split")
    return f"{where} ({calibration['items']} items)"


FIGURE_NOTES = {"tune_bands.png": "band ends -> best search gain; hatched: no trial",
                "tune_gains.png": "search gain per gain value", "tune_shares.png": "search gain per share of heads",
                "tune_importances.png": "parameter importances"}


def study_markdown(summary: dict, figure_names: list[str] = ()) -> str:
    """tune.md: the result, the confirmation against vanilla, the top trials and the importances, and the
    figures drawn beside it (`figure_names`: only those written)."""
    counts = summary["counts"]
    lines = [f"# Tuning study `{summary['study']}`", "",
             f"Model `{summary.get('model_path', summary['model'])}`, benchmark {summary['benchmark']}, split {summary['split']}: "
             f"{summary['search_items']} search items, {summary['confirm_items']} held-out confirmation items; "
             f"S_v calibrated once on {_calibration_text(summary['calibration'])}. The test split was not read.", "",
             f"**Result: {summary['verdict']}.**", ""]
    planned = summary.get("plan_before_search") or {}
    if planned.get("warning"):
        lines += [f"Before the search: {planned['warning']}", ""]
    conf = summary["confirmation"]
    if conf and conf.get("plan"):
        sized = conf["plan"]
        lines += [f"Confirmation sized for a gain of {100 * sized['detect']:g} points (--detect): {sized['note']}; "
                  f"it answered {sized['items']} of the {sized['items_available']} held-out items.", ""]
    lines += [f"Trials: {summary['finished']} finished ({counts['complete']} complete, {counts['pruned']} pruned), "
              f"{counts['fail']} failed; {summary['evaluated_maps']} distinct head maps evaluated on "
              f"{summary['items_evaluated']} items in all.", ""]
    if summary["candidate"]:
        cand = summary["candidate"]
        lines += [f"Best on the search part: trial {cand['number']}, gain {cand['value']:+.4f} "
                  f"({cand['share_rescaled']:.1%} of heads rescaled): `{json.dumps(cand['config'])}`", ""]
    if conf:
        power = (f"{conf['detectable_gain']:+.1%}" if conf.get("detectable_gain") is not None else "")
        with_power = (conf.get("plan") or {}).get("power", 0.8)
        lines += [f"| part | items | vanilla | tuned | gain | 95% CI | McNemar p | confirms, with power {with_power} |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| search | {summary['search_items']} | | | {conf['search_gain']:+.1%} | | | |",
                  f"| confirmation | {conf['items']} | {conf['vanilla_accuracy']:.1%} | {conf['tuned_accuracy']:.1%} | "
                  f"{conf['gain']:+.1%} | {conf['ci'][0]:+.1%} to {conf['ci'][1]:+.1%} | "
                  f"{conf['mcnemar']['p']:.3g} | gains of {power} or more |", ""]
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
    if figure_names:
        lines += ["", "Figures: " + ", ".join(f"{name} ({FIGURE_NOTES[name]})" if name in FIGURE_NOTES else name
                                           for name in figure_names) + "."]
    lines += ["", "settings.json and heads.json hold the result.", ""]
    return "\n".join(lines)

