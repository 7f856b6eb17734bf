"""Reasoning-tune the bundled model: continue training `shapes-r1-tiny` the way reasoning models are made from
VLMs, to see whether it costs perception here too.

    python training/reasoning_tune.py --out functional_heads/bundled/shapes-r1-tiny-reasoning [recipe options]

What changes from the base's training: no auxiliary per-cell loss (nothing teaches the vision tower any
more); a share of the image items are `long` chains (six weighted terms: all three colours and all three
shapes, six stated facts, six products and five running sums, the sums reusing counts stated some 40 words
back); optionally a share of steps are text-only problems (the counts are given in the question); optionally
(`--mask-facts`) no loss on the chain's perceptual statements, so the supervision is about the reasoning
only, as an answer-graded RL stage would be. The eight benchmark families stay in the mix so the model keeps
answering them in the scored format. Seeded and deterministic; writes the same files as the base's script.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import transformers as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_shapes_model import dev_accuracy, encode_batch, save_run  # noqa: E402

from functional_heads.evaluation.benchmarks import shapes_generator as shapes  # noqa: E402
from functional_heads.models.loading import load_processor  # noqa: E402
from functional_heads.testbed.bundled import bundled_model_path  # noqa: E402

# the base folder's processor files, copied beside the tuned weights
PROCESSOR_FILES = ("chat_template.jinja", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
                   "tokenizer_config.json", "generation_config.json")


def weighted_chain(counts: dict[str, int], weights: dict[str, int], facts: list[str]) -> tuple[str, str]:
    """Facts first, then one product per term, then running sums: (chain, answer)."""
    products = [counts[k] * weights[k] for k in weights]
    steps = list(facts) + [f"{counts[k]} * {weights[k]} = {p}" for k, p in zip(weights, products)]
    running = products[0]
    for p in products[1:]:
        steps.append(f"{running} + {p} = {running + p}")
        running += p
    return " . ".join(steps), str(running)


def scoring_question(weights: dict[str, int]) -> str:
    return "each " + " , each ".join(f"{k} {'object ' if k in shapes.COLOURS else ''}scores {w}"
                                     for k, w in weights.items()) + " . what is the total score ?"


def long_item(rng: random.Random) -> tuple[shapes.Scene, str, str]:
    """An image item with six weighted terms: (scene, question, target)."""
    scene = shapes.draw_scene(rng)
    weights = {k: rng.randint(*shapes.WEIGHTS) for k in (*shapes.COLOURS, *shapes.SHAPES)}
    counts = {k: scene.count(colour=k) if k in shapes.COLOURS else scene.count(shape=k) for k in weights}
    chain, answer = weighted_chain(counts, weights, [f"{k} : {scene.fact(k)}" for k in weights])
    return scene, scoring_question(weights), f"<think> {chain} </think> <answer> {answer} </answer>"


def text_item(rng: random.Random) -> tuple[str, str]:
    """A text-only problem: the colour counts are given, the chain does the arithmetic: (question, target)."""
    n = rng.randint(2, shapes.MAX_OBJECTS)
    colours = [rng.choice(list(shapes.COLOURS)) for _ in range(n)]
    counts = {c: colours.count(c) for c in shapes.COLOURS}
    weights = {c: rng.randint(*shapes.WEIGHTS) for c in shapes.COLOURS}
    given = " , ".join(f"{c} : {counts[c]}" for c in shapes.COLOURS)
    chain, answer = weighted_chain(counts, weights, [])
    return f"{given} . {scoring_question(weights)}", f"<think> {chain} </think> <answer> {answer} </answer>"


def fact_words(target: str) -> set[int]:
    """Word numbers (0 = <think>) of the chain's `key : value` statements: the perceptual part."""
    words, masked, index = target.split(), set(), 1
    chain_end = words.index("</think>")
    for part in " ".join(words[1:chain_end]).split(" . "):
        n = len(part.split())
        if shapes._FACT.match(part):
            masked |= set(range(index, index + n))
        index += n + 1  # the part and its " . "
    return masked


def training_batches(processor, args):
    """Endless (batch, kind) pairs, deterministic given the seed."""
    rng = random.Random(f"reasoning-tune/{args.seed}")
    stream = shapes.items("train", n=None, exclude=shapes.eval_keys())
    while True:
        if rng.random() < args.text_share:
            questions, targets = zip(*(text_item(rng) for _ in range(args.batch_size)))
            images, kind = None, "text"
        else:
            rows = []
            for _ in range(args.batch_size):
                if rng.random() < args.long_share:
                    rows.append(long_item(rng))
                else:
                    item = next(stream)
                    rows.append((item.scene, item.question, item.target))
            scenes, questions, targets = zip(*rows)
            images, kind = [[s.render()] for s in scenes], "image"
        masks = [fact_words(t) for t in targets] if args.mask_facts else None
        yield encode_batch(processor, images, list(questions), list(targets), masks), kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=bundled_model_path())
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--long-share", type=float, default=0.5, help="share of image items that are long chains")
    parser.add_argument("--text-share", type=float, default=0.0, help="share of steps that are text-only problems")
    parser.add_argument("--mask-facts", action="store_true", help="no loss on the chain's perceptual statements")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--check-items", type=int, default=140, help="dev items of the checks during training")
    parser.add_argument("--dev-items", type=int, default=shapes.EVAL_SIZES["dev"], help="dev items of the final check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=60.0, help="safety cap on wall-clock time")
    args = parser.parse_args()
    if not (args.base / "model.safetensors").is_file():
        parser.error(f"--base {args.base} has no model.safetensors: give a shapes model's folder")
    for name in ("long_share", "text_share"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name.replace('_', '-')} is a share: give a number from 0 to 1")
    if min(args.steps, args.batch_size, args.eval_every, args.check_items, args.dev_items) < 1:
        parser.error("--steps, --batch-size, --eval-every, --check-items and --dev-items take whole numbers of at least 1")

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in PROCESSOR_FILES:
        shutil.copy(args.base / name, args.out / name)
    model = tf.Qwen2_5_VLForConditionalGeneration.from_pretrained(args.base, dtype=torch.float32)
    processor = load_processor(args.out)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup, start, step = 50, time.time(), 0
    log = open(args.out / "training_log.jsonl", "w")
    first = {"step": 0, **dev_accuracy(model, processor, args.check_items)}
    print(json.dumps(first), flush=True)
    log.write(json.dumps(first) + "\n")
    batches = training_batches(processor, args)
    model.train()
    while step < args.steps and time.time() - start < args.minutes * 60:
        progress = step / args.steps
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch, kind = next(batches)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        record = {"step": step, "seconds": round(time.time() - start, 1), "loss": round(loss.item(), 4),
                  "lr": round(lr, 6), "batch": kind}
        if step % args.eval_every == 0:
            record.update(dev_accuracy(model, processor, args.check_items))
            print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
        log.flush()
    record = {"step": step, "seconds": round(time.time() - start, 1),
              **dev_accuracy(model, processor, args.dev_items)}
    save_run(model, args, log, record)


if __name__ == "__main__":
    main()
