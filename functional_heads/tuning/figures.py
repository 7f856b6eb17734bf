"""Figures of a tuning study: band ends, gains, shares and parameter importances."""

from __future__ import annotations

from pathlib import Path

from ..utils.plotting import figure


def _complete(trials: list[dict]) -> list[dict]:
    return [t for t in trials if t["state"] == "complete" and t["value"] is not None and t.get("config")]


UNTRIED = {"facecolor": "0.8", "edgecolor": "0.55", "hatch": "///"}  # unlike any gain: a gain of 0 is white


def tune_bands(trials: list[dict], num_layers: int, path: Path) -> Path:
    """The paper's band heatmap from a study: perception band end x reasoning band start -> the best search
    gain of the complete trials with those bands; cells no trial reached are grey and hatched."""
    import numpy as np
    from matplotlib.patches import Patch, Rectangle

    grid = np.full((num_layers, num_layers), np.nan)
    for t in _complete(trials):
        cell = (t["config"]["reas_first_layer"], t["config"]["perc_last_layer"])
        grid[cell] = np.nanmax([grid[cell], 100 * t["value"]])
    limit = np.nanmax(np.abs(grid), initial=1)
    with figure(path, (5.5, 4.5)) as (fig, ax):
        # beneath the image, whose untried (NaN) cells are transparent
        ax.add_patch(Rectangle((-0.5, -0.5), num_layers, num_layers, linewidth=0, zorder=0, **UNTRIED))
        image = ax.imshow(grid, cmap="RdBu", origin="lower", vmin=-limit, vmax=limit, zorder=1)
        ax.legend(handles=[Patch(**UNTRIED, label="no trial")], loc="upper left", bbox_to_anchor=(0, -0.12),
                  fontsize=8, frameon=False)
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
        if ax.get_legend_handles_labels()[0]:  # no complete trial drew a gain: nothing to name
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
