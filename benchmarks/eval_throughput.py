"""Evaluation throughput on one device: items per second of `fheads eval`'s generation path
(`engine.answer_batches`) on the bundled model and the shapes test split, vanilla and static, batch
sizes 1 to 32, in the data's order against batches of similar prompt length (`--order length`). Also how
many greedy answers differ from batch size 1 (padding's float rounding is the only cause) and between the
two orders at the same batch size.

    python benchmarks/eval_throughput.py [--items 128] [--batch-sizes 1 4 8 16 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functional_heads.apps.demo import calibration_batches  # noqa: E402
from functional_heads.core.heads import calibrate  # noqa: E402
from functional_heads.evaluation.benchmarks import get_benchmark  # noqa: E402
from functional_heads.evaluation.benchmarks import shapes_generator as shapes  # noqa: E402
from functional_heads.evaluation.engine import Decoding, HFBackend, answer_batches  # noqa: E402
from functional_heads.evaluation.methods import get_method  # noqa: E402
from functional_heads.models.loading import load_model, load_processor  # noqa: E402
from functional_heads.testbed.bundled import bundled_model_path, bundled_settings  # noqa: E402


def timed(model, processor, benchmark, examples, method, batch_size, order):
    start = time.perf_counter()
    records = [r for batch in answer_batches(HFBackend(model, processor), benchmark, examples, method,
                                             Decoding(max_new_tokens=shapes.MAX_ANSWER_TOKENS), batch_size,
                                             order=order) for r in batch]
    return len(records) / (time.perf_counter() - start), {r["id"]: r["prediction"] for r in records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["vanilla", "static"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = bundled_model_path()
    model, processor = load_model(path, dtype=torch.float32), load_processor(path)
    benchmark = get_benchmark("shapes")
    examples = list(benchmark.examples(None, "test"))[:args.items]
    lengths = sorted(len(e.prompt) for e in examples)
    print(f"{len(examples)} shapes test items, prompt lengths {lengths[0]}..{lengths[-1]} characters; "
          f"{platform.processor() or platform.machine()}, {args.threads} torch threads, torch {torch.__version__}")
    heads = calibrate(model, calibration_batches(processor, model), bundled_settings(candidate=True)) \
        if "static" in args.methods else None  # the demo's calibration, with the tuned candidate
    rows = []
    for name in args.methods:
        method = get_method(name, heads=heads)
        reference = None
        for batch_size in args.batch_sizes:
            measured = {order: timed(model, processor, benchmark, examples, method, batch_size, order)
                        for order in ("file", "length")}
            reference = reference or measured["file"][1]
            row = {"method": name, "batch_size": batch_size,
                   "items_per_s_file": measured["file"][0], "items_per_s_length": measured["length"][0],
                   "length_over_file": measured["length"][0] / measured["file"][0],
                   "differ_from_batch_1_file": sum(reference[i] != p for i, p in measured["file"][1].items()),
                   "differ_from_batch_1_length": sum(reference[i] != p for i, p in measured["length"][1].items()),
                   "differ_length_vs_file": sum(measured["file"][1][i] != p for i, p in measured["length"][1].items())}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| method | batch | items/s, file order | items/s, length order | ratio | answers differing from batch 1 "
          "(file / length) | length vs file |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['batch_size']} | {r['items_per_s_file']:.2f} | {r['items_per_s_length']:.2f} | "
              f"{r['length_over_file']:.2f} | {r['differ_from_batch_1_file']} / {r['differ_from_batch_1_length']} of "
              f"{len(examples)} | {r['differ_length_vs_file']} |")


if __name__ == "__main__":
    main()
