"""The paper's premise, measured on shapes models: accuracy, perceptual errors, reasoning drift, and
how much each layer looks at the image at i* and along the model's own greedy chain of thought. Given two
models (base first, reasoning-tuned second) they are compared on the same items with paired tests.

    python scripts/premise.py --model DIR [--model DIR2] [--split test] [--items N] [--out premise/]

Writes premise.json (per model: summary and per-item S_v by position and layer; the paired differences) and
premise.md; prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import functional_heads as fh  # noqa: E402
from functional_heads.evaluation import premise  # noqa: E402
from functional_heads.evaluation.benchmarks import get_benchmark  # noqa: E402
from functional_heads.evaluation.benchmarks import shapes_generator as shapes  # noqa: E402
from functional_heads.evaluation.engine import Decoding, HFBackend, answer_all  # noqa: E402
from functional_heads.evaluation.methods import get_method  # noqa: E402
from functional_heads.testbed.bundled import bundled_model_path  # noqa: E402


def measure(model_path: Path, examples, chain: str) -> tuple[list[dict], premise.AlongAnswers]:
    """Vanilla's greedy answers, then S_v along them (`chain` own) or along the reference answers."""
    model, processor = fh.load_model(model_path, dtype=torch.float32), fh.load_processor(model_path)
    bench = get_benchmark("shapes")
    records = answer_all(HFBackend(model, processor), bench, examples, get_method("vanilla"),
                         Decoding(max_new_tokens=shapes.MAX_ANSWER_TOKENS), batch_size=64, progress=True)
    answers = [bench.reference_answer(e) for e in examples] if chain == "reference" else None
    return premise.along_records(model, processor, examples, {r["id"]: r for r in records}, answers, progress=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, action="append", help="a model folder; twice to compare (base first)")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--items", type=int, default=None, help="the first N items of the split (default: all)")
    parser.add_argument("--out", type=Path, default=Path("premise"))
    parser.add_argument("--chain", choices=("own", "reference"), default="own",
                        help="S_v along each model's own answers, or along the reference answers for every model "
                             "(teacher-forced: both models at the same positions)")
    args = parser.parse_args()
    models = args.model or [bundled_model_path()]
    if len(models) > 2:
        parser.error("give one model, or two to compare")
    for path in models:
        if not (path / "config.json").is_file():
            parser.error(f"{path} is not a model folder (no config.json): give a shapes model's folder")
    if args.items is not None and args.items < 1:
        parser.error("--items takes a whole number of at least 1")
    if args.split not in shapes.EVAL_SIZES:
        parser.error(f"--split takes one of {', '.join(shapes.EVAL_SIZES)}")
    torch.set_grad_enabled(False)
    examples = list(get_benchmark("shapes").examples(None, args.split))[:args.items]
    names = [p.name for p in models]
    names = names if len(set(names)) == len(names) else [f"{n} ({i + 1})" for i, n in enumerate(names)]
    measured = {name: measure(path, examples, args.chain) for name, path in zip(names, models)}
    summaries = {name: premise.summary(*m) for name, m in measured.items()}
    difference = premise.compare(*measured.values()) if len(measured) == 2 else None
    result = {"split": args.split, "items": len(examples), "models": dict(zip(names, map(str, models))),
              "summaries": summaries, "difference": difference,
              "chain": args.chain,
              "per_item_sv_by_layer": {name: along.ratios.mean(-1).tolist() for name, (_, along) in measured.items()},
              "per_item_image_share": {name: along.image_share.tolist() for name, (_, along) in measured.items()}}
    along = "each model's own answers" if args.chain == "own" else "the reference answers"
    title = f"# Premise: shapes {args.split}, {len(examples)} items, S_v along {along}\n\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "premise.json").write_text(json.dumps(result) + "\n")
    text = title + premise.premise_markdown(summaries, difference)
    (args.out / "premise.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
