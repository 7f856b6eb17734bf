"""Train the bundled model: a tiny Qwen2.5-VL reasoning model on the `shapes` training split, from scratch.

    python training/train_shapes_model.py --out functional_heads/bundled/shapes-r1-tiny

Seeded; the loss is on the answer tokens only (chain of thought, answer, end of turn). Training items
whose content appears in any evaluation split are skipped. Writes the model, its word-level processor,
`training_log.jsonl` (loss, dev accuracy) and `loss_curve.png` to --out.

Long runs resume: every --checkpoint-every steps the weights, the optimiser and the step go to
`--out/checkpoint.pt` (atomically); `--resume` continues from there, replaying the data stream to the same
item, so a resumed run takes the path an uninterrupted one would. A run stopped by --minutes resumes too.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import transformers as tf

from functional_heads.apps.demo import DECODING as DEMO_DECODING
from functional_heads.evaluation.benchmarks import get_benchmark
from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.evaluation.engine import HFBackend, answer_all
from functional_heads.evaluation.methods import get_method
from functional_heads.models.compat import projected_features, readable_by_transformers_4
from functional_heads.models.loading import load_processor
from functional_heads.testbed.wordlevel import qwen2_5_vl_config, save_word_level_processor
from functional_heads.utils.files import atomic_path

PATCH = 8
# what a cell holds, for the optional auxiliary loss on the merged visual tokens (one token per cell)
CELL_CLASSES = [None] + [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]


def training_batches(processor, batch_size: int, families: list[str] | None = None, start_batch: int = 0):
    """Endless batches of train items from batch `start_batch` on; labels are -100 except on the answer and
    its end-of-turn token."""
    skip = shapes.eval_keys()
    stream = (it for it in shapes.items("train", n=None, exclude=skip) if not families or it.family in families)
    for _ in range(start_batch * batch_size):  # items only: nothing rendered or encoded
        next(stream)
    while True:
        chunk = [next(stream) for _ in range(batch_size)]
        batch = encode_batch(processor, [[it.scene.render()] for it in chunk], [it.question for it in chunk],
                             [it.target for it in chunk])
        cells = torch.tensor([[CELL_CLASSES.index(c) for c in it.scene.cells] for it in chunk])
        yield batch, cells


def encode_batch(processor, images: list | None, questions: list[str], targets: list[str],
                 unsupervised: list[set[int]] | None = None) -> dict:
    """One chat turn per item (an image, or none when `images` is None) with its target reply; labels are
    -100 except on the reply from its <think> tag and its end-of-turn token, and except on the reply's
    words numbered in `unsupervised` (the tokenizer is word-level: one word, one token)."""
    content = [{"type": "image"}] if images is not None else []
    prompts = [processor.apply_chat_template(
        [{"role": "user", "content": content + [{"type": "text", "text": q}]}], add_generation_prompt=True)
        for q in questions]
    texts = [p + t + " <|im_end|>" for p, t in zip(prompts, targets)]
    batch = processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side="right")
    labels = batch["input_ids"].clone()
    # the reply starts at its <think> tag (the processor expands the image placeholder, so count from it)
    starts = (batch["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<think>")).int().argmax(-1)
    labels[torch.arange(labels.shape[1])[None, :] < starts[:, None]] = -100
    labels[batch["attention_mask"] == 0] = -100
    for row, words in enumerate(unsupervised or []):
        for word in words:
            labels[row, starts[row] + word] = -100
    return {**batch, "labels": labels}


def mrope_section(head_dim: int) -> list[int]:
    """Temporal, height, width shares of the rotary frequencies (head_dim / 2 in all), as Qwen2.5-VL splits them."""
    half = head_dim // 2
    temporal, height = half // 4, (half * 3) // 8
    return [temporal, height, half - temporal - height]


def dev_accuracy(model, processor, n: int, families: list[str] | None = None) -> dict:
    """Vanilla on the first n dev items (of the families given), through `fheads eval`'s generation path."""
    benchmark = get_benchmark("shapes")
    examples = [e for e in benchmark.examples(None, "dev") if not families or e.category in families][:n]
    model.eval()
    records = answer_all(HFBackend(model, processor), benchmark, examples, get_method("vanilla"), DEMO_DECODING,
                         batch_size=64)
    model.train()
    summary = benchmark.metrics(records)
    return {"dev_accuracy": summary["accuracy"], "dev_perceptual": summary["perceptual_rate"],
            "dev_drift": summary["drift_rate"], "dev_malformed": summary["malformed_rate"],
            "dev_families": {name: round(value, 3) for name, value in summary["categories"].items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=9000)
    parser.add_argument("--minutes", type=float, default=90.0, help="safety cap on wall-clock time")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vision-width", type=int, default=128)
    parser.add_argument("--vision-depth", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--aux-cell-loss", type=float, default=0.0,
                        help="weight of an auxiliary per-cell classification loss on the visual tokens (0: off)")
    parser.add_argument("--device", default="cpu", help="torch device (the shipped model was trained on cpu)")
    parser.add_argument("--families", nargs="+", choices=shapes.FAMILIES, default=None,
                        help="train on these question families only (diagnostics)")
    parser.add_argument("--dev-items", type=int, default=shapes.EVAL_SIZES["dev"], help="dev items of the final check")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    args = parser.parse_args()
    checkpoint_path = args.out / CHECKPOINT
    if args.resume and not checkpoint_path.is_file():
        parser.error(f"--resume: {checkpoint_path} does not exist; start without --resume")
    if not args.resume and checkpoint_path.is_file():
        parser.error(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another --out")

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    vocab = save_word_level_processor(args.out, shapes.vocabulary() + ["user", "assistant"], image_size=shapes.SIZE,
                                      patch_size=PATCH)
    head_dim = args.hidden // args.heads
    config = qwen2_5_vl_config(vocab, hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.heads,
                               intermediate=3 * args.hidden, vision_width=args.vision_width,
                               vision_depth=args.vision_depth, vision_heads=4, patch_size=PATCH,
                               mrope_section=mrope_section(head_dim))
    model = tf.Qwen2_5_VLForConditionalGeneration(config).to(args.device)
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.generation_config.pad_token_id = vocab["<pad>"]
    processor = load_processor(args.out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f} M parameters; training {args.steps} steps of {args.batch_size}", flush=True)

    cell_head = torch.nn.Linear(args.hidden, len(CELL_CLASSES)).to(args.device) if args.aux_cell_loss > 0 else None
    parameters = list(model.parameters()) + (list(cell_head.parameters()) if cell_head is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 200
    step, elapsed = 0, 0.0
    if args.resume:
        state = torch.load(checkpoint_path, map_location=args.device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if cell_head is not None:
            cell_head.load_state_dict(state["cell_head"])
        step, elapsed = state["step"], state["seconds"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        print(f"resuming at step {step}", flush=True)
    log_path = args.out / "training_log.jsonl"
    kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= step] if args.resume else []
    log = open(log_path, "w")
    log.writelines(line + "\n" for line in kept)
    batches = training_batches(processor, args.batch_size, args.families, start_batch=step)
    session, start = time.time(), time.time() - elapsed  # --minutes caps this session; the log counts all
    budget = args.minutes * 60
    model.train()
    while step < args.steps and time.time() - session < budget:
        progress = step / args.steps  # by steps, not time: a rerun takes the same path on any machine
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch, cells = next(batches)
        batch, cells = {k: v.to(args.device) for k, v in batch.items()}, cells.to(args.device)
        loss = model(**batch).loss
        if cell_head is not None:  # teach the vision tower to tell cells apart, beside the answer loss
            features = model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
            features = projected_features(features)
            features = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features
            aux = torch.nn.functional.cross_entropy(cell_head(features), cells.flatten())
            loss = loss + args.aux_cell_loss * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        step += 1
        record = {"step": step, "seconds": round(time.time() - start, 1), "loss": round(loss.item(), 4),
                  "lr": round(lr, 6)}
        if step % args.eval_every == 0:
            record.update(dev_accuracy(model, processor, 140, args.families))
            print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
        log.flush()
        if step % args.checkpoint_every == 0 or step == args.steps:
            save_checkpoint(checkpoint_path, model, optimizer, cell_head, step, time.time() - start)
    if step < args.steps:
        save_checkpoint(checkpoint_path, model, optimizer, cell_head, step, time.time() - start)
        print(f"stopped by --minutes at step {step} of {args.steps}: rerun with --resume to continue", flush=True)
        return
    record = {"step": step, "seconds": round(time.time() - start, 1),
              **dev_accuracy(model, processor, args.dev_items, args.families)}
    save_run(model, args, log, record)


CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, model, optimizer, cell_head, step: int, seconds: float) -> None:
    """Everything a resumed run needs, written whole or not at all."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "seconds": seconds,
             "cell_head": cell_head.state_dict() if cell_head is not None else None,
             "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_run(model, args, log, final: dict) -> None:
    """The final dev check into the log, then the weights, the options and the loss curve into args.out."""
    print(json.dumps(final), flush=True)
    log.write(json.dumps({**final, "final": True}) + "\n")
    log.close()
    model.save_pretrained(args.out)
    readable_by_transformers_4(args.out)
    (args.out / "training_args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    plot_loss(args.out)
    (args.out / CHECKPOINT).unlink(missing_ok=True)  # the run is whole: its weights are saved


def plot_loss(folder: Path) -> None:
    from functional_heads.utils import plotting

    if not plotting.available():
        print(f"loss_curve.png: {plotting.MISSING}", flush=True)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(folder / "training_log.jsonl")]
    steps = [r["step"] for r in rows if "loss" in r]
    losses = [r["loss"] for r in rows if "loss" in r]
    smooth = [sum(losses[max(0, i - 49):i + 1]) / len(losses[max(0, i - 49):i + 1]) for i in range(len(losses))]
    evals = [r for r in rows if "dev_accuracy" in r and "loss" in r]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(steps, losses, alpha=0.25, label="loss")
    ax.plot(steps, smooth, label="loss (mean of 50 steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss on answer tokens")
    ax.set_yscale("log")
    if evals:
        twin = ax.twinx()
        twin.plot([r["step"] for r in evals], [r["dev_accuracy"] for r in evals], "o-", color="C2",
                  label="dev accuracy (140 items)")
        twin.set_ylabel("dev accuracy")
        twin.set_ylim(0, 1)
    fig.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "loss_curve.png", dpi=120)


if __name__ == "__main__":
    main()
