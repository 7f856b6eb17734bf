"""Train a tiny CLIP on shapes scenes: CGD's image-text scorer for the bundled model.

    python training/train_shapes_clip.py --out runs/aux/shapes-clip

CGD scores each sentence of a candidate answer by its CLIP similarity with the image; on real images
that is a SigLIP or CLIP model trained on the web. Here it is this model, trained contrastively on the
fact sentences the bundled model writes ("<think> red : r1c2 r3c1 = 2 .", "r3c1 : green triangle"),
each against the true sentences of the other scenes in the batch and against hard negatives: the same
fact read off the scene with one object added, removed, moved, recoloured or reshaped. Scenes of the
calib, dev and test splits are never trained on. Seeded. Writes a `CLIPModel` folder that
`--method-option clip=PATH` loads, with the bundled model's word-level tokenizer (ending every text
with <|im_end|>, where CLIP pools) and `training_log.jsonl` (loss, held-out ranking accuracy).
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
from tokenizers import Tokenizer, processors

from functional_heads.evaluation.benchmarks import shapes_generator as shapes
from functional_heads.models.compat import projected_features
from functional_heads.testbed.bundled import bundled_model_path

END = "<|im_end|>"


def perturbed(scene: shapes.Scene, rng: random.Random) -> shapes.Scene:
    """The scene with one object added, removed, moved, recoloured or reshaped."""
    cells = list(scene.cells)
    full = [i for i, c in enumerate(cells) if c]
    empty = [i for i, c in enumerate(cells) if not c]
    change = rng.choice(["add", "remove", "move", "colour", "shape"] if empty and len(full) > 1
                        else ["colour", "shape"] + (["add"] if empty else []))
    if change == "add":
        cells[rng.choice(empty)] = (rng.choice(list(shapes.COLOURS)), rng.choice(shapes.SHAPES))
    elif change in ("remove", "move"):
        index = rng.choice(full)
        if change == "move":
            cells[rng.choice(empty)] = cells[index]
        cells[index] = None
    else:
        index = rng.choice(full)
        colour, shape = cells[index]
        if change == "colour":
            colour = rng.choice([c for c in shapes.COLOURS if c != colour])
        else:
            shape = rng.choice([s for s in shapes.SHAPES if s != shape])
        cells[index] = (colour, shape)
    return shapes.Scene(tuple(cells))


KEYS = ([*shapes.COLOURS] * 3 + [*shapes.SHAPES] * 3 + [f"{c} {s}" for c in shapes.COLOURS for s in shapes.SHAPES]
        + [f"r{r}c{c}" for r in range(1, 4) for c in range(1, 4)])


def sentence(key: str, value: str, rng: random.Random) -> str:
    """A fact as a CGD sentence of the bundled model: maybe opening the chain, ending it or followed by '.'."""
    text = f"{key} : {value}"
    if rng.random() < 0.5:
        text = "<think> " + text
    tail = rng.random()
    if tail < 0.4:
        return text + " ."
    if tail < 0.7:
        answer = value.split(" = ")[-1] if " = " in value else value.split()[-1]
        return f"{text} </think> <answer> {answer} </answer>"
    return text


def example(scene: shapes.Scene, rng: random.Random, negatives: int) -> tuple[str, list[str]]:
    """A true fact sentence about the scene and `negatives` false ones (the same fact, perturbed scenes)."""
    while True:
        key = rng.choice(KEYS)
        truth = scene.fact(key)
        wrong = []
        for _ in range(20 * negatives):
            value = perturbed(scene, rng).fact(key)
            if value != truth and value not in wrong:
                wrong.append(value)
            if len(wrong) == negatives:
                break
        if len(wrong) == negatives:
            state = rng.random()
            texts = []
            for value in [truth, *wrong]:  # the same decoration for all: only the fact differs
                texts.append(sentence(key, value, random.Random(state)))
            return texts[0], texts[1:]


def scene_stream(seed: int, exclude: set):
    rng = random.Random(seed)
    while True:
        scene = shapes.draw_scene(rng)
        if scene.cells not in exclude:
            yield scene, rng


def tokenizer_with_end(folder: Path):
    """The bundled model's word-level tokenizer, ending each text with <|im_end|> (CLIP pools there)."""
    source = Tokenizer.from_file(str(bundled_model_path() / "tokenizer.json"))
    end = source.token_to_id(END)
    source.post_processor = processors.TemplateProcessing(single=f"$A {END}", special_tokens=[(END, end)])
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=source, pad_token="<pad>", eos_token=END,
                                           unk_token="<unk>", bos_token="<s>")
    tokenizer.save_pretrained(folder)
    return tokenizer


