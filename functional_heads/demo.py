"""`fheads demo`: the whole method, end to end, on the bundled model and the `shapes` benchmark.

1. S_v on the calib split: heatmap (layers x heads, selected heads marked) and per-layer curve.
2. Settings: those chosen on the dev split and shipped with the model (`settings.json`).
3. Test split, side by side: vanilla, static (calibrated heads), dynamic (per input), perception-only and
   reasoning-only, with bootstrap intervals, failure-mode rates and a paired test against vanilla.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .bundled import bundled_model_path, bundled_settings
from .evaluation import shapes
from .evaluation.methods import method_context, static_map
from .evaluation.runner import answer
from .evaluation.stats import bootstrap_ci, mcnemar
from .heads import HeadMap, calibrate
from .loading import load_model, load_processor, prompt_batches

METHODS = ("vanilla", "static", "dynamic", "perception-only", "reasoning-only")  # no decoding baselines: see `fheads eval`


def calibration_batches(processor, batch_size: int = 32):
    """Processor inputs of the shapes calib split, the calibration set of the bundled model."""
    calib = list(shapes.items("calib"))
    return prompt_batches(processor, [it.scene.render() for it in calib], [it.question for it in calib], batch_size)


def _rescaled_share(name: str, heads: HeadMap, dynamic_shares: list[tuple[float, int]]) -> float:
    """Share of heads whose gain is not 1: per batch for dynamic, from the static map otherwise."""
    if dynamic_shares:
        return sum(share * n for share, n in dynamic_shares) / sum(n for _, n in dynamic_shares)
    static = static_map(name, heads)
    return 0.0 if static is None else (static.gains != 1).float().mean().item()


def summarize(items, outcomes, seconds: float, heads_share: float) -> dict:
    correct = [o.correct for o in outcomes]
    low, high = bootstrap_ci(correct)
    families = {}
    for family in shapes.FAMILIES:
        sub = [o.correct for it, o in zip(items, outcomes) if it.family == family]
        if sub:
            families[family] = {"accuracy": sum(sub) / len(sub), "ci95": bootstrap_ci(sub), "n": len(sub)}
    rate = lambda kind: sum(o.error == kind for o in outcomes) / len(outcomes)  # noqa: E731
    return {"accuracy": sum(correct) / len(correct), "ci95": [low, high], "families": families,
            "perceptual_error_rate": rate("perceptual"), "reasoning_drift_rate": rate("drift"),
            "malformed_rate": rate("malformed"), "heads_rescaled": heads_share,
            "seconds_per_item": seconds / len(items), "n": len(items)}


def run_demo(out: Path | None = None, model_path: Path | None = None, limit: int | None = None,
             batch_size: int = 64, methods=METHODS) -> dict:
    model_path = Path(model_path or bundled_model_path())
    torch.set_grad_enabled(False)
    model, processor = load_model(model_path, dtype=torch.float32), load_processor(model_path)
    cfg = bundled_settings(model_path)
    test = list(shapes.items("test"))[:limit]
    heads = calibrate(model, calibration_batches(processor), cfg)
    results, per_item = {}, {}
    images, prompts = [it.scene.render() for it in test], [it.question for it in test]
    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TextColumn("items"),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        for name in methods:
            task = progress.add_task(name, total=len(test))
            shares = []
            with method_context(name, model, heads, cfg) as handle:
                def advance(n, handle=handle):
                    progress.advance(task, n)
                    if name == "dynamic":  # weighted by batch size: the last batch may be smaller
                        shares.append(((handle.heads.gains != 1).float().mean().item(), n))
                outputs, seconds = answer(model, processor, images, prompts, batch_size=batch_size,
                                          max_new_tokens=shapes.MAX_ANSWER_TOKENS, progress=advance)
            outcomes = [shapes.score(it, o) for it, o in zip(test, outputs)]
            results[name] = summarize(test, outcomes, seconds, _rescaled_share(name, heads, shares))
            per_item[name] = [o.correct for o in outcomes]
    for name in results:
        if name != "vanilla" and "vanilla" in per_item:
            results[name]["mcnemar_vs_vanilla"] = mcnemar(per_item["vanilla"], per_item[name])
    report = {"model": str(model_path), "settings": cfg.to_dict(), "settings_tuned_on": "dev",
              "reported_on": f"test ({len(test)} items)", "calibration": f"calib ({heads.num_samples} items)",
              "methods": results, "layer_mean_ratios": heads.ratios.mean(-1).tolist()}
    if out is not None:
        write_outputs(Path(out), report, heads)
    return report


def write_outputs(out: Path, report: dict, heads: HeadMap) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps(report, indent=1) + "\n")
    heads.save(out / "heads.json")
    plot_ratios(heads, out)
    (out / "demo.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    families = shapes.FAMILIES
    lines = [f"Settings (chosen on {report['settings_tuned_on']}): `{json.dumps(report['settings'])}`; "
             f"static heads calibrated on {report['calibration']}; all figures on {report['reported_on']}.", "",
             "| method | accuracy [95% CI] | perceptual errors | reasoning drift | malformed | heads rescaled | "
             "s / item | vs vanilla (McNemar: +/-, p) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        test = r.get("mcnemar_vs_vanilla")
        versus = f"+{test['b_only']} / -{test['a_only']}, p={test['p']:.3f}" if test else ""
        lines.append(f"| {name} | {r['accuracy']:.1%} [{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] | "
                     f"{r['perceptual_error_rate']:.1%} | {r['reasoning_drift_rate']:.1%} | {r['malformed_rate']:.1%} | "
                     f"{r['heads_rescaled']:.1%} | {r['seconds_per_item']:.4f} | {versus} |")
    lines += ["", "Accuracy per question family:", "",
              "| method | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for name, r in report["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r['families'][f]['accuracy']:.1%}" for f in families) + " |")
    return "\n".join(lines) + "\n"


def plot_ratios(heads: HeadMap, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = heads.ratios.numpy()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    im = ax.imshow(ratios, cmap="viridis", aspect="auto")
    for (layer, head) in heads.perception.nonzero().tolist():
        ax.text(head, layer, "P", ha="center", va="center", color="white", fontweight="bold")
    for (layer, head) in heads.reasoning.nonzero().tolist():
        ax.text(head, layer, "R", ha="center", va="center", color="red", fontweight="bold")
    ax.set_xlabel("head")
    ax.set_ylabel("layer (from 0)")
    ax.set_title("S_v: attention to the image at the last prompt token\n(P perception, R reasoning heads)")
    fig.colorbar(im, ax=ax, label="S_v")
    fig.tight_layout()
    heatmap = out / "ratios_heatmap.png"
    fig.savefig(heatmap, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    mean, spread = ratios.mean(1), ratios.std(1)
    layers = range(len(mean))
    ax.plot(layers, mean, "o-", label="mean over heads")
    ax.fill_between(layers, mean - spread, mean + spread, alpha=0.2, label="+- 1 std over heads")
    ax.set_xlabel("layer (from 0)")
    ax.set_ylabel("S_v")
    ax.set_ylim(0, 1)
    ax.set_title("Attention to the image by depth (calib split)")
    ax.legend()
    fig.tight_layout()
    curve = out / "ratios_by_layer.png"
    fig.savefig(curve, dpi=120)
    plt.close(fig)
    return [heatmap, curve]
