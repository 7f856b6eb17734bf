"""`fheads demo`: the whole method, end to end, on the bundled model and the `shapes` benchmark.

1. S_v on the calib split: heatmap (layers x heads, selected heads marked) and per-layer curve.
2. Settings: the best setting of the `fheads tune` study on the dev split, shipped with the model
   (`settings.json`), run on test whether or not the study confirmed it, beside that confirmation.
3. Test split, side by side: vanilla, static (calibrated heads), dynamic (per input), perception-only and
   reasoning-only, each through the same method objects and batched generation as `fheads eval`
   (run folders under `OUT/runs`, which `fheads report` reads too), then the report's tables.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import torch

from ..core.heads import HeadMap, calibrate
from ..evaluation import figures, premise
from ..evaluation.answering import answer_into_run
from ..evaluation.benchmarks import get_benchmark
from ..evaluation.benchmarks import shapes_generator as shapes
from ..evaluation.engine import Decoding, HFBackend, answer_all
from ..evaluation.methods import get_method, method_names
from ..evaluation.report import compare, correct_for_multiplicity, report_markdown
from ..evaluation.runs import open_run
from ..evaluation.stats import paired_difference
from ..models.loading import prompt_batches, to_model_device
from ..testbed.bundled import REASONING_TUNED, bundled_model_path, bundled_settings, bundled_tuning
from ..utils import plotting
from ..utils.errors import UserError
from ..utils.files import atomic_path, atomic_write_text

METHODS = ("vanilla", "static", "dynamic", "perception-only", "reasoning-only")  # no decoding baselines: see `fheads eval`
DECODING = Decoding(max_new_tokens=shapes.MAX_ANSWER_TOKENS)
DTYPE = "float32"  # what the demo loads its models in, and so part of its runs' identity


CALIB_BATCH_SIZE = 32


def calibration_batches(processor, model):
    """Processor inputs of the shapes calib split, on the model's device."""
    calib = list(shapes.items("calib"))
    batches = prompt_batches(processor, [it.scene.render() for it in calib], [it.question for it in calib],
                             CALIB_BATCH_SIZE)
    return (to_model_device(b, model) for b in batches)


REASONING_ITEMS = 400  # test items (50 per family) for the reasoning-tuned model's section: the demo stays ~4 min


def run_demo(out: Path | None = None, model_path: Path | None = None, limit: int | None = None,
             batch_size: int = 64, methods=METHODS, reasoning: bool | None = None) -> dict:
    """The demo's report ({"shapes": the `fheads report` comparison, plus settings and S_v}); with `out`,
    demo.md, demo.json, heads.json, the figures and the run folders are written there. With `reasoning`
    (default: when the bundled base is shown) the bundled reasoning-tuned model is shown too, on the first
    REASONING_ITEMS test items, with the premise measured on both models there (`report["reasoning_tuned"]`).
    With `out`, `report["written"]` lists the files and folders written, as paths under `out`."""
    unknown = [name for name in methods if name not in method_names()]
    if unknown:
        raise UserError(f"Unknown method(s) {', '.join(unknown)}: choose among {', '.join(method_names())}.")
    if reasoning and "vanilla" not in methods:
        raise UserError("--reasoning compares the models' vanilla answers: add --method vanilla, or use --no-reasoning.")
    reasoning = (model_path is None if reasoning is None else reasoning) and "vanilla" in methods
    model_path = Path(model_path or bundled_model_path())
    examples = list(get_benchmark("shapes").examples(None, "test"))[:limit]
    premise_examples = examples[:REASONING_ITEMS] if reasoning else None
    report, heads, base_measured = model_report(model_path, examples, methods, out, batch_size, premise_examples)
    if reasoning:
        report["reasoning_tuned"] = reasoning_section(model_path.name, base_measured, premise_examples, methods, out,
                                                      batch_size)
    if out is not None:
        report["written"] = [str(p.relative_to(out)) for p in write_outputs(Path(out), report, heads)]
    return report


