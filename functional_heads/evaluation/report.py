"""`fheads report`: methods side by side on the same items, from run folders.

Per benchmark: each method's metrics (the benchmark's own, with a 95% bootstrap interval on accuracy),
per-category accuracy, a McNemar test against vanilla on the paired items, seconds per item and its
ratio to vanilla. The family of a report's tests is every method-vs-vanilla accuracy test in it, across
its benchmarks; each p comes with its Holm-adjusted value, which controls the family-wise error rate.
Per-category differences are exploratory: they are not tested. Runs of one benchmark must cover the same items with the same prompts, or the report
refuses (unless told to keep only the items every run holds).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

from ..utils import plotting
from ..utils.errors import UserError
from ..utils.files import atomic_write_text
from . import figures
from .benchmarks import get_benchmark
from .methods import method_names
from .runs import SPEC, read_settings, run_records
from .stats import holm, mcnemar

# beside the latency column: the times are one run's each, on whatever else the machine was doing
LATENCY_CAVEAT = ("s/item and latency x are wall-clock times of single runs on a machine that may be shared: not "
                  "speed measurements (identical code has measured 0.5x to 4x under load). For speed, use the "
                  "repository's benchmarks/ (benchmarks/overhead.py: the method's overhead, under control).")
_NOT_METRICS = ("accuracy", "ci95", "categories", "seconds_per_item", "latency_ratio", "unusable_items", "folder",
                "mcnemar_vs_vanilla", "heads_rescaled", "n")


def load_runs(folder: str | Path) -> list[dict]:
    """Every run folder under `folder` (or `folder` itself) that holds records: settings and records."""
    folder = Path(folder)
    specs = [folder / SPEC] if (folder / SPEC).is_file() else sorted(folder.glob(f"*/{SPEC}"))
    runs = []
    for spec in specs:
        records = run_records(spec.parent)  # every rank's results file
        if records:  # a run killed before its first batch holds nothing to compare
            runs.append({"folder": spec.parent, "settings": read_settings(spec), "records": records})
    if not runs:
        raise UserError(f"No run folders with results under {folder}: run `fheads eval --out {folder}` first.")
    return runs


def build_report(folder: str | Path, common_items: bool = False) -> dict:
    by_benchmark = defaultdict(list)
    for run in load_runs(folder):
        by_benchmark[run["settings"]["benchmark"]].append(run)
    return correct_for_multiplicity({name: compare(name, runs, common_items)
                                     for name, runs in sorted(by_benchmark.items())})


def correct_for_multiplicity(report: dict) -> dict:
    """Adds `p_holm` to every method-vs-vanilla test of the report: Holm over all of them (the family)."""
    tests = [m["mcnemar_vs_vanilla"] for result in report.values() for m in result["methods"].values()
             if m.get("mcnemar_vs_vanilla")]
    for test, adjusted in zip(tests, holm([t["p"] for t in tests])):
        test["p_holm"] = adjusted
    return report


def compare(name: str, runs: list[dict], common_items: bool = False) -> dict:
    """One benchmark's runs ({folder, settings, records}) side by side on the same items."""
    order = {method: i for i, method in enumerate(method_names())}
    runs = sorted(runs, key=lambda r: order.get(r["settings"]["method"], len(order)))
    methods = [r["settings"]["method"] for r in runs]
    for method in sorted({m for m in methods if methods.count(m) > 1}):
        same = [r for r in runs if r["settings"]["method"] == method]
        folders = ", ".join(str(r["folder"]) for r in same)
        raise UserError(f"{name}: several runs of '{method}' with different settings ({folders}): "
                        f"{setting_differences(same)}. A report compares one run per method: move the others to "
                        "another folder, or rerun with the same settings as the rest.")
    models = {json.dumps(r["settings"].get("model"), sort_keys=True) for r in runs}
    if len(models) > 1:
        folders = ", ".join(str(r["folder"]) for r in runs)
        raise UserError(f"{name}: the runs were made on different models ({folders}): "
                        f"{setting_differences(runs, only='model')}. A report compares the methods of one model: "
                        "give each model's runs a folder of their own.")
    answered = [{i: r for i, r in run["records"].items() if r.get("error") is None} for run in runs]
    items = [set(a) for a in answered]
    shared = set.intersection(*items)
    if any(i != shared for i in items) and not common_items:
        sizes = ", ".join(f"{m}: {len(i)}" for m, i in zip(methods, items))
        raise UserError(f"{name}: the runs answered different items ({sizes}). Finish them, or pass "
                        "--common-items to compare on the items all of them answered.")
    for method, records in zip(methods, answered):
        reference = answered[0]
        changed = [i for i in shared if records[i].get("prompt_sha") != reference[i].get("prompt_sha")]
        if changed:
            raise UserError(f"{name}: '{method}' used other prompts than '{methods[0]}' on {len(changed)} items "
                            f"(e.g. {changed[0]}); runs with different prompts are not comparable.")
    benchmark = get_benchmark(name, **{k: v for k, v in runs[0]["settings"].get("options", {}).items()})
    ids = sorted(shared)
    example_prompt = next((r.get("prompt") for r in answered[0].values() if r.get("prompt")), None)
    result = {"items": len(ids), "instruction": benchmark.instruction or None, "example_prompt": example_prompt,
              "methods": {}}
    vanilla = answered[methods.index("vanilla")] if "vanilla" in methods else None
    for method, run, records in zip(methods, runs, answered):
        rows = [records[i] for i in ids]
        entry = benchmark.metrics(rows)
        entry["n"] = len(rows)
        entry["seconds_per_item"] = sum(r["seconds"] for r in rows) / len(rows) if rows else None
        shares = [r["heads_rescaled"] for r in rows if r.get("heads_rescaled") is not None]
        entry["heads_rescaled"] = sum(shares) / len(shares) if shares else None
        entry["unusable_items"] = sum(r.get("error") is not None for r in run["records"].values())
        entry["folder"] = str(run["folder"])
        if vanilla is not None and method != "vanilla" and rows:
            entry["mcnemar_vs_vanilla"] = mcnemar([vanilla[i]["score"] >= 1 for i in ids], [r["score"] >= 1 for r in rows])
            base = sum(vanilla[i]["seconds"] for i in ids) / len(ids)
            entry["latency_ratio"] = entry["seconds_per_item"] / base if base else None
        result["methods"][method] = entry
    return result