def build(tokenizer, seed: int) -> tf.CLIPModel:
    torch.manual_seed(seed)
    text = dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                num_attention_heads=4, max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                  image_size=shapes.SIZE, patch_size=8)
    return tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=64))


def step_loss(model, tokenizer, pixel_processor, batch, negatives):
    images = [scene.render() for scene, _, _ in batch]
    positives = [p for _, p, _ in batch]
    wrong = [n for _, _, ns in batch for n in ns]
    pixels = pixel_processor(images=images, return_tensors="pt")["pixel_values"]
    image = F.normalize(projected_features(model.get_image_features(pixel_values=pixels)), dim=-1)
    tokens = tokenizer(positives + wrong, padding=True, return_tensors="pt")
    text = F.normalize(projected_features(model.get_text_features(**tokens)), dim=-1)
    pos, neg = text[:len(batch)], text[len(batch):].view(len(batch), negatives, -1)
    scale = model.logit_scale.exp()
    # each image against every scene's true sentence and its own false ones; each sentence against the images
    to_text = torch.cat([image @ pos.T, torch.einsum("bd,bkd->bk", image, neg)], 1) * scale
    target = torch.arange(len(batch))
    return (F.cross_entropy(to_text, target) + F.cross_entropy(scale * pos @ image.T, target)) / 2


@torch.no_grad()
def ranking_accuracy(model, tokenizer, pixel_processor, held_out, negatives) -> float:
    """Share of held-out facts whose true sentence scores above all of its false ones."""
    model.eval()
    right = 0
    for scene, positive, wrong in held_out:
        pixels = pixel_processor(images=[scene.render()], return_tensors="pt")["pixel_values"]
        image = F.normalize(projected_features(model.get_image_features(pixel_values=pixels)), dim=-1)
        tokens = tokenizer([positive, *wrong], padding=True, return_tensors="pt")
        sims = (F.normalize(projected_features(model.get_text_features(**tokens)), dim=-1) @ image[0])
        right += int(sims[0] > sims[1:].max())
    model.train()
    return right / len(held_out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=250)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_with_end(args.out)
    pixel_processor = (getattr(tf, "CLIPImageProcessorPil", None) or tf.CLIPImageProcessor)(
        size={"shortest_edge": shapes.SIZE}, crop_size={"height": shapes.SIZE, "width": shapes.SIZE})
    pixel_processor.save_pretrained(args.out)
    model = build(tokenizer, args.seed).train()
    eval_scenes = {it.scene.cells for split in shapes.EVAL_SIZES for it in shapes.items(split)}
    rng = random.Random(f"clip-held-out/{args.seed}")
    held_out = [(it.scene, *example(it.scene, rng, args.negatives)) for it in shapes.items("dev", n=400)]
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
            batch.append((scene, *example(scene, scene_rng, args.negatives)))
        loss = step_loss(model, tokenizer, pixel_processor, batch, args.negatives)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        record = {"step": step, "loss": round(loss.item(), 4), "seconds": round(time.time() - start, 1)}
        if step % args.eval_every == 0 or step == args.steps:
            record["held_out_ranking_accuracy"] = ranking_accuracy(model, tokenizer, pixel_processor, held_out,
                                                                   args.negatives)
            print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
    log.close()
    model.save_pretrained(args.out)
    (args.out / "training_args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))


if __name__ == "__main__":
    main()
