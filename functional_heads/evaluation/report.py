"""`fheads report`: methods side by side on the same items, from run folders.

Per benchmark: each method's metrics (the benchmark's own, with a 95% bootstrap interval on accuracy),
per-category accuracy, a McNemar test against vanilla on the paired items, seconds per item and its
ratio to vanilla. Runs of one benchmark must cover the same items with the same prompts, or the report
refuses (unless told to keep only the items every run holds).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .benchmarks import get_benchmark
from .methods import METHODS
from .runs import RESULTS, SPEC, read_records
from .stats import mcnemar

_ORDER = {name: i for i, name in enumerate(METHODS)}


def load_runs(folder: str | Path) -> list[dict]:
    """Every run folder under `folder` (or `folder` itself): settings and records."""
    folder = Path(folder)
    specs = [folder / SPEC] if (folder / SPEC).is_file() else sorted(folder.glob(f"*/{SPEC}"))
    if not specs:
        raise ValueError(f"No run folders (with {SPEC}) under {folder}: run `fheads eval --out {folder}` first.")
    runs = []
    for spec in specs:
        settings = json.loads(spec.read_text())["settings"]
        runs.append({"folder": spec.parent, "settings": settings, "records": read_records(spec.parent / RESULTS)})
    return runs


def build_report(folder: str | Path, common_items: bool = False) -> dict:
    by_benchmark = defaultdict(list)
    for run in load_runs(folder):
        by_benchmark[run["settings"]["benchmark"]].append(run)
    return {name: _compare(name, runs, common_items) for name, runs in sorted(by_benchmark.items())}


def _compare(name: str, runs: list[dict], common_items: bool) -> dict:
    runs = sorted(runs, key=lambda r: _ORDER.get(r["settings"]["method"], len(_ORDER)))
    methods = [r["settings"]["method"] for r in runs]
    if len(set(methods)) < len(methods):
        raise ValueError(f"{name}: several runs of the same method ({', '.join(str(r['folder']) for r in runs)}); "
                         "report one folder per setting.")
    answered = [{i: r for i, r in run["records"].items() if r.get("error") is None} for run in runs]
    items = [set(a) for a in answered]
    shared = set.intersection(*items)
    if any(i != shared for i in items) and not common_items:
        sizes = ", ".join(f"{m}: {len(i)}" for m, i in zip(methods, items))
        raise ValueError(f"{name}: the runs answered different items ({sizes}). Finish them, or pass "
                         "--common-items to compare on the items all of them answered.")
    for method, records in zip(methods, answered):
        reference = answered[0]
        changed = [i for i in shared if records[i].get("prompt_sha") != reference[i].get("prompt_sha")]
        if changed:
            raise ValueError(f"{name}: '{method}' used other prompts than '{methods[0]}' on {len(changed)} items "
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
        entry["seconds_per_item"] = sum(r["seconds"] for r in rows) / len(rows) if rows else None
        entry["unusable_items"] = sum(r.get("error") is not None for r in run["records"].values())
        entry["folder"] = str(run["folder"])
        if vanilla is not None and method != "vanilla" and rows:
            entry["mcnemar_vs_vanilla"] = mcnemar([vanilla[i]["score"] >= 1 for i in ids], [r["score"] >= 1 for r in rows])
            base = sum(vanilla[i]["seconds"] for i in ids) / len(ids)
            entry["latency_ratio"] = entry["seconds_per_item"] / base if base else None
        result["methods"][method] = entry
    return result


def markdown(report: dict) -> str:
    lines = []
    for name, result in report.items():
        lines += [f"## {name} ({result['items']} items)", "",
                  _prompt_line(result), "",
                  "| method | accuracy | 95% CI | other metrics | p vs vanilla | s/item | latency x |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for method, m in result["methods"].items():
            low, high = m.get("ci95") or (None, None)
            extra = ", ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float)
                              and k not in ("accuracy", "seconds_per_item", "latency_ratio"))
            p = m.get("mcnemar_vs_vanilla", {}).get("p")
            lines.append(f"| {method} | {_pct(m.get('accuracy'))} | {_pct(low)}-{_pct(high)} | {extra} | "
                         f"{'' if p is None else f'{p:.3g}'} | {_num(m.get('seconds_per_item'))} | "
                         f"{_num(m.get('latency_ratio'))} |")
        lines.append("")
        categories = sorted({c for m in result["methods"].values() for c in m.get("categories", {})})
        if categories:
            lines += ["Accuracy per category:", "", "| method | " + " | ".join(categories) + " |",
                      "|---|" + "---|" * len(categories)]
            for method, m in result["methods"].items():
                lines.append(f"| {method} | " + " | ".join(_pct(m.get("categories", {}).get(c)) for c in categories) + " |")
            lines.append("")
    return "\n".join(lines)


def _prompt_line(result: dict) -> str:
    instruction = f' + "{result["instruction"]}"' if result.get("instruction") else ""
    example = (result.get("example_prompt") or "").replace("\n", " / ")[:160]
    return f"Prompt: the question{instruction}; e.g. `{example}`"


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _num(value) -> str:
    return "" if value is None else f"{value:.3f}"


def plot(report: dict, path: Path) -> Path:
    """One figure: accuracy with its 95% interval per benchmark and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report)
    methods = sorted({m for r in report.values() for m in r["methods"]}, key=lambda m: (m != "vanilla", m))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(names) * max(1, len(methods) / 3)), 3.5))
    for k, method in enumerate(methods):
        xs, ys, errs = [], [], [[], []]
        for i, name in enumerate(names):
            m = report[name]["methods"].get(method)
            if m is None or m.get("accuracy") is None:
                continue
            low, high = m.get("ci95") or (m["accuracy"], m["accuracy"])
            xs.append(i + (k - (len(methods) - 1) / 2) * width)
            ys.append(m["accuracy"])
            errs[0].append(max(0.0, m["accuracy"] - (low if low is not None else m["accuracy"])))
            errs[1].append(max(0.0, (high if high is not None else m["accuracy"]) - m["accuracy"]))
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=method)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=min(len(methods), 4))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
