"""`fheads tune` on the bundled model and the shapes dev split: how fast a study runs with and without
pruning and the S_v cache, and how well the cheap objective ranks settings against accuracy.

    python benchmarks/tune_study.py [--trials 200] [--unpruned-trials 200] [--ranked-trials 60]
                                    [--out /tmp/tune_bench]

1. The study `fheads tune` runs: --trials trials, successive-halving pruning, S_v measured once: wall time of
   the whole command and of its trial phase, trials per minute (trial phase), items evaluated.
2. The same study without pruning for --unpruned-trials trials (every trial evaluates every search item).
3. Without the S_v cache every trial would measure S_v again: the calibration is timed once and its time
   added per trial for the "no cache" figure.
4. Cheap objectives: for the first --ranked-trials complete trials of study 2 (its exact accuracy gain on all search items), the
   likelihood of the gold answer after vanilla's own chain, and of the reference chain and answer, on the same
   items (one forward pass, no generation); Spearman's rank correlation of each with the accuracy gain over
   the trials, beside the ceiling: the accuracy gain's own correlation with the same trials' gain on the
   held-out part. `fheads tune` offers no cheap objective because none ranked settings here (BENCHMARKS.md).
Both studies use the same seed, search part and confirmation part; the test split is not read.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from functional_heads.apps.demo import DECODING, calibration_batches
from functional_heads.core.config import RescaleConfig
from functional_heads.core.heads import calibrate, identify_heads
from functional_heads.core.rescale import rescale
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.evaluation.engine import HFBackend
from functional_heads.evaluation.stats import rank_correlation
from functional_heads.models.loading import load_model, load_processor, prompt_inputs, to_model_device
from functional_heads.testbed.bundled import bundled_model_path
from functional_heads.tuning import TuneSettings, tune
from functional_heads.tuning.objective import Scorer
from functional_heads.tuning.study import divide

BATCH = 64


def study(out: Path, trials: int, pruner: str) -> tuple[dict, float]:
    """A fresh study's summary and the seconds of its trial phase (first trial start to last trial end)."""
    shutil.rmtree(out, ignore_errors=True)
    summary = tune(bundled_model_path(), "shapes", out=out, split="dev", calib_split="calib",
                   settings=TuneSettings(trials=trials, pruner=pruner), decoding=DECODING, batch_size=BATCH,
                   progress=False)
    return summary, summary["trials_seconds"]


def likelihood_ranking(summary: dict, out: Path, most: int) -> dict:
    """How well two cheap objectives rank the complete trials of a study against their accuracy gain on the
    search part, and the ceiling any proxy meets: how well that accuracy gain ranks the same trials' gains
    on the held-out part (an analysis of the study, not a selection: the shipped settings come from a study
    of their own)."""
    import optuna

    stored = optuna.load_study(study_name="fheads-tune", storage=f"sqlite:///{out / 'study.db'}")
    model_path = bundled_model_path()
    model, processor = load_model(model_path, dtype=torch.float32), load_processor(model_path)
    benchmark = get_benchmark("shapes")
    search, held_out = divide(list(benchmark.examples(None, "dev")), 0.5, 0)
    scorer = Scorer(HFBackend(model, processor), benchmark, DECODING, BATCH)
    ratios = torch.tensor(stored.user_attrs["ratios"])
    with torch.no_grad():
        start = time.perf_counter()
        records = scorer.records(None, search)
        accuracy_seconds = time.perf_counter() - start
        prefixes = [answer_prefix(r) for r in records]
        golds = [str(e.gold) for e in search]
        references = [f"<think> {e.info['chain']} </think> <answer> {e.gold} </answer>" for e in search]
        start = time.perf_counter()
        base_answer = likelihood(scorer, None, search, prefixes, golds)
        likelihood_seconds = time.perf_counter() - start
        base_reference = likelihood(scorer, None, search, [""] * len(search), references)
        base_held_out = scorer.scores(None, held_out)
        rows = []
        for trial in summary["trials"]:
            if trial["state"] != "complete" or trial.get("vanilla_equivalent") or trial.get("same_as") is not None:
                continue
            if len(rows) == most:
                break
            heads = identify_heads(ratios, RescaleConfig.from_dict(trial["config"]))
            rows.append((trial["value"], mean_gain(likelihood(scorer, heads, search, prefixes, golds), base_answer),
                         mean_gain(likelihood(scorer, heads, search, [""] * len(search), references), base_reference),
                         mean_gain(scorer.scores(heads, held_out), base_held_out)))
    accuracy, answer, reference, held = zip(*rows)
    return {"trials": len(rows), "spearman": rank_correlation(accuracy, answer),
            "spearman_reference": rank_correlation(accuracy, reference),
            "spearman_held_out": rank_correlation(accuracy, held),
            "items_scored": sum(p is not None for p in prefixes), "items": len(search),
            "seconds_likelihood": likelihood_seconds, "seconds_accuracy": accuracy_seconds}