def model_report(model_path: Path, examples: list, methods, out: Path | None, batch_size: int,
                 premise_examples: list | None = None) -> tuple[dict, HeadMap, tuple | None]:
    """One model's section: static heads calibrated on calib with its shipped settings, then every method
    on the examples (run folders under OUT/runs, beside the head map OUT/heads.json and the `fheads eval`
    command that continues them); with `premise_examples`, also their vanilla records and S_v along those
    answers (`premise.along_records`), while the model is loaded."""
    cfg, tuning = bundled_settings(model_path, candidate=True), bundled_tuning(model_path)
    benchmark = get_benchmark("shapes")
    with torch.no_grad():
        backend = HFBackend.load(model_path, dtype=DTYPE)
        model, processor = backend.model, backend.processor
        heads = calibrate(model, calibration_batches(processor, model), cfg, progress=True,
                          total=-(-shapes.EVAL_SIZES["calib"] // CALIB_BATCH_SIZE))
        if out is not None:  # the static methods' runs are `fheads eval --heads` runs of this map
            with atomic_path(Path(out) / "heads.json") as tmp:
                heads.save(tmp)
        runs = [_method_run(backend, model_path, benchmark, examples, get_method(name, heads=heads, config=cfg), out,
                           batch_size) for name in methods]
        measured = None if premise_examples is None else \
            premise.along_records(model, processor, premise_examples, _vanilla_records(runs), progress=True)
    report = {"shapes": correct_for_multiplicity({"shapes": compare("shapes", runs)})["shapes"], "model": str(model_path), "settings": cfg.to_dict(),
              "settings_tuned_on": "dev", "reported_on": f"test ({len(examples)} items)",
              "calibration": f"calib ({heads.num_samples} items)", "layer_mean_ratios": heads.ratios.mean(-1).tolist(),
              "tuning": {k: tuning.get(k) for k in ("verdict", "confirmed", "confirmation", "tuned_on")},
              "test_gains": _test_gains(runs)}
    if out is not None:
        report["continue_with"] = eval_commands(model_path, Path(out), methods, batch_size)
    return report, heads, measured


def eval_commands(model_path: Path, out: Path, methods, batch_size: int) -> str:
    """The shell lines that continue (or extend to the whole test split) the demo's runs of one model with
    `fheads eval` and compare them with `fheads report`: every setting of a run's identity as the demo has it
    (`run_identity`: benchmark, split, dtype, decoding, head map), so each lands in the demo's run folder."""
    flags = ["--model", Path(model_path).resolve(), "--bench", "shapes", "--split", "test", "--dtype", DTYPE,
             "--max-new-tokens", DECODING.max_new_tokens, "--heads", out / "heads.json", "--out", out / "runs",
             "--batch-size", batch_size]
    return (f"for m in {' '.join(map(shlex.quote, methods))}; do fheads eval "
            f"{' '.join(shlex.quote(str(f)) for f in flags)} --method \"$m\"; done\n"
            f"fheads report {shlex.quote(str(out / 'runs'))}")


def reasoning_section(base_name: str, base_measured: tuple, examples: list, methods, out: Path | None,
                      batch_size: int) -> dict:
    """The reasoning-tuned model's methods on `examples`, and the premise on both models there: accuracy,
    failures and S_v along each model's own vanilla answers, with paired differences (evaluation/premise.py)."""
    path = bundled_model_path(REASONING_TUNED)
    tuned, _, tuned_measured = model_report(path, examples, methods, None if out is None else Path(out) / REASONING_TUNED,
                                            batch_size, examples)
    tuned["premise"] = {base_name: premise.summary(*base_measured), path.name: premise.summary(*tuned_measured)}
    tuned["premise_difference"] = premise.compare(base_measured, tuned_measured)
    return tuned


def _vanilla_records(runs: list[dict]) -> dict:
    return next((r["records"] for r in runs if r["settings"]["method"] == "vanilla"), {})


def _method_run(backend: HFBackend, model_path: Path, benchmark, examples, method, out, batch_size) -> dict:
    """One method's run over the examples, as `compare` takes it: in a run folder under OUT/runs (resumable,
    what `fheads eval` would write), or in memory without `out`."""
    if out is not None:
        run = open_run(Path(out) / "runs", model_path, benchmark, method, dtype=DTYPE, decoding=DECODING,
                       backend=backend.name)
        answer_into_run(run, backend, benchmark, examples, method, DECODING, batch_size)
        records = run.read()
        return {"folder": run.folder, "settings": run.settings, "records": {e.id: records[e.id] for e in examples}}
    records = answer_all(backend, benchmark, examples, method, DECODING, batch_size, progress=True)
    return {"folder": None, "settings": {"method": method.name}, "records": {r["id"]: r for r in records}}


def _test_gains(runs: list[dict]) -> dict:
    """Each method's paired gain over vanilla on the test items, with its bootstrap interval."""
    vanilla = _vanilla_records(runs)
    if not vanilla:
        return {}
    gains = {}
    for run in runs:
        ids = [i for i in run["records"] if i in vanilla]
        gains[run["settings"]["method"]] = paired_difference([vanilla[i]["score"] or 0.0 for i in ids],
                                                             [run["records"][i]["score"] or 0.0 for i in ids])
    return gains


def write_outputs(out: Path, report: dict, heads: HeadMap) -> list[Path]:
    """demo.json, the figures (with matplotlib) and demo.md in `out`; returns every file and run folder the
    demo wrote there, head maps included."""
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(out / "demo.json", json.dumps(report, indent=1, default=str) + "\n")]
    text = demo_markdown(report)
    if plotting.available():
        written += [figures.ratios_heatmap(heads, out / "ratios_heatmap.png"),
                    figures.ratios_by_layer(heads, out / "ratios_by_layer.png",
                                            "Attention to the image by depth (calib split)"),
                    figures.accuracy_bars({"shapes": report["shapes"]}, out / "report.png")]
        if "reasoning_tuned" in report:
            written.append(figures.attention_along_chain(report["reasoning_tuned"]["premise"],
                                                         out / "premise_attention.png"))
    else:
        text += f"\n{plotting.MISSING}\n"
    written.insert(0, atomic_write_text(out / "demo.md", text))
    folders = [out] + ([out / REASONING_TUNED] if "reasoning_tuned" in report else [])
    return written + [f / name for f in folders for name in ("heads.json", "runs") if (f / name).exists()]


def demo_markdown(report: dict) -> str:
    """The settings line, the tuning study's confirmation beside the test result, then `fheads report`'s tables."""
    return (f"Settings (the best of the `fheads tune` study on {report['settings_tuned_on']}): "
            f"`{json.dumps(report['settings'])}`; static heads calibrated on {report['calibration']}; all figures on "
            f"{report['reported_on']}. 'heads rescaled' counts heads whose gain is not 1.\n\n"
            + tuning_markdown(report) + report_markdown({"shapes": report["shapes"]}) + continue_markdown(report)
            + (reasoning_markdown(report["reasoning_tuned"]) if "reasoning_tuned" in report else ""))


def continue_markdown(report: dict) -> str:
    """The `fheads eval` command that continues this model's runs (with an output folder only)."""
    if not report.get("continue_with"):
        return ""
    return ("\nTo continue these runs with `fheads eval` (the same settings, so the same run folders; add `--limit N` "
            "for the first N test items, or leave it out for the whole test split), then compare them:\n\n"
            f"```\n{report['continue_with']}\n```\n\n")


def reasoning_markdown(section: dict) -> str:
    """The reasoning-tuned model: the premise on both models, then its methods' tables."""
    return (f"\n## The reasoning-tuned model ({Path(section['model']).name}), {section['reported_on']}\n\n"
            "The premise, on both models (vanilla, each model's own greedy answers; paired tests):\n\n"
            + premise.premise_markdown(section["premise"], section["premise_difference"]) + "\n"
            + f"Its methods, with its own settings `{json.dumps(section['settings'])}`:\n\n"
            + tuning_markdown(section) + report_markdown({"shapes": section["shapes"]}) + continue_markdown(section))


def tuning_markdown(report: dict) -> str:
    """Static rescaling against vanilla: on the dev items the study held out, and on test."""
    tuning, static = report.get("tuning") or {}, (report.get("test_gains") or {}).get("static")
    confirmation = tuning.get("confirmation")
    if not confirmation:
        return f"Tuning: {tuning.get('verdict') or 'no confirmation recorded'}.\n\n"
    rows = ["| static vs vanilla | items | gain | 95% CI |", "|---|---|---|---|",
            f"| dev search part (chosen here) | | {confirmation['search_gain']:+.1%} | |",
            f"| dev confirmation part (held out) | {confirmation['items']} | {confirmation['gain']:+.1%} | "
            f"{confirmation['ci'][0]:+.1%} to {confirmation['ci'][1]:+.1%} |"]
    if static:
        rows.append(f"| test (this run) | {static['n']} | {static['mean']:+.1%} | {static['ci'][0]:+.1%} to "
                    f"{static['ci'][1]:+.1%} |")
    return (f"Tuning ({tuning.get('tuned_on')}): {tuning['verdict']}.\n\n" + "\n".join(rows) + "\n\n")
