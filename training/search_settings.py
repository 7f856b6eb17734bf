"""Choose the bundled model's settings on the dev split only, and ship them as settings.json.

    python training/search_settings.py [--model functional_heads/bundled/shapes-r1-tiny]

Static heads are calibrated on the calib split (mean S_v). Stage 1 searches the layer bounds and the
thresholds (taken at quantiles of the calibrated S_v over all heads) with both gains at 1.2; stage 2
searches the two gains for the best stage-1 setting. Every setting's dev accuracy goes to
search_log.jsonl; the best one (ties: fewer heads) to settings.json. The test split is never touched.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from functional_heads.bundled import BUNDLED
from functional_heads.config import RescaleConfig
from functional_heads.demo import DECODING, calibration_batches
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.evaluation.methods import get_method
from functional_heads.evaluation.run_folders import answer_all
from functional_heads.heads import calibrate, identify_heads
from functional_heads.loading import load_model, load_processor

LAYER_BOUNDS = [(1, 4), (2, 5), (3, 6), (3, 4), (1, 6)]  # (perc_last_layer, reas_first_layer) of 8 layers
QUANTILES = [(0.8, 0.2), (0.9, 0.1), (0.95, 0.05)]  # (tau_perc, tau_reas) as quantiles of calib S_v
GAINS = [1.0, 1.1, 1.2, 1.35, 1.5]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=BUNDLED)
    args = parser.parse_args()
    model, processor = load_model(args.model, dtype=torch.float32), load_processor(args.model)
    benchmark = get_benchmark("shapes")
    dev = list(benchmark.examples(None, "dev"))
    probe = RescaleConfig(perc_last_layer=0, reas_first_layer=0, tau_perc=1.0, tau_reas=0.0)
    with torch.no_grad():
        ratios = calibrate(model, calibration_batches(processor, model), probe).ratios
    log = open(args.model / "search_log.jsonl", "w")

    def accuracy(cfg: RescaleConfig | None) -> dict:
        heads = identify_heads(ratios, cfg) if cfg else None
        method = get_method("static", heads=heads) if heads else get_method("vanilla")
        start = time.time()
        records = answer_all(model, processor, benchmark, dev, method, DECODING, batch_size=64)
        row = {"config": cfg.to_dict() if cfg else None, "dev_accuracy": benchmark.metrics(records)["accuracy"],
               "heads": int((heads.gains != 1).sum()) if heads else 0, "seconds": round(time.time() - start, 1)}
        log.write(json.dumps(row) + "\n")
        log.flush()
        print(json.dumps(row), flush=True)
        return row

    vanilla = accuracy(None)
    best = None
    for (perc, reas), (q_perc, q_reas) in itertools.product(LAYER_BOUNDS, QUANTILES):
        tau_perc, tau_reas = torch.quantile(ratios.flatten(), torch.tensor([q_perc, q_reas])).tolist()
        row = accuracy(RescaleConfig(perc, reas, round(tau_perc, 4), round(tau_reas, 4), 1.2, 1.2))
        best = row if best is None or (row["dev_accuracy"], -row["heads"]) > (best["dev_accuracy"], -best["heads"]) else best
    stage1 = RescaleConfig.from_dict(best["config"])
    for g_perc, g_reas in itertools.product(GAINS, GAINS):
        if (g_perc, g_reas) in ((1.0, 1.0), (1.2, 1.2)):
            continue
        cfg = RescaleConfig.from_dict({**stage1.to_dict(), "g_perc": g_perc, "g_reas": g_reas})
        row = accuracy(cfg)
        best = row if (row["dev_accuracy"], -row["heads"]) > (best["dev_accuracy"], -best["heads"]) else best
    settings = {"config": best["config"], "tuned_on": f"dev ({len(dev)} items)", "calibrated_on": "calib",
                "dev_accuracy": best["dev_accuracy"], "dev_accuracy_vanilla": vanilla["dev_accuracy"],
                "command": "python training/search_settings.py"}
    (args.model / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    print("best on dev:", json.dumps(settings))


if __name__ == "__main__":
    main()
