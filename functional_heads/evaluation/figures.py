"""Figures of S_v, of the premise and of reports."""

from __future__ import annotations

from pathlib import Path

from ..utils.plotting import figure


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
    """Accuracy with its 95% interval per benchmark and method (a point and its error bars), from
    `evaluation.report.build_report`. The y axis spans the intervals, not 0 to 1, so a difference of one
    point shows; its label says where it starts. The legend sits outside the axes, whatever the methods."""
    from matplotlib.ticker import PercentFormatter

    names = list(report)
    methods = list(dict.fromkeys(m for r in report.values() for m in r["methods"]))
    width = 0.8 / max(len(methods), 1)
    ends = []
    with figure(path, (max(4.0, 1.6 * len(names) * max(1, len(methods) / 3)) + 1.6, 3.5)) as (fig, ax):
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
                ends += [min(low, m["accuracy"]), max(high, m["accuracy"])]
            ax.errorbar(xs, ys, yerr=errs, fmt="o", capsize=3, label=method)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.5, len(names) - 0.5)
        if ends:
            pad = max(0.01, 0.1 * (max(ends) - min(ends)))
            ax.set_ylim(max(0.0, min(ends) - pad), min(1.0, max(ends) + pad))
        bottom = ax.get_ylim()[0]
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylabel("accuracy, 95% CI" + (f"\n(axis from {bottom:.0%}, not 0)" if bottom > 0.005 else ""))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return path


def verify_bars(result: dict, path: Path) -> Path:
    """`fheads verify`: per outcome, the change against vanilla (points, 95% CI) of each class's heads masked
    (solid) beside its random controls of the same layers (hatched: the draws pooled, each draw a dot)."""
    outcomes = result["outcomes"]
    classes = [c for c, e in result["classes"].items() if e.get("heads")]
    bars = [(c, kind) for c in classes for kind in ("class", "random")]
    width = 0.8 / max(len(bars), 1)
    with figure(path, (max(5.0, 1.8 * len(outcomes) + 1), 3.8)) as (fig, ax):
        for k, (head_class, kind) in enumerate(bars):
            entry = result["classes"][head_class]
            changes = result["conditions"][entry["condition"]]["vs_vanilla"] if kind == "class" else \
                entry["random_pooled"]["vs_vanilla"]
            xs = [i + (k - (len(bars) - 1) / 2) * width for i in range(len(outcomes))]
            means = [100 * changes[o]["mean"] for o in outcomes]
            errs = [[max(0.0, m - 100 * changes[o]["ci"][0]) for m, o in zip(means, outcomes)],
                    [max(0.0, 100 * changes[o]["ci"][1] - m) for m, o in zip(means, outcomes)]]
            colour = f"C{classes.index(head_class)}"
            label = f"{head_class} heads masked" if kind == "class" else \
                f"as many random heads of its layers ({len(entry['draws'])} draws: dots)"
            ax.bar(xs, means, width, yerr=errs, capsize=2, color=colour, alpha=1.0 if kind == "class" else 0.45,
                   hatch=None if kind == "class" else "//", edgecolor=colour, label=label)
            if kind == "random":
                for x, o in zip(xs, outcomes):
                    draws = [100 * result["conditions"][d]["vs_vanilla"][o]["mean"] for d in entry["draws"]]
                    ax.plot([x] * len(draws), draws, "k.", markersize=3)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(outcomes)), [o if o == "accuracy" else f"{o} rate" for o in outcomes])
        ax.set_ylabel("change against vanilla (points, 95% CI)")
        ax.set_title(f"Masking each class against random heads of the same layers ({result['items']} items)")
        ax.legend(fontsize=7)
    return path
