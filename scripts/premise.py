"""The paper's premise, measured on a shapes model: how much each layer looks at the image at the end of the
prompt (i*) and along the model's own chain of thought, beside its accuracy and its perceptual and drift
errors (issue 14). The chain is the model's greedy answer, fed back after its prompt; S_v is read at i* and
at 25%, 50%, 75% and 100% of the chain's tokens (`visual_attention_ratios(..., positions=...)`).

    python scripts/premise.py [--model DIR] [--split dev] [--items 100] [--out premise/]

Writes premise.json (per item and mean, by layer and position) and premise.md; prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import functional_heads as fh  # noqa: E402
from functional_heads.bundled import bundled_model_path  # noqa: E402
from functional_heads.evaluation import shapes_generator as shapes  # noqa: E402
from functional_heads.evaluation.benchmarks import get_benchmark  # noqa: E402
from functional_heads.evaluation.methods import get_method  # noqa: E402
from functional_heads.evaluation.run_folders import Decoding, answer_all  # noqa: E402

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def along_chain(model, processor, example, chain: str) -> torch.Tensor:
    """S_v [positions, layers, heads] at i* and at FRACTIONS of the chain's tokens."""
    image = example.load_image()
    prompt_only = fh.prompt_inputs(processor, [image], [example.prompt])
    full = fh.prompt_inputs(processor, [image], [example.prompt], replies=[chain])
    start, end = prompt_only["input_ids"].shape[1] - 1, full["input_ids"].shape[1] - 1
    steps = [start] + [start + max(1, round(f * (end - start))) for f in FRACTIONS]
    return fh.visual_attention_ratios(model, full, positions=torch.tensor([steps]))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=bundled_model_path())
    parser.add_argument("--split", default="dev")
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("premise"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    model, processor = fh.load_model(args.model, dtype=torch.float32), fh.load_processor(args.model)
    benchmark = get_benchmark("shapes")
    examples = list(benchmark.examples(None, args.split))[:args.items]
    records = answer_all(model, processor, benchmark, examples, get_method("vanilla"),
                         Decoding(max_new_tokens=shapes.MAX_ANSWER_TOKENS), batch_size=8)
    per_item = torch.stack([along_chain(model, processor, e, r["prediction"]) for e, r in zip(examples, records)])
    by_layer = per_item.mean(-1)  # [items, positions, layers]: mean over heads
    mean = by_layer.mean(0)
    layers = mean.shape[1]
    half = layers // 2
    names = ["i* (end of prompt)"] + [f"{int(f * 100)}% of the chain" for f in FRACTIONS]
    failures = {kind: sum(r.get("failure") == kind for r in records) / len(records) for kind in ("perceptual", "drift")}
    summary = {"model": str(args.model), "split": args.split, "items": len(records),
               "accuracy": sum(r["score"] for r in records) / len(records), **failures,
               "positions": names, "mean_sv_by_layer": mean.tolist(),
               "first_half_layers": mean[:, :half].mean(-1).tolist(), "second_half_layers": mean[:, half:].mean(-1).tolist(),
               "per_item": by_layer.tolist()}
    lines = [f"# Premise measurements: {args.model.name}, shapes {args.split}, {len(records)} items",
             "", f"Accuracy {summary['accuracy']:.1%}, perceptual errors {failures['perceptual']:.1%}, "
             f"drift {failures['drift']:.1%}. Mean S_v over heads (sum of attention on the image tokens).", "",
             "| position | " + " | ".join(f"layer {l}" for l in range(layers)) + f" | layers 0-{half - 1} | "
             f"layers {half}-{layers - 1} |", "|---" * (layers + 3) + "|"]
    for k, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in mean[k].tolist()) +
                     f" | {summary['first_half_layers'][k]:.3f} | {summary['second_half_layers'][k]:.3f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "premise.json").write_text(json.dumps(summary) + "\n")
    (args.out / "premise.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
