"""Every figure the project draws, on one matplotlib set-up (the `plot` extra).

`available()` says whether matplotlib is installed, so a command can check before its work and skip its
figures with a note instead of failing at the end.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MISSING = "figures skipped: matplotlib is not installed (pip install 'functional-heads[plot]')"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


@contextmanager
def figure(path: Path, size: tuple[float, float]) -> Iterator:
    """Yields (fig, ax) and saves the figure to `path` on exit (Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        yield fig, ax
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def ratios_heatmap(heads, path: Path) -> Path:
    """S_v per layer and head of a static head map, its perception (P) and reasoning (R) heads marked."""
    with figure(path, (6, 4.5)) as (fig, ax):
        image = ax.imshow(heads.ratios.numpy(), cmap="viridis", aspect="auto")
        for layer, head in heads.perception.nonzero().tolist():
            ax.text(head, layer, "P", ha="center", va="center", color="white", fontweight="bold")
        for layer, head in heads.reasoning.nonzero().tolist():
            ax.text(head, layer, "R", ha="center", va="center", color="red", fontweight="bold")
        ax.set_xlabel("head")
        ax.set_ylabel("layer (from 0)")
        ax.set_title("S_v: attention to the image at the last prompt token\n(P perception, R reasoning heads)")
        fig.colorbar(image, ax=ax, label="S_v")
    return path


def ratios_by_layer(heads, path: Path, title: str = "Attention to the image by depth") -> Path:
    """Mean S_v per layer with its spread over heads."""
    ratios = heads.ratios.numpy()
    mean, spread = ratios.mean(1), ratios.std(1)
    with figure(path, (6, 3.5)) as (fig, ax):
        layers = range(len(mean))
        ax.plot(layers, mean, "o-", label="mean over heads")
        ax.fill_between(layers, mean - spread, mean + spread, alpha=0.2, label="+- 1 std over heads")
        ax.set_xlabel("layer (from 0)")
        ax.set_ylabel("S_v")
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.legend()
    return path


def attention_along_chain(summaries: dict[str, dict], path: Path) -> Path:
    """Mean S_v of the shallow and deep halves of the layers at i* and along each model's answer
    (`evaluation.premise.summary` per model)."""
    with figure(path, (7, 3.5)) as (fig, ax):
        for colour, (name, summary) in enumerate(summaries.items()):
            positions = range(len(summary["positions"]))
            for half, style in (("shallow_half", "o-"), ("deep_half", "s--")):
                ax.plot(positions, summary[half], style, color=f"C{colour}", label=f"{name}: {half.split('_')[0]} layers")
        ax.set_xticks(list(positions), [p.split(" (")[0].replace(" of the chain", "") for p in summary["positions"]])
        ax.set_xlabel("query position (i*, then the share of the model's own answer)")
        ax.set_ylabel("mean S_v")
        ax.set_title("Attention to the image along the answer")
        ax.legend(fontsize=7)
    return path


def accuracy_bars(report: dict, path: Path) -> Path:
    """Accuracy with its 95% interval per benchmark and method, from `evaluation.report.build_report`."""
    names = list(report)
    methods = list(dict.fromkeys(m for r in report.values() for m in r["methods"]))
    width = 0.8 / max(len(methods), 1)
    with figure(path, (max(4, 1.6 * len(names) * max(1, len(methods) / 3)), 3.5)) as (fig, ax):
        for k, method in enumerate(methods):
            xs, ys, errs = [], [], [[], []]
            for i, name in enumerate(names):
                m = report[name]["methods"].get(method)
                if m is None or m.get("accuracy") is None:
                    continue
                low, high = [m["accuracy"] if v is None else v for v in (m.get("ci95") or (None, None))]
                xs.append(i + (k - (len(methods) - 1) / 2) * width)
                ys.append(m["accuracy"])
                errs[0].append(max(0.0, m["accuracy"] - low))
                errs[1].append(max(0.0, high - m["accuracy"]))
            ax.bar(xs, ys, width, yerr=errs, capsize=2, label=method)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("accuracy (95% CI)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, ncol=min(len(methods), 4))
    return path


def _complete(trials: list[dict]) -> list[dict]:
    return [t for t in trials if t["state"] == "complete" and t["value"] is not None and t.get("config")]


def tune_bands(trials: list[dict], num_layers: int, path: Path) -> Path:
    """The paper's band heatmap from a study: perception band end x reasoning band start -> the best search
    gain of the complete trials with those bands (blank: no trial)."""
    import numpy as np

    grid = np.full((num_layers, num_layers), np.nan)
    for t in _complete(trials):
        cell = (t["config"]["reas_first_layer"], t["config"]["perc_last_layer"])
        grid[cell] = np.nanmax([grid[cell], 100 * t["value"]])
    with figure(path, (5.5, 4.5)) as (fig, ax):
        image = ax.imshow(grid, cmap="RdBu", origin="lower", vmin=-np.nanmax(np.abs(grid), initial=1),
                          vmax=np.nanmax(np.abs(grid), initial=1))
        ax.set_xlabel("perception band: last layer")
        ax.set_ylabel("reasoning band: first layer")
        ax.set_title("Best search gain over vanilla (points)")
        fig.colorbar(image, ax=ax, label="gain (points)")
    return path


def tune_gains(trials: list[dict], path: Path) -> Path:
    """Search gain against each class's gain: the trials, and their mean per gain value."""
    with figure(path, (6, 3.5)) as (fig, ax):
        for name, colour in (("g_perc", "tab:blue"), ("g_reas", "tab:orange")):
            points = [(t["config"][name], 100 * t["value"]) for t in _complete(trials) if name in t["params"]]
            if not points:
                continue
            ax.scatter(*zip(*points), s=10, alpha=0.4, color=colour)
            means = {g: [v for x, v in points if x == g] for g in sorted({x for x, _ in points})}
            ax.plot(list(means), [sum(v) / len(v) for v in means.values()], "o-", color=colour, label=f"{name} (mean)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("gain")
        ax.set_ylabel("search gain over vanilla (points)")
        ax.legend()
    return path


def tune_shares(trials: list[dict], path: Path) -> Path:
    """Search gain against the share of heads rescaled (the paper: about 6% best, 18% harmful)."""
    import numpy as np

    points = [(100 * t["share_rescaled"], 100 * t["value"]) for t in _complete(trials)]
    with figure(path, (6, 3.5)) as (fig, ax):
        if points:
            shares, gains = map(np.asarray, zip(*points))
            ax.scatter(shares, gains, s=10, alpha=0.4)
            edges = np.linspace(0, max(shares.max(), 1e-9), 9)
            bins = np.digitize(shares, edges[1:-1])
            centres = [(edges[b] + edges[b + 1]) / 2 for b in range(8) if (bins == b).any()]
            ax.plot(centres, [gains[bins == b].mean() for b in range(8) if (bins == b).any()], "o-", label="mean per bin")
            ax.legend()
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("heads rescaled (% of all heads)")
        ax.set_ylabel("search gain over vanilla (points)")
    return path


def tune_importances(importances: dict[str, float], path: Path) -> Path:
    """Optuna's parameter importances of a study."""
    names = list(importances)[::-1]
    with figure(path, (5, 0.4 * len(names) + 1.2)) as (fig, ax):
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel("importance (Optuna)")
    return path
