"""Train a tiny BLIP image-text matching model on shapes scenes: AGLA's GradCAM model for the bundled model.

    python training/train_shapes_itm.py --out runs/aux/shapes-itm

AGLA masks the image with the GradCAM of a BLIP ITM model on the prompt; on real images that is BLIP
trained on COCO. Here it is this model, trained on fact sentences about a scene ("red : r1c2 r3c1 = 2",
"r3c1 : green triangle"): the ITM head tells a true sentence from the same fact read off the scene with
one object added, removed, moved, recoloured or reshaped, and the ITC projections match each scene with
its sentence against the other scenes of the batch (AGLA keeps 1 - ITC/2 of the image). The text encoder
has 8 layers, so that AGLA's default GradCAM layer (6) exists. Scenes of the calib, dev and test splits
are never trained on. Seeded. Writes a `BlipForImageTextRetrieval` folder with its processor (a BERT
word-piece vocabulary of the shapes words) and `training_log.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers as tf

from functional_heads.evaluation import shapes
from functional_heads.wordlevel import bert_tokenizer
from train_shapes_clip import KEYS, perturbed, scene_stream


def statement(scene: shapes.Scene, rng: random.Random) -> tuple[str, str]:
    """A true fact about the scene and the same fact read off a perturbed scene (false)."""
    while True:
        key = rng.choice(KEYS)
        truth = scene.fact(key)
        for _ in range(20):
            wrong = perturbed(scene, rng).fact(key)
            if wrong != truth:
                return f"{key} : {truth}", f"{key} : {wrong}"


def processor(folder: Path) -> tf.BlipProcessor:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *shapes.vocabulary()]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = bert_tokenizer(folder / "vocab.txt")
    images = (getattr(tf, "BlipImageProcessorPil", None) or tf.BlipImageProcessor)(
        size={"height": shapes.SIZE, "width": shapes.SIZE})
    made = tf.BlipProcessor(image_processor=images, tokenizer=tokenizer)
    made.save_pretrained(folder)
    return made


def build(vocab_size: int, seed: int) -> tf.BlipForImageTextRetrieval:
    torch.manual_seed(seed)
    text = dict(vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=8,
                num_attention_heads=4, encoder_hidden_size=128, max_position_embeddings=64, pad_token_id=0,
                bos_token_id=2, sep_token_id=3)
    vision = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                  image_size=shapes.SIZE, patch_size=8)
    return tf.BlipForImageTextRetrieval(tf.BlipConfig(text_config=text, vision_config=vision,
                                                      image_text_hidden_size=64))


def step_loss(model, made, batch):
    images = [scene.render() for scene, _, _ in batch]
    true, false = [t for _, t, _ in batch], [f for _, _, f in batch]
    inputs = made(images=images + images, text=true + false, padding=True, return_tensors="pt")
    match = model(**inputs, use_itm_head=True).itm_score
    labels = torch.cat([torch.ones(len(batch)), torch.zeros(len(batch))]).long()
    half = {k: v[:len(batch)] for k, v in inputs.items()}
    similarity = model(**half, use_itm_head=False).itm_score  # [images, texts] cosine
    target = torch.arange(len(batch))
    itc = (F.cross_entropy(similarity / 0.07, target) + F.cross_entropy(similarity.T / 0.07, target)) / 2
    return F.cross_entropy(match, labels) + itc


@torch.no_grad()
def held_out_accuracy(model, made, held_out) -> float:
    """Share of held-out (true, false) pairs where the true sentence gets the higher match probability."""
    model.eval()
    images = [scene.render() for scene, _, _ in held_out]
    inputs = made(images=images + images, text=[t for _, t, _ in held_out] + [f for _, _, f in held_out],
                  padding=True, return_tensors="pt")
    match = model(**inputs, use_itm_head=True).itm_score.softmax(-1)[:, 1]
    model.train()
    return (match[:len(held_out)] > match[len(held_out):]).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=500)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    made = processor(args.out)
    model = build(len(made.tokenizer), args.seed).train()
    eval_scenes = {it.scene.cells for split in shapes.EVAL_SIZES for it in shapes.items(split)}
    rng = random.Random(f"itm-held-out/{args.seed}")
    held_out = [(it.scene, *statement(it.scene, rng)) for it in shapes.items("dev", n=400)]
    stream = scene_stream(args.seed, eval_scenes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine decay
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    log, start = open(args.out / "training_log.jsonl", "w"), time.time()
    for step in range(1, args.steps + 1):
        batch = []
        for _ in range(args.batch_size):
            scene, scene_rng = next(stream)
            batch.append((scene, *statement(scene, scene_rng)))
        loss = step_loss(model, made, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        record = {"step": step, "loss": round(loss.item(), 4), "seconds": round(time.time() - start, 1)}
        if step % args.eval_every == 0 or step == args.steps:
            record["held_out_pair_accuracy"] = held_out_accuracy(model, made, held_out)
            print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
    log.close()
    model.save_pretrained(args.out)
    (args.out / "training_args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))


if __name__ == "__main__":
    main()