def setting_differences(runs: list[dict], only: str | None = None) -> str:
    """The settings (run.json, nested keys joined by dots; with `only`, those under it) whose values differ
    between runs, each with its value per run folder: what makes them different runs."""
    flat = [_flatten(r["settings"]) for r in runs]
    keys = sorted({k for f in flat for k in f if only is None or k == only or k.startswith(f"{only}.")})
    parts = []
    for key in keys:
        values = [_shown(f[key]) if key in f else "unset" for f in flat]
        if len(set(values)) > 1:
            parts.append(f"{key} is " + ", ".join(f"{v} in {Path(r['folder']).name}" for v, r in zip(values, runs)))
    return "; ".join(parts) or "no setting differs"


def _flatten(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value) -> str:
    """A setting's value in a message: whole when short, else its start and a digest (head gains are long)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else f"{text[:30]}... (#{hashlib.sha1(text.encode()).hexdigest()[:6]})"


def report_markdown(report: dict) -> str:
    """Per benchmark: one row per method (accuracy with its interval, the benchmark's own metrics, heads
    rescaled, the paired test against vanilla, time), then accuracy per category."""
    tests = sum(bool(m.get("mcnemar_vs_vanilla")) for r in report.values() for m in r["methods"].values())
    lines = [f"Tests against vanilla: exact McNemar on the paired items; Holm p corrects for the family of the "
             f"{tests} method-vs-vanilla tests of this report (family-wise error rate).", ""] if tests > 1 else []
    for name, result in report.items():
        methods = result["methods"]
        metrics = sorted({k for m in methods.values() for k, v in m.items()
                          if isinstance(v, float) and k not in _NOT_METRICS})
        lines += [f"## {name} ({result['items']} items)", "", _prompt_line(result), "",
                  "| method | accuracy [95% CI] | " + "".join(f"{k} | " for k in metrics)
                  + "heads rescaled | vs vanilla (+/-, McNemar p, Holm p) | s/item | latency x |",
                  "|---|---|" + "---|" * len(metrics) + "---|---|---|---|"]
        for method, m in methods.items():
            low, high = m.get("ci95") or (None, None)
            test = m.get("mcnemar_vs_vanilla")
            versus = f"+{test['b_only']} / -{test['a_only']}, p={test['p']:.3g}" if test else ""
            if test and "p_holm" in test:
                versus += f", Holm p={test['p_holm']:.3g}"
            lines.append(f"| {method} | {_pct(m.get('accuracy'))} [{_pct(low)}, {_pct(high)}] | "
                         + "".join(f"{_pct(m.get(k))} | " for k in metrics)
                         + f"{_pct(m.get('heads_rescaled'))} | {versus} | {_num(m.get('seconds_per_item'), 4)} | "
                         f"{_num(m.get('latency_ratio'))} |")
        if any(m.get("latency_ratio") is not None for m in methods.values()):
            lines += ["", LATENCY_CAVEAT]
        unusable = {method: m["unusable_items"] for method, m in methods.items() if m.get("unusable_items")}
        if unusable:
            lines += ["", "Unusable items (recorded with their reason, left out above): "
                      + ", ".join(f"{method} {n}" for method, n in unusable.items())]
        lines.append("")
        categories = sorted({c for m in methods.values() for c in m.get("categories", {})})
        if categories:
            lines += ["Accuracy per category (exploratory: differences between methods here are not tested):", "", "| method | " + " | ".join(categories) + " |",
                      "|---|" + "---|" * len(categories)]
            for method, m in methods.items():
                lines.append(f"| {method} | " + " | ".join(_pct(m.get("categories", {}).get(c)) for c in categories) + " |")
            lines.append("")
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> list[Path]:
    """report.md, report.json and (with matplotlib) report.png in `out`; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", report_markdown(report))
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=str))
    written = [out / "report.md", out / "report.json"]
    if plotting.available():
        written.append(figures.accuracy_bars(report, out / "report.png"))
    return written


def _prompt_line(result: dict) -> str:
    instruction = f' + "{result["instruction"]}"' if result.get("instruction") else ""
    example = (result.get("example_prompt") or "").replace("\n", " / ")[:160]
    return f"Prompt: the question{instruction}; e.g. `{example}`"


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _num(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"