def mean_gain(values: list, baseline: list) -> float:
    return statistics.mean(v - b for v, b in zip(values, baseline) if v is not None and b is not None)


def answer_prefix(record: dict) -> str | None:
    """Vanilla's output up to where its extracted answer starts (None when the answer is not in the text)."""
    text, answer = record.get("prediction") or "", record.get("extracted")
    return None if answer is None or str(answer) not in text else text[:text.rfind(str(answer))]


@torch.no_grad()
def likelihood(scorer: Scorer, heads, examples: list, prefixes: list, targets: list) -> list:
    """log p(target | prompt, prefix) per example under the head map (None: vanilla), one forward pass per
    batch and no generation; an example whose prefix is None is skipped."""
    model, processor = scorer.backend.model, scorer.backend.processor
    values = [None] * len(examples)
    rows = [i for i, prefix in enumerate(prefixes) if prefix is not None]
    context = rescale(model, heads) if heads is not None else nullcontext()
    with context:
        for start in range(0, len(rows), BATCH):
            chunk = rows[start:start + BATCH]
            texts = [prefixes[i] + targets[i] for i in chunk]
            counts = [len(processor.tokenizer(t, add_special_tokens=False)["input_ids"])
                      - len(processor.tokenizer(prefixes[i], add_special_tokens=False)["input_ids"]) for t, i in zip(texts, chunk)]
            inputs = to_model_device(prompt_inputs(processor, [examples[i].load_image() for i in chunk],
                                                   [examples[i].prompt for i in chunk], replies=texts), model)
            keep = max(counts) + 1
            log_probs = model(**inputs, use_cache=False, logits_to_keep=keep).logits.float().log_softmax(-1)
            ids = inputs["input_ids"][:, -keep:]
            for row, (i, n) in enumerate(zip(chunk, counts)):
                wanted = ids[row, keep - n:]
                values[i] = log_probs[row, keep - n - 1:keep - 1].gather(-1, wanted[:, None]).sum().item()
    return values


def calibration_seconds() -> float:
    model_path = bundled_model_path()
    model, processor = load_model(model_path, dtype=torch.float32), load_processor(model_path)
    probe = RescaleConfig(0, 0, 1.0, 0.0)
    with torch.no_grad():
        start = time.perf_counter()
        calibrate(model, calibration_batches(processor, model), probe)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--unpruned-trials", type=int, default=200)
    parser.add_argument("--ranked-trials", type=int, default=60, help="Trials of study 2 the objectives rank.")
    parser.add_argument("--out", type=Path, default=Path("/tmp/tune_bench"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    start = time.perf_counter()
    pruned, pruned_s = study(args.out / "pruned", args.trials, "halving")
    print(f"pruned study: {(time.perf_counter() - start) / 60:.1f} min in all (model load, S_v, vanilla, trials, "
          f"confirmation, figures); trial phase {pruned['finished']} trials in {pruned_s / 60:.1f} min ({pruned['finished'] / pruned_s * 60:.1f} "
          f"trials/min; {pruned['counts']['complete']} complete, {pruned['counts']['pruned']} pruned, "
          f"{pruned['evaluated_maps']} head maps evaluated on {pruned['items_evaluated']} items); "
          f"result: {pruned['verdict']}")
    full, full_s = study(args.out / "unpruned", args.unpruned_trials, "none")
    print(f"unpruned study: {full['finished']} trials in {full_s / 60:.1f} min ({full['finished'] / full_s * 60:.1f} "
          f"trials/min; {full['items_evaluated']} items)")
    calib = calibration_seconds()
    per_trial = full_s / full["finished"]
    print(f"S_v calibration: {calib:.1f} s once per study; without the cache each trial would take "
          f"{per_trial + calib:.1f} s instead of {per_trial:.1f} s ({per_trial / (per_trial + calib):.2f}x the trial rate)")
    print(f"trials/min ratio, pruned / unpruned: {(pruned['finished'] / pruned_s) / (full['finished'] / full_s):.2f}")
    ranking = likelihood_ranking(full, args.out / "unpruned", args.ranked_trials)
    print(f"likelihood objective: Spearman {ranking['spearman']:+.2f} against the accuracy gain over "
          f"{ranking['trials']} complete trials (log p of the reference chain and answer instead: "
          f"{ranking['spearman_reference']:+.2f}; the ceiling, the search part's accuracy gain against the held-out "
          f"part's: {ranking['spearman_held_out']:+.2f}) ({ranking['items_scored']}/{ranking['items']} items scorable); one "
          f"evaluation {ranking['seconds_likelihood']:.1f} s against {ranking['seconds_accuracy']:.1f} s for accuracy "
          f"({ranking['seconds_accuracy'] / ranking['seconds_likelihood']:.1f}x cheaper)")


if __name__ == "__main__":
    main()
